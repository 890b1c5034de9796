"""The MRML adapter on a real scene (slicer-core): reading, writing, views, rollback.

No model here: these tests check geometry plumbing against ground truth that the tests
compute from the matrices they choose (voxels AND world positions of voxel centres).
The model runs end to end in test_mrml_runs.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import slicer
from slicer_scene import (CORONAL, FLIPPED_K, LPS, RAS, SAGITTAL, add_linear_transform, add_segmentation,
                          add_volume, ellipsoid, geometry, new_scene, node_to_world, phantom, rotation, segment_voxels,
                          segment_world_points, snapshot, sorted_points, to_vtk, voxel_world)

from SynPoLib import scene as mrml
from SynPoLib.scene import MRMLInputError, Reorientation, SegmentWriter

SHAPE = (14, 22, 18)  # (k, j, i)

#: orientation cases: direction columns, spacing (i, j, k), origin
CASES = {
    "ras-anisotropic": (RAS, (0.8, 0.9, 2.5), (-7.0, -10.0, -17.0)),
    "lps": (LPS, (1.0, 1.0, 1.5), (7.0, 10.0, -10.0)),
    "flipped-k": (FLIPPED_K, (1.0, 1.2, 2.0), (-9.0, -12.0, 14.0)),
    "sagittal-permuted": (SAGITTAL, (1.1, 1.4, 0.9), (8.0, -13.0, 9.0)),
    "coronal-permuted": (CORONAL, (1.0, 0.9, 1.3), (8.0, -9.0, 10.0)),
    "oblique": (rotation((1, 1, 0), 30.0) @ LPS, (1.0, 1.0, 1.2), (5.0, 9.0, -8.0)),
}
CENTRE, RADII = (1.5, -2.0, 1.0), (5.0, 6.0, 4.0)


def volume_case(scene, case, name="vol"):
    directions, spacing, origin = CASES[case]
    m = geometry(directions, spacing, origin)
    image, truth = phantom(m, SHAPE, CENTRE, RADII)
    node = add_volume(scene, image, m, name=name, window=(50.0, 900.0))
    return node, m, image, truth


# ----------------------------------------------------------------------------- reading

@pytest.mark.parametrize("case", sorted(CASES))
def test_reading_volume_and_support_on_its_grid(case):
    scene = new_scene()
    node, m, image, truth = volume_case(scene, case)
    seg, (sid, other) = add_segmentation(scene, node, [("target", truth, (1, 0, 0)),
                                                       ("other", np.roll(truth, 2, axis=1), (0, 1, 0))])
    before = snapshot(scene)

    arr = mrml.volume_array(node)
    np.testing.assert_array_equal(arr, image)
    arr[...] = 0  # a copy: the node keeps its voxels
    assert snapshot(scene) == before
    np.testing.assert_allclose(mrml.ijk_to_world(node), m, atol=1e-9)
    np.testing.assert_allclose(mrml.spacing_kji(m), CASES[case][1][::-1])

    mask = mrml.segment_array(seg, sid, node)
    np.testing.assert_array_equal(mask, truth)
    # physical positions: the mask's voxels are where the ellipsoid is in RAS
    pts = mrml.voxel_centers_ras(mrml.ijk_to_world(node), np.argwhere(mask))
    assert ellipsoid(pts, CENTRE, RADII).all()
    assert snapshot(scene) == before


def test_support_from_a_segmentation_on_another_grid_and_under_its_own_transform():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "lps")
    # the segmentation's labelmap is 3x finer along i and shifted 4 mm to R, and the
    # segmentation node sits under a transform moving it back 4 mm to L
    fine = m.copy()
    fine[:3, 0] /= 3.0
    fine[:3, 3] += -m[:3, 0] / 3.0  # voxel centre of fine voxel 3i+1 == coarse voxel i
    fine[:3, 3] += (4.0, 0.0, 0.0)
    fine_mask = np.repeat(truth, 3, axis=2)
    seg, (sid,) = add_segmentation(scene, node, [("target", fine_mask, (1, 0, 0))], matrix=fine)
    t = np.eye(4)
    t[0, 3] = -4.0
    add_linear_transform(scene, t, seg)
    before = snapshot(scene)
    np.testing.assert_array_equal(mrml.segment_array(seg, sid, node), truth)
    assert snapshot(scene) == before


def test_linear_parent_transform_is_part_of_the_geometry_and_never_hardened():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "ras-anisotropic")
    t = np.eye(4)
    t[:3, :3] = rotation((0, 0, 1), 25.0)
    t[:3, 3] = (3.0, -2.0, 7.0)
    add_linear_transform(scene, t, node)
    before = snapshot(scene)
    np.testing.assert_allclose(mrml.ijk_to_world(node), t @ m, atol=1e-9)
    np.testing.assert_allclose(mrml.spacing_kji(mrml.ijk_to_world(node)), CASES["ras-anisotropic"][1][::-1])
    assert snapshot(scene) == before  # the volume keeps its own matrix and its transform


def test_nonlinear_parent_transform_is_refused_clearly():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "lps")
    seg, (sid,) = add_segmentation(scene, node, [("target", truth, (1, 0, 0))])
    grid = slicer.vtkMRMLGridTransformNode()
    grid.SetName("warp")
    scene.AddNode(grid)
    node.SetAndObserveTransformNodeID(grid.GetID())
    assert not grid.IsTransformToWorldLinear()
    before = snapshot(scene)
    with pytest.raises(MRMLInputError, match="non-linear transform 'warp'.*Harden"):
        mrml.read_inputs(node, seg, sid, axis=0)
    with pytest.raises(MRMLInputError, match="non-linear"):
        SegmentWriter(node, None).begin()
    assert snapshot(scene) == before


def test_bad_inputs_give_specific_errors_and_change_nothing():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "lps")
    empty = np.zeros_like(truth)
    seg, (sid, eid) = add_segmentation(scene, node, [("target", truth, (1, 0, 0)), ("nothing", empty, (0, 1, 0))])
    drawn = [int(k) for k in np.flatnonzero(truth.any(axis=(1, 2)))]
    not_drawn = [s for s in range(SHAPE[0]) if s not in drawn][0]
    vector = slicer.vtkMRMLVectorVolumeNode()
    vector.SetName("rgb")
    scene.AddNode(vector)
    before = snapshot(scene)
    cases = [
        (dict(segment_id="missing", axis=0), "segment 'missing' is not in 'segmentation'"),
        (dict(segment_id=eid, axis=0), "no voxel inside"),
        (dict(segment_id=sid, axis=0, support_slices=[not_drawn]), f"not drawn on slice {not_drawn}"),
        (dict(segment_id=sid, axis=0, support_slices=[99]), "outside"),
        (dict(segment_id=sid, axis=3), "axis must be 0, 1 or 2"),
        (dict(segment_id=sid, axis=0, slice_range="custom", first=5, last=99), "custom slice range"),
    ]
    for kwargs, message in cases:
        segment_id = kwargs.pop("segment_id")
        with pytest.raises(MRMLInputError, match=message):
            mrml.read_inputs(node, seg, segment_id, **kwargs)
    with pytest.raises(MRMLInputError, match="grey"):
        mrml.read_inputs(vector, seg, sid, axis=0)
    bare = slicer.vtkMRMLScalarVolumeNode()
    bare.SetName("bare")
    scene.AddNode(bare)
    with pytest.raises(MRMLInputError, match="no voxels"):
        mrml.read_inputs(node, seg, sid, axis=0, query_volume=bare)
    scene.RemoveNode(bare)
    assert snapshot(scene) == before


def test_read_inputs_defaults_and_display_window():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "flipped-k")
    seg, (sid,) = add_segmentation(scene, node, [("liver", truth, (1, 0, 0))])
    inputs = mrml.read_inputs(node, seg, sid, axis=0)
    # every drawn slice (k-shot), counted from the phantom, not by the adapter's own helper
    assert inputs.support.slices == [int(k) for k in np.flatnonzero(truth.any(axis=(1, 2)))]
    assert inputs.same_volume and inputs.reorientation.is_identity
    assert inputs.query is inputs.support.volume
    assert inputs.query_window == pytest.approx((50.0, 900.0)) and inputs.support.window == inputs.query_window
    assert inputs.support_name == "liver"
    assert inputs.query_spacing == pytest.approx((2.0, 1.2, 1.0))
    assert inputs.slices == list(range(SHAPE[0]))
    off = mrml.read_inputs(node, seg, sid, axis=1, support_slices=[11], use_display_window=False,
                           slice_range="around", margin=2)
    assert off.query_window is None and off.support.window is None
    assert off.slices == [9, 10, 11, 12, 13] and off.axis == 1


def test_query_slice_ranges():
    assert mrml.query_slices("whole", 5, [2], 5) == [0, 1, 2, 3, 4]
    assert mrml.query_slices("around", 40, [10], 40, margin=3) == list(range(7, 14))
    assert mrml.query_slices("around", 20, [10], 40, margin=2) == [3, 4, 5, 6, 7]  # relative position 10/39
    assert mrml.query_slices("around", 10, [1], 10, margin=5) == list(range(0, 7))
    assert mrml.query_slices("custom", 10, [1], 10, first=2, last=-3) == [2, 3, 4, 5, 6, 7]
    for bad in (dict(mode="custom", first=6, last=2), dict(mode="around", margin=-1), dict(mode="up")):
        with pytest.raises(MRMLInputError):
            mrml.query_slices(bad.pop("mode"), 10, [1], 10, **bad)


# ----------------------------------------------------------------------------- views

def slice_node_at(normal_frame: np.ndarray, point) -> "slicer.vtkMRMLSliceNode":
    node = slicer.vtkMRMLSliceNode()
    s2r = np.eye(4)
    s2r[:3, :3] = normal_frame
    s2r[:3, 3] = point
    node.GetSliceToRAS().DeepCopy(to_vtk(s2r))
    node.UpdateMatrices()
    return node


#: Slicer's view presets (columns: view x, view y, normal)
VIEWS = {"axial": np.array([[-1.0, 0, 0], [0, 1, 0], [0, 0, 1]]),
         "sagittal": np.array([[0, 0, 1.0], [-1, 0, 0], [0, 1, 0]]),
         "coronal": np.array([[-1.0, 0, 0], [0, 0, 1], [0, 1, 0]])}


@pytest.mark.parametrize("case", [c for c in sorted(CASES) if c != "oblique"])
@pytest.mark.parametrize("view", sorted(VIEWS))
def test_current_slice_of_a_view_on_any_axis(case, view):
    scene = new_scene()
    node, m, image, truth = volume_case(scene, case)
    normal = VIEWS[view][:, 2]
    # which array axis is parallel to the view's normal, from the test's own matrix
    cos = np.abs((m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)).T @ normal)
    expected_axis = 2 - int(np.argmax(cos))
    n = SHAPE[expected_axis]
    for index in (0, n // 3, n - 1):
        kji = [(s - 1) / 2.0 for s in SHAPE]
        kji[expected_axis] = index + 0.3  # off the voxel centre: the view shows the nearest slice
        point = (m @ np.array([kji[2], kji[1], kji[0], 1.0]))[:3] + VIEWS[view][:, 0] * 7.0  # slide in-plane
        got = mrml.slice_from_view(slice_node_at(VIEWS[view], point).GetSliceToRAS(), node, view)
        assert (got.axis, got.index) == (expected_axis, index)
        assert got.drift_voxels < 1e-6


def test_oblique_view_is_refused_and_a_tiny_tilt_is_not():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "lps")
    centre = (m @ np.array([8.5, 10.5, 6.2, 1.0]))[:3]
    tilted = rotation((1, 0, 0), 12.0) @ VIEWS["axial"]
    with pytest.raises(MRMLInputError, match=r"Red view is oblique to 'vol' \(12.0 degrees.*Rotate to volume plane"):
        mrml.slice_from_view(slice_node_at(tilted, centre).GetSliceToRAS(), node, "Red view")
    nearly = rotation((1, 0, 0), 0.05) @ VIEWS["axial"]
    got = mrml.slice_from_view(slice_node_at(nearly, centre).GetSliceToRAS(), node)
    assert (got.axis, got.index) == (0, 6) and 0 < got.drift_voxels < 0.5
    outside = (m @ np.array([8.5, 10.5, SHAPE[0] + 3.0, 1.0]))[:3]
    with pytest.raises(MRMLInputError, match="outside"):
        mrml.slice_from_view(slice_node_at(VIEWS["axial"], outside).GetSliceToRAS(), node)


def test_oblique_volume_is_handled_with_a_view_rotated_to_its_plane():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "oblique")
    frame = m[:3, :3] / np.linalg.norm(m[:3, :3], axis=0)  # "rotate to volume plane": normal = k
    point = (m @ np.array([3.0, 4.0, 9.0, 1.0]))[:3]
    got = mrml.slice_from_view(slice_node_at(frame, point).GetSliceToRAS(), node)
    assert (got.axis, got.index) == (0, 9)


def test_slice_center_ras_is_on_the_slice():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "sagittal-permuted")
    for axis in range(3):
        p = mrml.slice_center_ras(node, axis, 4)
        kji = np.linalg.solve(m, np.append(p, 1.0))[:3][::-1]
        assert kji[axis] == pytest.approx(4.0)


# ----------------------------------------------------------------------------- writing

def world_of(mask: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    kji = np.argwhere(mask > 0)
    return (np.c_[kji[:, ::-1], np.ones(len(kji))] @ matrix.T)[:, :3]


@pytest.mark.parametrize("case", sorted(CASES))
def test_new_segmentation_node_has_query_geometry_name_and_colour(case):
    scene = new_scene()
    node, m, image, truth = volume_case(scene, case, name="CT")
    before = snapshot(scene)
    writer = SegmentWriter(node, None, name="Liver SynPo", color=(0.1, 0.2, 0.9))
    sid = writer.begin()
    writer.write_volume(truth)
    writer.commit()
    seg = writer.segmentation_node
    assert writer.created_node and seg.GetScene() is scene and seg.GetName() == "CT SynPo"
    assert seg.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is node
    segment = seg.GetSegmentation().GetSegment(sid)
    assert segment.GetName() == "Liver SynPo"
    np.testing.assert_allclose(segment.GetColor(), (0.1, 0.2, 0.9))
    arr, matrix, extent = segment_voxels(seg, sid)
    np.testing.assert_allclose(matrix, m, atol=1e-9)  # the query's voxel grid
    np.testing.assert_array_equal(sorted_points(segment_world_points(seg, sid)), sorted_points(world_of(truth, m)))
    assert ellipsoid(segment_world_points(seg, sid), CENTRE, RADII).all()
    after = snapshot(scene)
    assert after["nodes"][:len(before["nodes"])] == before["nodes"]  # the volume is untouched
    writer.rollback()  # no effect once committed
    assert seg.GetScene() is scene


def test_new_segment_in_existing_segmentation_never_touches_other_segments():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "lps")
    a = np.zeros_like(truth)
    a[3:9, 5:15, 4:12] = 1  # overlaps the result
    b = np.zeros_like(truth)
    b[0:2, 0:3, 0:3] = 1  # shares a layer with a
    seg, (ida, idb) = add_segmentation(scene, node, [("a", a, (1, 0, 0)), ("b", b, (0, 1, 0))])
    assert seg.GetSegmentation().GetLayerIndex(ida) == seg.GetSegmentation().GetLayerIndex(idb)
    before = snapshot(scene)
    saved = []
    history = slicer.vtkSegmentationHistory()
    history.SetSegmentation(seg.GetSegmentation())
    writer = SegmentWriter(node, seg, name="result", color=(0, 0, 1),
                           before_first_write=lambda n: (saved.append(n.GetID()), history.SaveState()))
    sid = writer.begin()
    assert saved == [seg.GetID()]  # one undo state, saved before anything changed
    writer.write_volume(truth)
    writer.commit()
    after = snapshot(scene)
    segs_after = {s["id"]: s for n in after["nodes"] if "segments" in n for s in n["segments"]}
    segs_before = {s["id"]: s for n in before["nodes"] if "segments" in n for s in n["segments"]}
    for key in (ida, idb):
        assert segs_after[key] == segs_before[key]  # voxels, label, layer, name, colour
    np.testing.assert_array_equal(mrml.segment_array(seg, sid, node), truth)
    np.testing.assert_array_equal(mrml.segment_array(seg, ida, node), a)  # where they overlap, a keeps its voxels
    # the one undo step restores the segmentation as it was
    history.RestorePreviousState()
    assert snapshot(scene) == before


def test_streamed_slices_land_on_their_slices_and_notify_the_display():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "sagittal-permuted")
    seg, (ida,) = add_segmentation(scene, node, [("a", truth, (1, 0, 0))])
    before = snapshot(scene)
    writer = SegmentWriter(node, seg, name="r")
    sid = writer.begin()
    events = []
    seg.GetSegmentation().AddObserver(slicer.vtkSegmentation.SourceRepresentationModified,
                                      lambda caller, event: events.append(event))
    expected = np.zeros_like(truth)
    for axis, index in ((0, 7), (1, 3), (2, 12)):
        where = [slice(None)] * 3
        where[axis] = index
        piece = truth[tuple(where)]
        writer.write_slice(index, axis, piece)
        expected[tuple(where)] = piece
    assert len(events) == 3
    np.testing.assert_array_equal(mrml.segment_array(seg, sid, node), expected)
    with pytest.raises(ValueError, match="does not match"):
        writer.write_slice(0, 0, np.ones((3, 3)))
    writer.rollback()
    assert snapshot(scene) == before


def test_writer_under_transforms_keeps_world_positions():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "ras-anisotropic")
    tv = np.eye(4)
    tv[:3, :3] = rotation((0, 1, 0), 20.0)
    tv[:3, 3] = (5.0, 1.0, -3.0)
    t_vol = add_linear_transform(scene, tv, node)
    # a new node follows the volume's transform
    writer = SegmentWriter(node, None, name="r")
    sid = writer.begin()
    writer.write_volume(truth)
    seg = writer.segmentation_node
    assert seg.GetTransformNodeID() == t_vol.GetID()
    np.testing.assert_allclose(sorted_points(segment_world_points(seg, sid)), sorted_points(world_of(truth, tv @ m)),
                               atol=1e-6)
    # an existing segmentation under another transform gets the same world positions
    other, _ = add_segmentation(scene, node, [("x", np.zeros_like(truth), (1, 1, 0))])
    ts = np.eye(4)
    ts[:3, 3] = (-30.0, 4.0, 2.0)
    add_linear_transform(scene, ts, other)
    writer2 = SegmentWriter(node, other, name="r2")
    sid2 = writer2.begin()
    writer2.write_volume(truth)
    np.testing.assert_allclose(node_to_world(other), ts)
    np.testing.assert_allclose(sorted_points(segment_world_points(other, sid2)),
                               sorted_points(world_of(truth, tv @ m)), atol=1e-6)


def test_rollback_of_a_new_node_leaves_the_scene_exactly_as_before():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "lps")
    before = snapshot(scene)
    writer = SegmentWriter(node, None, name="r")
    writer.begin()
    writer.write_slice(5, 0, truth[5])
    assert snapshot(scene) != before
    writer.rollback()
    assert snapshot(scene) == before
    writer.rollback()  # twice is harmless
    assert snapshot(scene) == before


def test_writer_refuses_a_surface_segmentation_and_a_deleted_segment():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "lps")
    surface = slicer.vtkMRMLSegmentationNode()
    surface.SetName("surfaces")
    scene.AddNode(surface)
    surface.GetSegmentation().SetSourceRepresentationName("Closed surface")
    before = snapshot(scene)
    with pytest.raises(MRMLInputError, match="keeps its segments as 'Closed surface'"):
        SegmentWriter(node, surface).begin()
    assert snapshot(scene) == before
    seg, (ida,) = add_segmentation(scene, node, [("a", truth, (1, 0, 0))])
    writer = SegmentWriter(node, seg, name="r")
    sid = writer.begin()
    seg.GetSegmentation().RemoveSegment(sid)  # the user deletes it mid-run
    with pytest.raises(MRMLInputError, match="was removed during the run"):
        writer.write_slice(1, 0, truth[1])
    from SynPoLib.scene import BINARY_LABELMAP

    writer = SegmentWriter(node, seg, name="r2")
    sid = writer.begin()
    # the user's edit replaces the labelmap the writer streams into
    seg.GetSegmentation().GetSegment(sid).AddRepresentation(BINARY_LABELMAP, slicer.vtkOrientedImageData())
    with pytest.raises(MRMLInputError, match="was edited during the run"):
        writer.write_slice(1, 0, truth[1])


def test_result_survives_seg_nrrd_storage(tmp_path):
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "sagittal-permuted", name="MR")
    seg, (ida,) = add_segmentation(scene, node, [("a", np.roll(truth, 3, axis=0), (1, 0, 0))])
    writer = SegmentWriter(node, seg, name="kidney SynPo", color=(0.2, 0.4, 0.8))
    writer.begin()
    writer.write_volume(truth)
    writer.commit()
    path = tmp_path / "result.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.WriteData(seg)
    fresh = new_scene()
    loaded = slicer.vtkMRMLSegmentationNode()
    fresh.AddNode(loaded)
    reader = slicer.vtkMRMLSegmentationStorageNode()
    fresh.AddNode(reader)
    reader.SetFileName(str(path))
    assert reader.ReadData(loaded)
    names = {loaded.GetSegmentation().GetSegment(i).GetName(): i for i in loaded.GetSegmentation().GetSegmentIDs()}
    assert set(names) == {"a", "kidney SynPo"}
    got = names["kidney SynPo"]
    np.testing.assert_allclose(loaded.GetSegmentation().GetSegment(got).GetColor(), (0.2, 0.4, 0.8), atol=1e-6)
    np.testing.assert_allclose(sorted_points(segment_world_points(loaded, got)), sorted_points(world_of(truth, m)),
                               atol=1e-4)


# ----------------------------------------------------------------------------- reorientation

@pytest.mark.parametrize("query_case", sorted(CASES))
def test_query_in_another_orientation_is_turned_to_the_support_axes(query_case):
    s_dirs, s_spacing, s_origin = CASES["lps"]
    s_m = geometry(s_dirs, s_spacing, s_origin)
    q_dirs, q_spacing, q_origin = CASES[query_case]
    q_m = geometry(q_dirs, q_spacing, q_origin)
    if query_case == "oblique":
        with pytest.raises(MRMLInputError, match="no slice direction within 20 degrees"):
            Reorientation.between(q_m, s_m, 0)
        return
    turn = Reorientation.between(q_m, s_m, 0)
    world = voxel_world(q_m, SHAPE)
    aligned = np.stack([turn.to_aligned(world[..., c]) for c in range(3)], axis=-1)
    # along every aligned axis, world position moves the way it does along the support's
    for a in range(3):
        step = np.take(aligned, 1, axis=a) - np.take(aligned, 0, axis=a)
        s_dir = s_m[:3, 2 - a] / np.linalg.norm(s_m[:3, 2 - a])
        assert np.allclose(step / np.linalg.norm(step, axis=-1, keepdims=True), s_dir, atol=1e-9)
        assert turn.aligned_spacing(q_spacing[::-1])[a] == pytest.approx(float(np.linalg.norm(step[0, 0])))
    for c in range(3):
        np.testing.assert_array_equal(turn.to_native(aligned[..., c]), world[..., c])


@settings(max_examples=60, deadline=None)
@given(perm=st.permutations([0, 1, 2]), flip=st.tuples(st.booleans(), st.booleans(), st.booleans()),
       axis=st.integers(0, 2), index=st.integers(0, 100))
def test_reoriented_slices_map_back_to_the_same_native_voxels(perm, flip, axis, index):
    turn = Reorientation(tuple(perm), flip)
    native_shape = (5, 6, 7)
    aligned_shape = tuple(native_shape[p] for p in perm)
    index = index % aligned_shape[axis]
    rng = np.random.default_rng(index)
    aligned = np.zeros(aligned_shape, np.uint8)
    where = [slice(None)] * 3
    where[axis] = index
    aligned[tuple(where)] = rng.integers(0, 2, aligned[tuple(where)].shape)
    n_axis, n_index, n_mask = turn.slice_to_native(axis, index, aligned[tuple(where)], aligned_shape)
    # where each aligned voxel lives in the native array, from the definition (aligned axis a
    # is native axis perm[a], reversed where flip[a]), voxel by voxel: not Reorientation.to_native
    expected = np.zeros(native_shape, np.uint8)
    for idx in np.ndindex(*aligned_shape):
        native = [0, 0, 0]
        for a, i in enumerate(idx):
            native[perm[a]] = aligned_shape[a] - 1 - i if flip[a] else i
        expected[tuple(native)] = aligned[idx]
    got = np.zeros(native_shape, np.uint8)
    w = [slice(None)] * 3
    w[n_axis] = n_index
    got[tuple(w)] = n_mask
    np.testing.assert_array_equal(got, expected)


def test_contrasting_colour_and_names():
    red = mrml.contrasting_color((1.0, 0.0, 0.0))
    assert red[0] < 0.2 and red[1] > 0.8 and red[2] > 0.8  # cyan
    assert mrml.contrasting_color((0.5, 0.5, 0.5)) == (0.95, 0.6, 0.2)
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "lps")
    seg, ids = add_segmentation(scene, node, [("a", truth, (1, 0, 0)), ("b", truth, (0, 1, 0))])
    assert mrml.segment_names(seg) == [(ids[0], "a"), (ids[1], "b")]
    assert mrml.same_node(node, scene.GetNodeByID(node.GetID())) and not mrml.same_node(node, seg)


def test_undo_removes_only_the_committed_result():
    scene = new_scene()
    node, m, image, truth = volume_case(scene, "lps")
    seg, (ida,) = add_segmentation(scene, node, [("a", truth, (1, 0, 0))])
    before = snapshot(scene)
    writer = SegmentWriter(node, seg, name="r")
    with pytest.raises(RuntimeError, match="nothing to undo"):
        writer.undo()
    writer.begin()
    writer.write_volume(truth)
    writer.commit()
    writer.rollback()  # a committed result survives a late rollback
    assert seg.GetSegmentation().GetSegment(writer.segment_id) is not None
    writer.undo()
    assert snapshot(scene) == before
    # a new node is removed with its display nodes
    fresh = SegmentWriter(node, None, name="r")
    fresh.begin()
    fresh.write_volume(truth)
    fresh.commit()
    fresh.undo()
    assert snapshot(scene) == before and fresh.segmentation_node is None
