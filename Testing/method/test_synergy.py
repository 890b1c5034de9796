"""Confidence Map Synergy Module: answers known by construction."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from SynPoLib.config import PrototypeForm, SynergyConfig
from SynPoLib.method.synergy import (DINO, SAM, build_prototype, fit_gaussian, fuse, mask_to_grid, prepare_support,
                              query_synergy, similarity_map, unit_rows)


def one_hot_position_features(h=8, w=8):
    """Each cell's feature is the one-hot of its own index: cos = 1 only with itself."""
    return np.eye(h * w, dtype=np.float32).T.reshape(h * w, h, w)


def test_position_features_give_exact_map():
    feats = one_hot_position_features()
    grid = np.zeros((8, 8), bool)
    grid[2:4, 5:7] = True  # 4 foreground cells
    proto = build_prototype(feats, grid, PrototypeForm.PAPER)
    s = similarity_map(feats, proto)
    # mean_i cos(F(x), T_i) = 1/4 on each foreground cell, 0 elsewhere
    np.testing.assert_allclose(s[grid], 0.25, atol=1e-6)
    np.testing.assert_allclose(s[~grid], 0.0, atol=1e-6)
    assert proto.n_foreground == 4
    assert proto.background_scores.shape == (64 - 4,)
    np.testing.assert_allclose(proto.background_scores, 0.0, atol=1e-6)


def test_paper_form_equals_average_of_per_token_maps():
    rng = np.random.default_rng(1)
    sup = rng.normal(size=(32, 6, 6)).astype(np.float32)
    qry = rng.normal(size=(32, 6, 6)).astype(np.float32)
    grid = rng.random((6, 6)) > 0.6
    proto = build_prototype(sup, grid, PrototypeForm.PAPER)
    fast = similarity_map(qry, proto)
    tokens = sup.reshape(32, -1).T[grid.ravel()]
    q = qry.reshape(32, -1).T
    maps = [(q @ t) / (np.linalg.norm(q, axis=1) * np.linalg.norm(t)) for t in tokens]
    np.testing.assert_allclose(fast.ravel(), np.mean(maps, axis=0), atol=1e-5)


def test_author_form_is_cosine_to_normalised_mean():
    rng = np.random.default_rng(2)
    sup = rng.normal(size=(16, 5, 5)).astype(np.float32)
    grid = np.zeros((5, 5), bool)
    grid[1:3, 1:4] = True
    proto = build_prototype(sup, grid, PrototypeForm.AUTHOR)
    mean = sup.reshape(16, -1).T[grid.ravel()].mean(0)
    q = sup.reshape(16, -1).T
    expected = q @ mean / (np.linalg.norm(q, axis=1) * np.linalg.norm(mean))
    np.testing.assert_allclose(similarity_map(sup, proto).ravel(), expected, atol=1e-5)


def test_unit_rows_keeps_zero_features_finite():
    feats = np.zeros((4, 2, 2), np.float32)
    assert np.all(np.isfinite(unit_rows(feats)))


def test_mask_to_grid_bilinear_threshold():
    mask = np.zeros((64, 64), bool)
    mask[:32, :32] = True
    grid = mask_to_grid(mask, (4, 4))
    expected = np.zeros((4, 4), bool)
    expected[:2, :2] = True
    np.testing.assert_array_equal(grid, expected)


def test_mask_to_grid_keeps_a_structure_smaller_than_a_cell():
    mask = np.zeros((64, 64), bool)
    mask[20, 41] = True  # one pixel of a 16x16 cell: vanishes at the 0.5 threshold
    grid = mask_to_grid(mask, (4, 4))
    assert grid.sum() == 1 and grid[1, 2]


def test_empty_support_mask_is_refused():
    with pytest.raises(ValueError, match="empty"):
        mask_to_grid(np.zeros((8, 8), bool), (4, 4))


def test_fuse_formula_and_single_backbone():
    cfg = SynergyConfig()
    s = np.array([0.5, 1.0])
    d = np.array([0.2, 0.4])
    np.testing.assert_allclose(fuse({SAM: s, DINO: d}, cfg), 0.8 * s * d + 0.1 * s + 0.1 * d)
    np.testing.assert_array_equal(fuse({SAM: s}, cfg), s)
    np.testing.assert_array_equal(fuse({DINO: d}, cfg), d)
    with pytest.raises(ValueError):
        fuse({SAM: s, "other": d}, cfg)


def test_deltas_must_sum_to_one():
    with pytest.raises(ValueError, match="sum to 1"):
        SynergyConfig(delta_sd=0.5, delta_s=0.1, delta_d=0.1)


def test_gaussian_is_maximum_likelihood():
    values = np.array([1.0, 2.0, 3.0, 4.0])
    mu, sigma = fit_gaussian(values)
    assert mu == pytest.approx(2.5)
    assert sigma == pytest.approx(np.std(values, ddof=0))
    assert sigma != pytest.approx(np.std(values, ddof=1))


def test_support_without_background_is_refused():
    feats = np.ones((3, 4, 4), np.float32)
    with pytest.raises(ValueError, match="background"):
        prepare_support({SAM: feats}, np.ones((16, 16), bool), SynergyConfig())


def test_query_maps_upsample_each_backbone_then_fuse():
    rng = np.random.default_rng(3)
    sam = rng.normal(size=(8, 4, 4)).astype(np.float32)
    dino = rng.normal(size=(6, 4, 4)).astype(np.float32)
    mask = np.zeros((16, 16), bool)
    mask[4:10, 4:10] = True
    cfg = SynergyConfig()
    sup = prepare_support({SAM: sam, DINO: dino}, mask, cfg)
    q = query_synergy({SAM: sam, DINO: dino}, sup, cfg, roi_size=16)

    def up(m):
        return F.interpolate(torch.from_numpy(m)[None, None], size=(16, 16), mode="bilinear",
                             align_corners=False)[0, 0].numpy()

    s_up, d_up = up(q.maps[SAM]), up(q.maps[DINO])
    np.testing.assert_allclose(q.syn, 0.8 * s_up * d_up + 0.1 * s_up + 0.1 * d_up, atol=1e-6)
    np.testing.assert_allclose(q.sam, s_up, atol=1e-6)
    # The negative vector is the same fusion on the support background cells.
    fg = mask_to_grid(mask, (4, 4)).ravel()
    s_bg = sup.prototypes[SAM].background_scores
    d_bg = sup.prototypes[DINO].background_scores
    assert s_bg.shape == ((~fg).sum(),)
    np.testing.assert_allclose(sup.background, 0.8 * s_bg * d_bg + 0.1 * s_bg + 0.1 * d_bg, atol=1e-6)
    assert sup.mu == pytest.approx(sup.background.mean())


def test_backbones_on_different_grids_are_refused():
    mask = np.zeros((16, 16), bool)
    mask[4:10, 4:10] = True
    with pytest.raises(ValueError, match="grid"):
        prepare_support({SAM: np.ones((4, 4, 4), np.float32), DINO: np.ones((4, 8, 8), np.float32)},
                        mask, SynergyConfig())
