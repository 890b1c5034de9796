"""Noise-aware Refine (array steps) and the box prompts."""

import numpy as np
import pytest

from SynPoLib.config import PromptConfig, PromptStrategy, RefineConfig
from SynPoLib.method.points import PointPrompts
from SynPoLib.method.prompts import build_prompt, confident_region, derive_box, grow_box, mask_box
from SynPoLib.method.refine import best_component, component_scores, label_components, open_mask, restrict_logits


def test_opening_removes_speckle_and_keeps_the_body():
    mask = np.zeros((40, 40), bool)
    mask[10:25, 10:25] = True
    mask[2, 35] = mask[30, 3] = True  # speckle
    opened = open_mask(mask, 5)
    assert not opened[2, 35] and not opened[30, 3]
    assert opened[10:25, 10:25].all()


def test_components_eight_connectivity():
    mask = np.zeros((5, 5), bool)
    mask[1, 1] = mask[2, 2] = True  # diagonal neighbours
    assert label_components(mask, 8)[1] == 1
    assert label_components(mask, 4)[1] == 2


def test_best_component_is_the_most_similar_not_the_largest():
    mask = np.zeros((60, 60), bool)
    mask[5:35, 5:35] = True  # large, dissimilar
    mask[40:52, 40:52] = True  # small, similar
    score = np.full((60, 60), 0.1, np.float32)
    score[40:52, 40:52] = 0.9
    comp, s = best_component(mask, score, RefineConfig())
    assert s == pytest.approx(0.9)
    assert comp[45, 45] and not comp[20, 20]
    labels, n = label_components(mask)
    np.testing.assert_allclose(sorted(component_scores(labels, n, score)), [0.1, 0.9], atol=1e-6)


def test_thin_structure_survives_refine():
    mask = np.zeros((30, 30), bool)
    mask[5:25, 14:16] = True  # two pixels wide: a 5x5 opening would erase it
    comp, s = best_component(mask, np.ones((30, 30)), RefineConfig(opening_size=5))
    assert comp.sum() == mask.sum()


def test_empty_mask_stays_empty():
    comp, s = best_component(np.zeros((10, 10), bool), np.ones((10, 10)), RefineConfig())
    assert not comp.any() and s is None


def test_restrict_logits_keeps_component_only():
    logits = np.linspace(-5, 5, 256 * 256, dtype=np.float32).reshape(256, 256)
    comp = np.zeros((512, 512), bool)  # an R = 512 ROI, brought to the 256 grid
    comp[100:200, 300:400] = True
    out = restrict_logits(logits, comp, outside_logit=-20.0)
    assert out.shape == (256, 256)
    np.testing.assert_array_equal(out[50:100, 150:200], logits[50:100, 150:200])
    assert np.all(out[:40] == -20.0)


def test_mask_box_and_grow():
    mask = np.zeros((50, 50), bool)
    mask[10:20, 30:40] = True
    box = mask_box(mask)
    np.testing.assert_array_equal(box, [30, 10, 39, 19])
    grown = grow_box(box, 0.5, np.ones((50, 50), bool))
    np.testing.assert_allclose(grown, [25, 5, 44, 24])
    assert mask_box(np.zeros((4, 4), bool)) is None


def _points(pos, neg=()):
    coords = np.array(list(pos) + list(neg), np.float32).reshape(-1, 2)
    labels = np.array([1] * len(pos) + [0] * len(neg), np.int32)
    return PointPrompts(coords=coords, labels=labels)


def test_confident_region_picks_the_more_confident_of_two_lookalikes():
    syn = np.zeros((64, 64), np.float32)
    syn[10:20, 10:20] = 0.8  # left structure
    syn[10:20, 40:50] = 0.9  # right structure: more confident mass
    pts = _points([(15, 15), (45, 15)])
    # 3896 zeros, then 100 x 0.8 and 100 x 0.9: the 0.96 quantile is 0.8
    region = confident_region(syn, pts.positives, 0.96, np.ones_like(syn, bool), single=True)
    assert region[15, 45] and not region[15, 15]
    both = confident_region(syn, pts.positives, 0.96, np.ones_like(syn, bool), single=False)
    assert both[15, 45] and both[15, 15]


def test_support_box_is_centred_on_positives_with_support_size():
    syn = np.zeros((64, 64), np.float32)
    pts = _points([(30, 20), (34, 24)])
    box = derive_box(syn, pts, np.array([10.0, 6.0]), PromptConfig(), np.ones((64, 64), bool),
                     PromptStrategy.SUPPORT_BOX)
    np.testing.assert_allclose(box, [27.5, 19.5, 36.5, 24.5])


def test_prompt_strategies_pass_the_right_parts():
    yy, xx = np.mgrid[0:64, 0:64]
    syn = (1.0 - np.hypot(xx - 25, yy - 25) / 64).astype(np.float32)  # a cone at (25, 25)
    pts = _points([(25, 25)], [(5, 5)])
    valid = np.ones((64, 64), bool)
    wh = np.array([10.0, 10.0])
    cfg = PromptConfig(box_quantile=0.97, box_margin=0.1)
    p = build_prompt(PromptStrategy.POINTS, syn, pts, wh, cfg, valid)
    assert p.box is None and len(p.points) == 2
    p = build_prompt(PromptStrategy.BOX, syn, pts, wh, cfg, valid)
    assert p.points is None and p.box is not None
    # the top 3 % of a cone is a disc of ~123 px (radius ~6.3) around its apex
    assert p.box[0] == pytest.approx(25 - 6.6, abs=1.0) and p.box[2] == pytest.approx(25 + 6.6, abs=1.0)
    p = build_prompt(PromptStrategy.BOX_POINTS, syn, pts, wh, cfg, valid)
    assert p.box is not None and len(p.points) == 2
    p = build_prompt(PromptStrategy.BOX_NEGATIVES, syn, pts, wh, cfg, valid)
    assert p.box is not None and list(p.labels) == [0]


def test_derived_box_stays_in_the_valid_region():
    syn = np.zeros((64, 64), np.float32)
    syn[0:20, 0:20] = 1.0
    valid = np.zeros((64, 64), bool)
    valid[:48, :40] = True
    box = derive_box(syn, _points([(2, 2)]), np.array([60.0, 60.0]), PromptConfig(box_margin=1.0), valid,
                     PromptStrategy.BOX)
    assert box[0] >= 0 and box[1] >= 0 and box[2] <= 39 and box[3] <= 47
