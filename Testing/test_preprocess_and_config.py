"""Intensity windowing, slice <-> ROI geometry, and the configuration object."""

import json

import numpy as np
import pytest

from SynPoLib.config import (GeometryConfig, PointMethod, PromptStrategy, SynPoConfig, WindowConfig)
from SynPoLib.preprocess import (apply_window, in_plane_spacing, slice_geometry, take_slice, window_bounds)
from SynPoLib.presets import preset


def test_ct_window_is_the_fsmis_abdominal_window():
    ct = np.full((4, 4, 4), -1000.0)
    ct[1:3, 1:3, 1:3] = 40.0
    assert window_bounds(ct) == (-125.0, 275.0)


def test_mri_window_is_volume_percentiles():
    mri = np.arange(1000, dtype=np.float32).reshape(10, 10, 10)
    low, high = window_bounds(mri)
    assert low == pytest.approx(np.percentile(mri, 0.5))
    assert high == pytest.approx(np.percentile(mri, 99.5))


def test_explicit_window_and_errors():
    assert window_bounds(np.zeros((2, 2, 2)), WindowConfig(window=(10, 20))) == (10.0, 20.0)
    with pytest.raises(ValueError, match="constant"):
        window_bounds(np.ones((3, 3, 3)))
    with pytest.raises(ValueError, match="modality"):
        window_bounds(np.arange(8.0).reshape(2, 2, 2), WindowConfig(modality="pet"))


def test_window_is_one_mapping_for_every_slice():
    vol = np.stack([np.full((2, 2), 50.0), np.full((2, 2), 150.0)])
    bounds = (0.0, 200.0)
    assert apply_window(vol[0], bounds)[0, 0] == 64  # 50/200*255 rounded
    assert apply_window(vol[1], bounds)[0, 0] == 191
    assert apply_window(np.array([[-10.0, 500.0]]), bounds).tolist() == [[0, 255]]


def test_take_slice_checks_bounds_and_never_copies_for_writing():
    vol = np.arange(24).reshape(2, 3, 4)
    np.testing.assert_array_equal(take_slice(vol, 1, 2), vol[:, :, 1])
    with pytest.raises(IndexError, match="outside"):
        take_slice(vol, 3, 1)


def test_in_plane_spacing_per_axis():
    sp = (3.0, 2.0, 1.0)  # (k, j, i)
    assert in_plane_spacing(sp, 0) == (2.0, 1.0)
    assert in_plane_spacing(sp, 1) == (3.0, 1.0)
    assert in_plane_spacing(sp, 2) == (3.0, 2.0)


def test_geometry_keeps_physical_aspect():
    g = slice_geometry((100, 200), (2.0, 1.0), GeometryConfig(roi_size=256))
    # 200 mm x 200 mm: a square on the ROI
    assert g.scaled == (256, 256)
    g = slice_geometry((100, 200), (1.0, 1.0), GeometryConfig(roi_size=256))
    assert g.scaled == (128, 256)
    assert g.valid().sum() == 128 * 256
    g = slice_geometry((100, 200), (1.0, 1.0), GeometryConfig(roi_size=256, keep_aspect=False))
    assert g.scaled == (256, 256)


def test_mask_round_trip_and_points_map_back():
    g = slice_geometry((60, 90), (1.0, 1.0), GeometryConfig(roi_size=256))
    mask = np.zeros((60, 90), bool)
    mask[20:40, 30:70] = True
    roi = g.mask_to_roi(mask)
    assert not roi[g.scaled[0]:].any()
    back = g.mask_to_native(roi)
    assert (back == mask).mean() > 0.99
    logits = np.where(roi, 5.0, -5.0).astype(np.float32)
    assert ((g.logits_to_native(logits) > 0) == mask).mean() > 0.98
    # the ROI pixel centre of native pixel (col 45, row 30) maps back onto it
    sx, sy = g.scale_xy
    roi_pt = np.array([[(45 + 0.5) * sx - 0.5, (30 + 0.5) * sy - 0.5]])
    np.testing.assert_allclose(g.points_to_native(roi_pt), [[45, 30]], atol=1e-6)


def test_image_to_roi_is_uint8_rgb_and_padded():
    g = slice_geometry((50, 100), (1.0, 1.0), GeometryConfig(roi_size=64))
    img = np.full((50, 100), 200, np.uint8)
    roi = g.image_to_roi(img)
    assert roi.shape == (64, 64, 3) and roi.dtype == np.uint8
    assert roi[: g.scaled[0]].min() == 200 and roi[g.scaled[0]:].max() == 0
    with pytest.raises(ValueError):
        g.image_to_roi(np.zeros((10, 10), np.uint8))


