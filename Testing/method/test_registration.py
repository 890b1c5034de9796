"""SynPoLib.registration: the Demons chain, the random walker, k-shot legs, the stop signal.

Synthetic phantoms for the mechanics, one real Colin27 structure for the floor. Each
test runs in a few seconds on one CPU thread.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from scipy import ndimage

from SynPoLib import registration as R
from SynPoLib.metrics import dice

CFG = R.RegistrationConfig()


pytestmark = pytest.mark.usefixtures("sitk_one_thread")


def phantom(shape=(96, 96), centre=(48.0, 48.0), radii=(14.0, 9.0), angle_deg=0.0, seed=0):
    """A smooth textured slice with one bright ellipse: (image in [0, 1], mask).

    The background texture is smooth (low-pass noise), so Demons has gradients to
    follow everywhere, and the same seed gives the same texture."""
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.standard_normal((shape[0] * 2, shape[1] * 2)), 3.0)
    texture = texture[: shape[0], : shape[1]]
    texture = 0.25 + 0.1 * texture / np.abs(texture).max()
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]].astype(float)
    a = np.deg2rad(angle_deg)
    dy, dx = yy - centre[0], xx - centre[1]
    u, v = dx * np.cos(a) + dy * np.sin(a), -dx * np.sin(a) + dy * np.cos(a)
    mask = (u / radii[0]) ** 2 + (v / radii[1]) ** 2 <= 1.0
    image = np.where(mask, 0.8, texture)
    return ndimage.gaussian_filter(image, 1.0).astype(np.float32), mask


def moved(image, mask, shift=(0.0, 0.0), angle_deg=0.0):
    """The same slice moved: rotation about the centre, then a shift (rows, cols) in pixels."""
    img = ndimage.rotate(image, angle_deg, reshape=False, order=1, mode="nearest")
    msk = ndimage.rotate(mask.astype(float), angle_deg, reshape=False, order=1) > 0.5
    img = ndimage.shift(img, shift, order=1, mode="nearest")
    msk = ndimage.shift(msk.astype(float), shift, order=1) > 0.5
    return img.astype(np.float32), msk


# ------------------------------------------------------------------ the warp


@pytest.mark.parametrize("shift, angle", [((3.0, -2.0), 0.0), ((0.0, 0.0), 15.0)])
def test_warp_moves_the_mask_where_the_image_moved(shift, angle):
    image, mask = phantom(radii=(18.0, 6.0))
    fixed, truth = moved(image, mask, shift, angle)
    soft = R.register_and_warp(fixed, image, mask.astype(np.float32), (1.0, 1.0), CFG)
    got = soft > 0.5
    # copying the mask is clearly worse than the warp, which recovers the motion
    assert dice(mask, truth) < 0.85  # copying: measured 0.669 (shift), 0.779 (rotation)
    assert dice(got, truth) > 0.98  # the warp: measured 1.000 (shift), 0.995 (rotation)
    if angle == 0:
        shift_found = np.array(ndimage.center_of_mass(got)) - np.array(ndimage.center_of_mass(mask))
        np.testing.assert_allclose(shift_found, shift, atol=0.5)


def test_warp_of_an_empty_mask_is_empty_and_shapes_are_checked():
    image, _ = phantom()
    empty = np.zeros(image.shape, np.float32)
    assert not R.register_and_warp(image, image, empty, (1.0, 1.0), CFG).any()
    with pytest.raises(ValueError, match="shapes differ"):
        R.register_and_warp(image, image[:-1], empty, (1.0, 1.0), CFG)


def test_soft_mask_stays_soft_inside_the_chain():
    """The chain carries the interpolated soft mask, not a thresholded one."""
    image, mask = phantom()
    fixed, _ = moved(image, mask, (0.5, 0.5))
    soft = R.register_and_warp(fixed, image, mask.astype(np.float32), (1.0, 1.0), CFG)
    partial = (soft > 0.05) & (soft < 0.95)
    assert partial.sum() > 20
    assert soft.dtype == np.float32 and soft.min() >= 0.0 and soft.max() <= 1.0


# ---------------------------------------------------------- millimetres


def _halve(array, binary=False):
    """A 1 mm slice resampled to 2 mm pixels (2 x 2 block mean)."""
    a = np.asarray(array, np.float32)
    out = a.reshape(a.shape[0] // 2, 2, a.shape[1] // 2, 2).mean(axis=(1, 3))
    return out > 0.5 if binary else out


def test_lengths_are_millimetres_at_1_and_2_mm():
    _, mask = phantom()
    half = _halve(mask, binary=True)
    for spacing, m in (((1.0, 1.0), mask), ((2.0, 2.0), half)):
        box = R.crop_box(m, 20.0, spacing)
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        # the margin is 20 mm above the box whatever the pixel size (clipped at the edge)
        assert (rows[0] - box[0].start) * spacing[0] == pytest.approx(min(20.0, rows[0] * spacing[0]), abs=spacing[0])
        fg, bg = R.walker_seeds(m.astype(np.float32), spacing, replace(CFG, erosion_mm=2.0))
        band_mm2 = ((~bg) & ~m).sum() * spacing[0] * spacing[1]
        eroded_mm2 = (m & ~fg).sum() * spacing[0] * spacing[1]
        if spacing == (1.0, 1.0):
            band_1mm, eroded_1mm = band_mm2, eroded_mm2
    # the dilation ring (2 mm) and the erosion ring (2 mm) cover the same area in mm^2
    assert band_mm2 == pytest.approx(band_1mm, rel=0.25)
    assert eroded_mm2 == pytest.approx(eroded_1mm, rel=0.25)
    # anisotropic pixels: the element is an ellipse in pixels, a disc in mm
    assert R.ellipse(2.0, (1.0, 0.5)).shape == (5, 9)


def test_local_motion_recovered_alike_at_1_and_2_mm():
    """A blob moves 4 mm over a still background: the field smoothing (2 mm) is in mm,
    so the recovered motion in mm does not depend on the pixel size (measured: 3.64 mm
    at 1 mm pixels, 3.56 mm at 2 mm; smoothing 2 pixels at 2 mm would give 2.52 mm)."""
    image, mask = phantom(shape=(128, 128), centre=(64.0, 64.0), radii=(8.0, 8.0), seed=3)
    fixed, truth = moved(image, mask, (0.0, 4.0))
    # only the blob moves: the background of the fixed slice is the moving one's
    fixed = np.where(ndimage.binary_dilation(mask | truth, iterations=3), fixed, image).astype(np.float32)
    shifts = {}
    for spacing in (1.0, 2.0):
        f, m, s = (fixed, image, mask.astype(np.float32)) if spacing == 1.0 else (
            _halve(fixed), _halve(image), _halve(mask))
        soft = R.register_and_warp(f, m, s, (spacing, spacing), CFG)
        shifts[spacing] = (ndimage.center_of_mass(soft)[1] - ndimage.center_of_mass(s)[1]) * spacing
    assert shifts[1.0] > 3.2
    assert shifts[2.0] == pytest.approx(shifts[1.0], abs=0.4)


def test_chain_alike_at_1_and_2_mm_on_colin(colin):
    """Thalamus L over 6 slices of Colin27 at 1 mm and resampled to 2 mm pixels."""
    from SynPoLib.preprocess import window_bounds

    vol, lab = colin
    ref = lab == 77
    bounds = window_bounds(vol)
    sup = 81
    results = {}
    for spacing in (1.0, 2.0):
        def get(i, spacing=spacing):
            img = R.normalise_slice(vol[i, :216, :180], bounds)
            return img if spacing == 1.0 else _halve(img)

        start = ref[sup, :216, :180] if spacing == 1.0 else _halve(ref[sup, :216, :180], binary=True)
        steps = list(R.propagate_chain(((q, get(q)) for q in range(sup + 1, sup + 7)), get(sup),
                                       start.astype(np.float32), (spacing, spacing), CFG))
        results[spacing] = steps
    for a, b in zip(results[1.0], results[2.0]):
        assert dice(_halve(a.mask, binary=True), b.mask) > 0.87  # measured 0.896-0.933 over the 6 slices
        assert dice(a.mask, ref[a.index, :216, :180]) > 0.83  # measured 0.860-0.958


# ------------------------------------------------------------- random walker


def test_random_walker_stays_within_its_seeds():
    image, mask = phantom(seed=5)
    rng = np.random.default_rng(1)
    noisy = (image + 0.05 * rng.standard_normal(image.shape)).astype(np.float32)
    soft = ndimage.gaussian_filter(ndimage.shift(mask.astype(np.float32), (2, 1), order=1), 1.5)
    fg, bg = R.walker_seeds(soft, (1.0, 1.0), CFG)
    out = R.refine_mask(noisy, soft, (1.0, 1.0), CFG)
    assert fg.any() and out.any()
    assert not (fg & ~out).any(), "a foreground seed was lost"
    assert not (out & bg).any(), "the output reached a background seed"
    # and it actually moves the boundary toward the bright ellipse
    assert dice(out, mask) > dice(soft > 0.5, mask)


def test_random_walker_falls_back_when_erosion_empties_the_mask():
    image, _ = phantom()
    soft = np.zeros(image.shape, np.float32)
    soft[40, 40:43] = 1.0  # thinner than the erosion element
    out = R.refine_mask(image, soft, (1.0, 1.0), CFG)
    np.testing.assert_array_equal(out, soft > 0.5)
    np.testing.assert_array_equal(R.refine_mask(image, soft, (1.0, 1.0), replace(CFG, refine=False)), soft > 0.5)


# ----------------------------------------------------------------- chains, k-shot


def test_chain_pulls_slices_lazily_and_times_each_step():
    image, mask = phantom()
    pulled = []

    def stream():
        for q in range(5):
            pulled.append(q)
            yield q, image

    chain = R.propagate_chain(stream(), image, mask.astype(np.float32), (1.0, 1.0), CFG, support=7)
    step = next(chain)
    assert pulled == [0], "the chain must not read ahead (memory flat in slice count)"
    assert step.support == 7 and set(step.seconds) == {R.REGISTRATION, R.REFINEMENT}
    assert dice(step.mask, mask) > 0.98  # measured 0.995


def test_meeting_rules_cover_every_slice():
    legs = R.plan_legs([20, 10], 5, 25, R.MeetingRule.NEAREST)
    covered = [q for leg in legs for q in leg.slices]
    assert sorted(covered) == [q for q in range(5, 26) if q not in (10, 20)]
    by = {(leg.support, leg.slices[0]): leg for leg in legs}
    assert by[(10, 9)].outward and by[(20, 21)].outward
    assert by[(10, 11)].slices == (11, 12, 13, 14, 15) and not by[(10, 11)].outward
    assert by[(20, 19)].slices == (19, 18, 17, 16)
    for supports in ([10, 21], [3, 4, 9, 30]):
        for leg in R.plan_legs(supports, 0, 35, R.MeetingRule.NEAREST):
            for q in leg.slices:  # every slice goes to a nearest support
                assert abs(q - leg.support) == min(abs(q - s) for s in supports)
    blend = R.plan_legs([10, 20], 5, 25, R.MeetingRule.BLEND)
    inner = [leg for leg in blend if not leg.outward]
    assert [(leg.support, leg.partner, leg.slices[0], leg.slices[-1]) for leg in inner] == [
        (10, 20, 11, 19), (20, 10, 19, 11)]
    assert R.blend_weight(11, 10, 20) == pytest.approx(0.9)
    assert R.blend_weight(11, 20, 10) == pytest.approx(0.1)


def test_blended_chains_meet_with_distance_weights():
    """Identical slices (no motion): each chain carries its own support's mask, and the
    gap blends them; every slice is yielded once."""
    image, _ = phantom()
    _, a = phantom(radii=(14.0, 9.0))
    _, b = phantom(radii=(9.0, 14.0))
    cfg = replace(CFG, meeting=R.MeetingRule.BLEND, refine=False)
    got = {}
    for step, leg in R.propagate_supports(lambda i: image, {10: a, 14: b}, 9, 15, (1.0, 1.0), cfg):
        assert step.index not in got
        got[step.index] = step
    assert sorted(got) == [9, 11, 12, 13, 15]
    expected = R.blend_soft(a.astype(np.float32), 0.5, b.astype(np.float32))
    np.testing.assert_allclose(got[12].soft, expected, atol=0.05)
    assert dice(got[11].mask, a) > dice(got[11].mask, b)
    assert dice(got[13].mask, b) > dice(got[13].mask, a)
    nearest = {s.index: s for s, _ in R.propagate_supports(lambda i: image, {10: a, 14: b}, 9, 15, (1.0, 1.0),
                                                         replace(cfg, meeting=R.MeetingRule.NEAREST))}
    assert dice(nearest[12].mask, a) > 0.98 and dice(nearest[13].mask, b) > 0.98


def test_keep_going_ends_a_leg_only():
    image, mask = phantom()
    seen = []
    for step, leg in R.propagate_supports(lambda i: image, {10: mask}, 5, 15, (1.0, 1.0),
                                          replace(CFG, refine=False),
                                          keep_going=lambda step, leg: step.index != 9):
        seen.append(step.index)
    assert seen == [9, 11, 12, 13, 14, 15]


def test_prior_hook_fuses_into_the_output_not_into_the_chain():
    image, mask = phantom()
    hooked = []

    def hook(index, soft):
        hooked.append(index)
        return R.fuse_prior(soft, np.zeros_like(soft), 1.0)  # the "backend" says: nothing

    steps = list(R.propagate_chain(((q, image) for q in (1, 2)), image, mask.astype(np.float32), (1.0, 1.0),
                                   CFG, prior_hook=hook))
    assert hooked == [1, 2]
    assert not steps[0].mask.any() and not steps[1].mask.any()
    assert dice(steps[1].soft > 0.5, mask) > 0.98  # the chain went on from the prior (measured 1.000)
    np.testing.assert_allclose(R.fuse_prior(np.ones(3), np.zeros(3), 0.25), 0.75)


# ------------------------------------------------------------------ stop signal


def test_prototype_cosine_drops_where_the_structure_ends():
    """Features carry the structure as one direction: the cosine falls when the mask
    covers only background, and an empty mask is -inf (low)."""
    rng = np.random.default_rng(0)
    c, g = 32, 64
    structure, background = rng.standard_normal(c), rng.standard_normal(c)
    roi = np.zeros((256, 256), bool)
    roi[96:160, 96:160] = True
    from SynPoLib.method.synergy import mask_to_grid

    grid = mask_to_grid(roi, (g, g))

    def features(present):
        f = background[:, None, None] + 0.3 * rng.standard_normal((c, g, g))
        if present:
            f[:, grid] = structure[:, None] + 0.3 * rng.standard_normal((c, int(grid.sum())))
        return f.astype(np.float32)

    proto = R.support_prototype(features(True), roi)
    inside = R.prototype_cosine(proto, features(True), roi)
    past_end = R.prototype_cosine(proto, features(False), roi)
    assert inside > 0.99 and past_end < 0.2  # measured 0.9995 and -0.12
    assert R.prototype_cosine(proto, features(True), np.zeros_like(roi)) == float("-inf")


# --------------------------------------------------------------- another volume


def test_affine_start_maps_the_support_slice():
    """A phantom volume and a copy shifted by 3 slices and 2 rows: the affine maps the
    support slice 3 slices on, and copy-after-affine lands on the shifted structure."""
    import SimpleITK as sitk

    from SynPoLib.io import Volume
    from conftest import ellipsoid_volume

    vol, mask = ellipsoid_volume(shape=(40, 48, 48), radii=(10, 12, 9), seed=2)
    vol = ndimage.gaussian_filter(vol, 1.0)
    shifted, smask = ndimage.shift(vol, (3, 2, 0), order=1, mode="nearest"), ndimage.shift(mask, (3, 2, 0), order=0)
    geo = dict(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
    support, query = Volume(array=vol, **geo), Volume(array=shifted.astype(np.float32), **geo)
    transform = R.register_affine(query, support, R.AffineConfig(shrink=(2, 1), smoothing_mm=(1.0, 0.0)))
    assert isinstance(transform, sitk.Transform)
    sup = 20
    assert R.mapped_slice(mask[sup], sup, 0, support, query, transform) == pytest.approx(sup + 3, abs=0.5)
    prism = R.map_support_mask(mask[sup], sup, 0, support, query, transform)
    assert prism.shape == query.array.shape
    assert dice(prism[sup + 3] > 0.5, smask[sup + 3]) > 0.97  # measured 1.000
    assert R.choose_start_slice({22: 0.7, 23: 0.9, 24: 0.9}, 23.4) == 23
    assert R.choose_start_slice({}, 23.4) == 23
    assert R.start_candidates(23.4, 40, 1.0) == [23]
    assert R.start_candidates(23.4, 25, 2.0, R.AffineConfig(start_search_mm=4.0)) == [21, 22, 23, 24]


def test_a_thin_slab_takes_only_the_pyramid_levels_it_can_and_none_under_four_slices():
    """SimpleITK's smoothing refuses a side under 4 voxels: a 2-slice query (a slab, or a
    batch's crop) with the support in another volume crashed the run inside the affine.
    The coarse levels are skipped on a thin slab; under 4 slices the placement is kept."""
    import SimpleITK as sitk

    from SynPoLib.io import Volume
    from conftest import ellipsoid_volume

    cfg = R.AffineConfig()  # shrink (4, 2, 1)
    assert R.pyramid_levels(48, cfg) == list(zip(cfg.shrink, cfg.smoothing_mm))
    assert R.pyramid_levels(6, cfg) == [(1, cfg.smoothing_mm[2])]
    assert R.pyramid_levels(8, cfg) == [(2, cfg.smoothing_mm[1]), (1, cfg.smoothing_mm[2])]
    assert R.pyramid_levels(3, cfg) == []

    vol, _ = ellipsoid_volume(shape=(24, 40, 40), radii=(8, 12, 9), seed=4)
    geo = dict(spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0), direction=tuple(np.eye(3).ravel()))
    support = Volume(array=vol.astype(np.float32), **geo)
    for thickness, skipped in ((2, True), (6, False)):
        slab = Volume(array=np.ascontiguousarray(vol[10:10 + thickness]), spacing=geo["spacing"],
                      origin=(0.0, 0.0, 10.0), direction=geo["direction"])  # (x, y, z): slice 10
        report = {}
        transform = R.register_affine(slab, support, cfg, report=report)
        assert isinstance(transform, sitk.Transform)
        assert ("skipped" in report) is skipped, report
        # the slab's slice 0 is the support's slice 10 (same physical place)
        assert np.allclose(transform.TransformPoint((20.0, 20.0, 11.0)), (20.0, 20.0, 11.0), atol=1.5)


# ------------------------------------------------------------------- real data


def test_real_floor_caudate_protocol_2(colin):
    """Protocol 2 on Colin27's left caudate (AAL 71): measured 0.779 (copy 0.558)."""
    from SynPoLib.metrics import Overlap, overlap
    from SynPoLib.preprocess import window_bounds

    vol, lab = colin
    ref = lab == 71
    slices = np.flatnonzero(ref.any(axis=(1, 2)))
    sup = int(slices[len(slices) // 2])
    bounds = window_bounds(vol)
    acc, copy = Overlap(0, 0, 0), Overlap(0, 0, 0)
    for step, _ in R.propagate_supports(lambda i: R.normalise_slice(vol[i], bounds), {sup: ref[sup]},
                                        int(slices[0]), int(slices[-1]), (1.0, 1.0), CFG):
        acc += overlap(step.mask, ref[step.index])
        copy += overlap(ref[sup], ref[step.index])
    assert copy.dice == pytest.approx(0.558, abs=0.01)
    assert acc.dice > 0.76  # measured 0.779


def test_one_field_moves_several_masks():
    """The displacement field between two slices is computed once (on the union of the
    structures' crops) and moves every structure's soft mask."""
    image, first = phantom(shape=(96, 120), centre=(48.0, 35.0), radii=(14.0, 9.0))
    second_image, second = phantom(shape=(96, 120), centre=(50.0, 85.0), radii=(8.0, 12.0), seed=0)
    both = np.where(second, second_image, image).astype(np.float32)
    fixed, truth_first = moved(both, first, shift=(2.0, 3.0))
    _, truth_second = moved(both, second, shift=(2.0, 3.0))
    field = R.register_slices(fixed, both, first | second, (1.0, 1.0), CFG)
    assert isinstance(field, R.SliceField)
    for soft, truth in ((first, truth_first), (second, truth_second)):
        got = field.warp(soft.astype(np.float32)) > 0.5
        assert dice(got, truth) > 0.9
        assert dice(soft, truth) < dice(got, truth) - 0.05
    # one structure's wrapper is the same two steps
    np.testing.assert_array_equal(R.register_and_warp(fixed, both, first.astype(np.float32), (1.0, 1.0), CFG),
                                  R.register_slices(fixed, both, first, (1.0, 1.0), CFG).warp(first.astype(np.float32)))
    with pytest.raises(ValueError, match="differs from the field"):
        field.warp(np.zeros((10, 10), np.float32))


def test_held_soft_masks_are_cropped():
    soft = np.zeros((200, 300), np.float32)
    soft[40:60, 100:130] = np.linspace(0.1, 1.0, 30, dtype=np.float32)[None, :]
    held = R.HeldSoft(soft)
    assert held.nbytes == 20 * 30 * 4  # the structure's box, not the slice
    np.testing.assert_array_equal(held.array(), soft)
    assert not R.HeldSoft(np.zeros((5, 5), np.float32)).array().any()
