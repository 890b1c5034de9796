"""Metrics against hand-computed cases and against independent implementations.

Independent references: SimpleITK's LabelOverlapMeasuresImageFilter (Dice) and
HausdorffDistanceImageFilter (its Hausdorff distance is our maximum surface distance,
its average Hausdorff distance is our ASSD when both are given the surfaces), and a
brute-force all-pairs distance (scipy cdist) over the surface voxels' physical
coordinates for HD95.
"""

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial.distance import cdist

from SynPoLib.metrics import assd, dice, hd95, overlap, pooled_dice, score, surface, surface_distances


def blob(shape, seed, threshold=0.5):
    field = ndimage.gaussian_filter(np.random.default_rng(seed).random(shape), 2.0)
    return field > np.quantile(field, threshold)


def image(mask, spacing):
    img = sitk.GetImageFromArray(np.asarray(mask, np.uint8))
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # array order (k, j, i) -> ITK (i, j, k)
    return img


# ----------------------------------------------------------------------------- hand-computed

def test_dice_by_hand():
    a = np.array([1, 1, 0, 0], bool)
    b = np.array([0, 1, 1, 0], bool)
    assert dice(a, b) == pytest.approx(0.5)
    assert overlap(a, b).tp == 1 and overlap(a, b).fp == 1 and overlap(a, b).fn == 1
    assert dice(a, a) == 1.0


def test_pooled_dice_sums_counts_before_dividing():
    # slice 1: tp 1, fp 1; slice 2: the reference's 2 pixels missed
    s1 = (np.array([1, 1, 0]), np.array([1, 0, 0]))
    s2 = (np.array([0, 0, 0]), np.array([0, 1, 1]))
    assert pooled_dice([s1, s2]) == pytest.approx(2 * 1 / (2 * 1 + 1 + 2))  # 0.4
    mean_of_slices = (dice(*s1) + dice(*s2)) / 2
    assert mean_of_slices == pytest.approx(1 / 3)  # pooling is not averaging


def test_empty_mask_conventions():
    empty = np.zeros((3, 4, 5), bool)
    one = empty.copy()
    one[1, 2, 3] = True
    assert dice(empty, empty) == 1.0
    assert hd95(empty, empty) == 0.0 and assd(empty, empty) == 0.0
    assert dice(one, empty) == 0.0 and dice(empty, one) == 0.0
    assert hd95(one, empty) == float("inf") and hd95(empty, one) == float("inf")
    assert assd(empty, one) == float("inf")
    s = score(empty, one, (1, 1, 1))
    assert s.dice == 0.0 and s.hd95 == float("inf") and s.pred_voxels == 0 and s.ref_voxels == 1
    with pytest.raises(ValueError, match="non-empty"):
        surface_distances(one, empty)


def test_distances_use_anisotropic_spacing():
    pred = np.zeros((4, 3, 3), bool)
    ref = np.zeros((4, 3, 3), bool)
    pred[0, 1, 1] = True
    ref[2, 1, 1] = True  # 2 voxels apart along axis 0
    assert hd95(pred, ref, (3.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert assd(pred, ref, (3.0, 1.0, 1.0)) == pytest.approx(6.0)
    assert hd95(pred, ref, (0.5, 9.0, 9.0)) == pytest.approx(1.0)
    assert hd95(pred, ref) == pytest.approx(2.0)  # default: 1 mm voxels


def test_hd95_and_assd_by_hand():
    # 1-pixel-thick lines are all surface; column spacing 2 mm.
    pred = np.zeros((3, 6), bool)
    ref = np.zeros((3, 6), bool)
    pred[1, 0:2] = True
    ref[1, 0:4] = True
    # pred -> ref: [0, 0]; ref -> pred: [0, 0, 2, 4]
    # HD95 of [0, 0, 0, 0, 2, 4] (linear): position 0.95 * 5 = 4.75 -> 2 + 0.75 * 2 = 3.5
    assert hd95(pred, ref, (1.0, 2.0)) == pytest.approx(3.5)
    assert assd(pred, ref, (1.0, 2.0)) == pytest.approx((0.0 + 1.5) / 2)


def test_surface_is_mask_minus_face_erosion():
    cube = np.zeros((5, 5, 5), bool)
    cube[1:4, 1:4, 1:4] = True
    shell = surface(cube)
    assert shell.sum() == 27 - 1 and not shell[2, 2, 2]


def test_bad_input_is_refused():
    with pytest.raises(ValueError, match="differ in shape"):
        dice(np.zeros((2, 2)), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="positive"):
        hd95(np.ones((2, 2)), np.ones((2, 2)), (1.0, 0.0))
    with pytest.raises(ValueError, match="2 values"):
        hd95(np.ones((2, 2, 2)), np.ones((2, 2, 2)), (1.0, 1.0))


# ----------------------------------------------------------------------------- independent

@pytest.mark.parametrize("seed,spacing", [(1, (3.0, 0.7, 1.2)), (2, (1.0, 1.0, 1.0)), (3, (7.7, 1.25, 1.25))])
def test_against_simpleitk_and_brute_force(seed, spacing):
    shape = (10, 18, 22)
    pred, ref = blob(shape, seed), blob(shape, seed + 100, 0.55)
    # one mask touches the array's border: the cropped computation must not care
    assert pred[0].any() or pred[-1].any() or pred[:, 0].any()

    overlap_filter = sitk.LabelOverlapMeasuresImageFilter()
    overlap_filter.Execute(image(pred, spacing), image(ref, spacing))
    assert dice(pred, ref) == pytest.approx(overlap_filter.GetDiceCoefficient(), abs=1e-12)

    hausdorff = sitk.HausdorffDistanceImageFilter()
    hausdorff.Execute(image(surface(pred), spacing), image(surface(ref), spacing))
    to_ref, to_pred = surface_distances(pred, ref, spacing)
    assert max(to_ref.max(), to_pred.max()) == pytest.approx(hausdorff.GetHausdorffDistance(), rel=1e-9)
    assert assd(pred, ref, spacing) == pytest.approx(hausdorff.GetAverageHausdorffDistance(), rel=1e-9)

    a = np.argwhere(surface(pred)) * np.array(spacing)
    b = np.argwhere(surface(ref)) * np.array(spacing)
    pairwise = cdist(a, b)
    brute = np.concatenate([pairwise.min(axis=1), pairwise.min(axis=0)])
    assert hd95(pred, ref, spacing) == pytest.approx(np.percentile(brute, 95), rel=1e-9)
    assert hd95(pred, ref, spacing) == pytest.approx(hd95(ref, pred, spacing))  # symmetric

    full = score(pred, ref, spacing)
    assert (full.dice, full.hd95, full.assd) == pytest.approx(
        (dice(pred, ref), hd95(pred, ref, spacing), assd(pred, ref, spacing)))


def test_two_dimensional_slices_against_brute_force():
    pred, ref = blob((40, 36), 7), blob((40, 36), 8)
    spacing = (0.8, 1.6)
    a = np.argwhere(surface(pred)) * np.array(spacing)
    b = np.argwhere(surface(ref)) * np.array(spacing)
    pairwise = cdist(a, b)
    assert hd95(pred, ref, spacing) == pytest.approx(
        np.percentile(np.concatenate([pairwise.min(1), pairwise.min(0)]), 95))
    assert assd(pred, ref, spacing) == pytest.approx((pairwise.min(1).mean() + pairwise.min(0).mean()) / 2)