def test_config_round_trips_through_json():
    cfg = preset("lite").updated(**{"points.method": PointMethod.EXTREMES, "window.window": (1.0, 2.0)})
    again = SynPoConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert again.prompt.strategy is PromptStrategy.SUPPORT_BOX


def test_config_updated_rejects_unknown_fields():
    with pytest.raises(TypeError):
        SynPoConfig().updated(**{"points.no_such_field": 1})
    with pytest.raises(KeyError):
        SynPoConfig().updated(points=1)


def test_paper_preset_holds_the_papers_values():
    cfg = preset("paper")
    assert (cfg.synergy.delta_sd, cfg.synergy.delta_s, cfg.synergy.delta_d) == (0.8, 0.1, 0.1)
    assert (cfg.points.alpha, cfg.points.beta) == (1.0, -0.5)
    assert (cfg.points.n_positive, cfg.points.gamma1, cfg.points.n_negative, cfg.points.gamma2) == (3, 20, 4, 20)
    assert cfg.geometry.roi_size == 256
    assert cfg.prompt.strategy is PromptStrategy.POINTS and cfg.prompt.multimask
    with pytest.raises(ValueError, match="unknown preset"):
        preset("nope")


def test_display_orientation_is_radiological():
    from SynPoLib.overlay import display_orientation

    # Colin27's grid: i -> right-to-left flipped (-x), j -> -y (anterior), k -> +z
    colin = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
    axial = display_orientation(colin, 0)  # rows j (toward anterior), cols i (toward right)
    assert not axial.transpose and axial.flip_rows and axial.flip_cols
    coronal = display_orientation(colin, 1)  # rows k (superior), cols i
    assert not coronal.transpose and coronal.flip_rows and coronal.flip_cols
    sagittal = display_orientation(colin, 2)  # rows k, cols j (toward anterior): anterior goes left
    assert not sagittal.transpose and sagittal.flip_rows and sagittal.flip_cols
    # identity LPS grid, axial slice: rows already posterior-down, cols toward left
    ident = display_orientation((1, 0, 0, 0, 1, 0, 0, 0, 1), 0)
    assert ident == type(ident)()
    # a permuted grid (i along y, j along x) is transposed for display
    permuted = display_orientation((0, 1, 0, 1, 0, 0, 0, 0, 1), 0)
    assert permuted.transpose
    # points follow the image
    img = np.arange(12).reshape(3, 4)
    view = axial
    shown = view.image(img)
    pt = view.points(np.array([[1, 2]]), img.shape)[0]  # native (col 1, row 2) holds img[2, 1]
    assert shown[int(pt[1]), int(pt[0])] == img[2, 1]


def test_registration_sections_reach_every_route_and_the_mode_has_its_threshold():
    from SynPoLib.config import AffineConfig, MeetingRule, Mode, RegistrationConfig
    from SynPoLib.errors import InputError
    from SynPoLib.presets import build_config, config_rows

    lite = preset("lite")
    assert lite.propagation.mode == Mode.REGISTRATION and lite.registration == RegistrationConfig()
    assert preset("paper").propagation.mode == Mode.SLICES
    # --set, JSON and the Slicer table reach the registration and affine sections
    cfg = build_config("lite", None, ["registration.meeting=nearest", "registration.margin_mm=12.5",
                                      "affine.start_search_mm=5"])
    assert cfg.registration.meeting is MeetingRule.NEAREST and cfg.registration.margin_mm == 12.5
    assert cfg.affine.start_search_mm == 5
    back = SynPoConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg and isinstance(back.affine.shrink, tuple)
    rows = {key for key, _, _ in config_rows("lite")}
    assert {"registration.stop_threshold", "registration.backend_weight", "affine.shrink"} <= rows
    with pytest.raises(InputError, match="registration.walker_beta"):
        build_config("lite", None, ["registration.walker_beta=-1"])
    with pytest.raises(ValueError, match="one value per level"):
        AffineConfig(shrink=(2, 1))
    # one auto-stop, one flag rule: the mode's own measured threshold replaces the other modes'
    assert lite.mode_quality().stop_threshold == lite.registration.stop_threshold == 0.8
    slices = lite.updated(**{"propagation.mode": Mode.SLICES})
    assert slices.mode_quality() == slices.quality and slices.quality.stop_threshold == 0.85
