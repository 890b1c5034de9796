"""Point Selection Module: constructed cases and property tests (hypothesis)."""

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from SynPoLib.config import PointConfig
from SynPoLib.method.points import (extreme_points, select_negative_points, select_points,
                             select_positive_points)


def blob_map(size=64, centre=(40, 20), radius=6):
    """A map that is 1 inside a disc (x, y centre) and falls off outside."""
    yy, xx = np.mgrid[0:size, 0:size]
    d = np.hypot(xx - centre[0], yy - centre[1])
    return np.clip(1.0 - d / (2 * radius), 0, 1).astype(np.float32)


def test_positives_sit_on_the_blob():
    syn = blob_map()
    pts = select_positive_points(syn, PointConfig(n_positive=3, gamma1=20))
    assert pts.shape == (3, 2)
    # top 60 pixels of a cone are within ~4.4 px of its apex (pi r^2 = 60)
    d = np.hypot(pts[:, 0] - 40, pts[:, 1] - 20)
    assert np.all(d <= 5)


def test_negatives_come_from_the_gaussian_interval():
    syn = blob_map()
    mu, sigma = 0.3, 0.1
    cfg = PointConfig(n_negative=4, alpha=1.0, beta=-0.5)
    neg, (lo, hi), steps = select_negative_points(syn, mu, sigma, cfg)
    assert steps == 0
    assert (lo, hi) == pytest.approx((0.2, 0.35))
    assert neg.shape == (4, 2)
    values = syn[neg[:, 1].astype(int), neg[:, 0].astype(int)]
    assert np.all((values >= lo) & (values <= hi))


def test_empty_interval_widens_then_gives_positives_only():
    syn = np.zeros((32, 32), np.float32)
    syn[10:14, 10:14] = 1.0
    # interval around 0.5 +- small: no pixel there, even after widening 8 x 0.25 sigma
    cfg = PointConfig(n_negative=4, widen_step=0.25, widen_max_steps=2)
    pts = select_points(syn, mu=0.5, sigma=0.01, cfg=cfg)
    assert (pts.labels == 0).sum() == 0
    assert (pts.labels == 1).sum() == 3
    assert any("positives only" in n for n in pts.notes)


def test_widening_finds_candidates_and_reports_it():
    syn = np.zeros((32, 32), np.float32)
    syn[:, :16] = 0.40  # below the interval [0.45, 0.525]
    syn[10:14, 20:24] = 1.0
    cfg = PointConfig(n_negative=2, alpha=1.0, beta=-0.5, widen_step=0.25, widen_max_steps=8)
    pts = select_points(syn, mu=0.5, sigma=0.05, cfg=cfg)
    # 0.40 enters when 0.5 - (1 + 0.25 k) * 0.05 <= 0.40, i.e. k = 4
    assert pts.widen_steps == 4
    assert len(pts.negatives) == 2
    assert np.all(pts.negatives[:, 0] < 16)
    assert any("widened by 1 sigma" in n for n in pts.notes)


def test_exclude_near_positives_drops_close_candidates():
    syn = blob_map(centre=(32, 32), radius=10)
    base = PointConfig(n_positive=3, n_negative=4, alpha=3.0, beta=-3.0)
    far = PointConfig(n_positive=3, n_negative=4, alpha=3.0, beta=-3.0, exclude_near_positives=True)
    pos = select_positive_points(syn, base)
    radius = max(np.hypot(*(a - b)) for a in pos for b in pos)
    neg, _, _ = select_negative_points(syn, 0.5, 0.2, far, positives=pos)
    d = np.min(np.hypot(neg[:, None, 0] - pos[None, :, 0], neg[:, None, 1] - pos[None, :, 1]), axis=1)
    assert np.all(d >= radius)
    neg_all, _, _ = select_negative_points(syn, 0.5, 0.2, base, positives=pos)
    assert not np.array_equal(neg, neg_all)


def test_valid_region_confines_every_point():
    syn = blob_map(centre=(50, 50))
    valid = np.zeros_like(syn, bool)
    valid[:, :40] = True  # the blob's apex is outside
    pts = select_points(syn, 0.2, 0.1, PointConfig(), valid=valid)
    assert np.all(pts.coords[:, 0] < 40)


def test_extreme_points_are_argmax_and_argmin():
    syn = blob_map(centre=(12, 7))
    syn[30, 50] = -1.0
    pts = extreme_points(syn)
    np.testing.assert_array_equal(pts.positives[0], [12, 7])
    np.testing.assert_array_equal(pts.negatives[0], [50, 30])


def test_interval_config_is_validated():
    with pytest.raises(ValueError, match="empty by construction"):
        PointConfig(alpha=0.0, beta=1.0)


# ---------------------------------------------------------------- property tests

maps = arrays(np.float32, st.tuples(st.integers(8, 40), st.integers(8, 40)),
              elements=st.floats(-1, 1, width=32, allow_nan=False))
configs = st.builds(PointConfig, n_positive=st.integers(1, 5), gamma1=st.integers(1, 30),
                    n_negative=st.integers(0, 6), gamma2=st.integers(1, 30),
                    alpha=st.floats(0.0, 2.0), beta=st.floats(-2.0, 0.0), seed=st.integers(0, 5))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(syn=maps, cfg=configs, mu=st.floats(-0.5, 0.5), sigma=st.floats(0.01, 0.5))
def test_point_selection_invariants(syn, cfg, mu, sigma):
    pts = select_points(syn, mu, sigma, cfg)
    h, w = syn.shape
    pos, neg = pts.positives, pts.negatives
    # counts
    n_top = min(cfg.gamma1 * cfg.n_positive, h * w)
    assert 1 <= len(pos) <= cfg.n_positive
    assert len(neg) <= cfg.n_negative
    # in bounds and on the pixel grid (centres are snapped to candidates)
    assert np.all((pts.coords[:, 0] >= 0) & (pts.coords[:, 0] <= w - 1))
    assert np.all((pts.coords[:, 1] >= 0) & (pts.coords[:, 1] <= h - 1))
    assert np.array_equal(pts.coords, np.round(pts.coords))
    # positives inside the top region: their score is at least the n_top-th best score
    kth = np.sort(syn.ravel())[::-1][n_top - 1]
    assert np.all(syn[pos[:, 1].astype(int), pos[:, 0].astype(int)] >= kth)
    # negatives inside the (possibly widened) sigma interval it reports
    lo, hi = pts.negative_interval
    if len(neg):
        values = syn[neg[:, 1].astype(int), neg[:, 0].astype(int)]
        assert np.all((values >= lo - 1e-6) & (values <= hi + 1e-6))
        assert lo <= mu - cfg.alpha * sigma + 1e-9 and hi >= mu - cfg.beta * sigma - 1e-9
    # determinism under a seed
    again = select_points(syn, mu, sigma, cfg)
    np.testing.assert_array_equal(pts.coords, again.coords)
    np.testing.assert_array_equal(pts.labels, again.labels)
