"""SynPo on MRML nodes end to end with the real LiteMedSAM (slicer-core scene, no Qt).

The path is the one the module's Logic and widget take: read nodes, run on the worker
thread, stream slices into the scene from the polling thread, commit, or roll back on
cancel and failure. Small volumes and few slices: each slice is a real encoder pass.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import slicer
from slicer_scene import (LPS, SAGITTAL, add_segmentation, add_volume, ellipsoid, geometry, new_scene,
                          phantom, segment_world_points, snapshot)

from SynPoLib import scene as mrml
from SynPoLib.metrics import dice
from SynPoLib.scene import RunInProgress, SegmentationRun, run_on_nodes

SHAPE = (14, 22, 18)
CENTRE, RADII = (1.5, -2.0, 1.0), (5.0, 6.0, 4.0)
LPS_M = geometry(LPS, (1.0, 1.0, 1.5), (7.0, 10.0, -10.0))
#: Dice floor on a bright ellipsoid next to a dimmer one, within one volume: measured
#: 1.000 on the logic path and on axes 0 and 1, 0.889 on axis 2 (lite, CPU)          [G]
DICE_FLOOR = 0.86
#: across two volumes (other grid, orientation and noise) LiteMedSAM varies more from
#: slice to slice: measured 0.742 pooled over three slices (lite, CPU)                [G]
CROSS_DICE_FLOOR = 0.71
#: the module self-test's recipe on Colin27 (selftest.DICE_FLOOR, 0.85, is the module's
#: own floor on Slicer's MRHead): measured 0.978 over its 6 slices (lite, CPU)       [G]
SELFTEST_COLIN_FLOOR = 0.95


def one_slice(mask: np.ndarray, axis: int, index: int) -> np.ndarray:
    """The labelled support a user draws: the structure on one slice only."""
    out = np.zeros_like(mask)
    where = [slice(None)] * 3
    where[axis] = index
    out[tuple(where)] = mask[tuple(where)]
    return out


def centre_slice(matrix: np.ndarray, axis: int) -> int:
    ijk = np.linalg.solve(matrix, np.append(CENTRE, 1.0))[:3]
    return int(round(ijk[2 - axis]))


def take(mask: np.ndarray, axis: int, indices) -> np.ndarray:
    return np.take(mask, list(indices), axis=axis)


def world_centroid(seg, sid):
    return segment_world_points(seg, sid).mean(axis=0)


def labelled_phantom():
    """A windowed phantom volume whose organ is labelled on its centre slice along axis 0.

    Returns (scene, volume, segmentation, segment id, labelled slice index).
    """
    scene = new_scene()
    image, truth = phantom(LPS_M, SHAPE, CENTRE, RADII)
    volume = add_volume(scene, image, LPS_M, window=(50.0, 900.0))
    s = centre_slice(LPS_M, 0)
    seg, (sid,) = add_segmentation(scene, volume, [("organ", one_slice(truth, 0, s), (1, 0, 0))])
    return scene, volume, seg, sid, s


def test_logic_path_streams_into_the_support_segmentation_and_commits(lite_backend):
    scene = new_scene()
    image, truth = phantom(LPS_M, SHAPE, CENTRE, RADII)
    volume = add_volume(scene, image, LPS_M, name="MR", window=(50.0, 900.0))
    s = centre_slice(LPS_M, 0)
    neighbour = np.zeros_like(truth)
    neighbour[0:3, 0:4, 0:4] = 1
    seg, (sid, nid) = add_segmentation(scene, volume, [("kidney", one_slice(truth, 0, s), (1.0, 0.0, 0.0)),
                                                        ("other", neighbour, (0.0, 1.0, 0.0))])
    before = snapshot(scene)
    events = []
    seg.GetSegmentation().AddObserver(slicer.vtkSegmentation.SourceRepresentationModified,
                                      lambda caller, event: events.append(event))
    built = []

    def build():  # the module passes a factory: the model is built on the worker thread
        built.append(threading.current_thread().name)
        return lite_backend

    run = run_on_nodes(build, volume, seg, sid, axis=0, support_slices=[s], output_segmentation=seg,
                       slice_range="around", margin=1)
    statuses = []
    status = run.start().wait(timeout=300, on_status=statuses.append)
    assert status.state == "finished", status.error
    assert built == ["SynPo-worker_0"] and status.stage == "segmenting with lite on cpu"
    assert [r.index for r in status.records] == [s - 1, s, s + 1]
    assert [r.support_index for r in status.records] == [s, -1, s]
    assert len(events) >= 3  # slices streamed in, then the whole result
    assert any(0 < st.done < st.total for st in statuses) and statuses[-1].done == 3
    result_id = run.writer.segment_id
    segment = seg.GetSegmentation().GetSegment(result_id)
    assert segment.GetName() == "kidney SynPo"
    assert np.allclose(segment.GetColor(), mrml.contrasting_color((1.0, 0.0, 0.0)))
    got = mrml.segment_array(seg, result_id, volume)
    assert not take(got, 0, [i for i in range(SHAPE[0]) if abs(i - s) > 1]).any()  # only the range
    d = dice(take(got, 0, [s - 1, s + 1]), take(truth, 0, [s - 1, s + 1]))
    print(f"logic path: Dice {d:.3f}")
    assert d >= DICE_FLOOR, d
    np.testing.assert_array_equal(take(got, 0, [s]), take(truth, 0, [s]))  # the labelled slice, as drawn
    ours = segment_world_points(seg, result_id)
    assert ellipsoid(ours, CENTRE, np.asarray(RADII) + 1.5).mean() > 0.95  # in the right place in RAS
    after = snapshot(scene)
    for key in ("nodes",):
        old = {n["id"]: n for n in before[key]}
        for n in after[key]:
            if n["class"] != "vtkMRMLSegmentationNode":
                assert n == old[n["id"]]  # the volume (voxels, geometry) and the rest are untouched
            else:
                kept = [x for x in n["segments"] if x["id"] != result_id]
                assert kept == old[n["id"]]["segments"]  # the support and its neighbour are untouched


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_support_on_each_axis_writes_a_new_node_on_the_query_grid(lite_backend, axis):
    scene = new_scene()
    image, truth = phantom(LPS_M, SHAPE, CENTRE, RADII)
    volume = add_volume(scene, image, LPS_M, name="CT", window=(50.0, 900.0))
    s = centre_slice(LPS_M, axis)
    seg, (sid,) = add_segmentation(scene, volume, [("organ", one_slice(truth, axis, s), (0.9, 0.5, 0.1))])
    before = snapshot(scene)
    run = run_on_nodes(lite_backend, volume, seg, sid, axis=axis, slice_range="custom", first=s, last=s + 1)
    status = run.start().wait(timeout=300)
    assert status.state == "finished", status.error
    out = run.writer.segmentation_node
    assert run.writer.created_node and out.GetName() == "CT SynPo"
    assert out.GetNodeReference(slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()) is volume
    rid = run.writer.segment_id
    assert np.allclose(out.GetSegmentation().GetSegment(rid).GetColor(), (0.9, 0.5, 0.1))
    got = mrml.segment_array(out, rid, volume)
    d = dice(take(got, axis, [s + 1]), take(truth, axis, [s + 1]))
    print(f"support on axis {axis}: Dice {d:.3f}")
    assert d >= DICE_FLOOR, (axis, d)
    # physical position of the segmented slice: its voxel centres lie on slice s + 1 in RAS
    pts = segment_world_points(out, rid)
    kji = np.linalg.solve(LPS_M, np.c_[pts, np.ones(len(pts))].T).T[:, :3][:, ::-1]
    assert set(np.round(kji[:, axis]).astype(int)) == {s, s + 1}
    assert snapshot(scene)["nodes"][:len(before["nodes"])] == before["nodes"]


def test_query_volume_in_another_orientation_gets_the_structure_where_it_is(lite_backend):
    scene = new_scene()
    s_image, s_truth = phantom(LPS_M, SHAPE, CENTRE, RADII, seed=1)
    support = add_volume(scene, s_image, LPS_M, name="support", window=(50.0, 900.0))
    # i = A, j = -S (flipped), k = -R. The structure sits off-centre in both in-plane
    # directions (a mirrored slice would miss it) at about the same relative place in the
    # field of view as in the support: the lite preset's location prior expects that.
    q_shape = (24, 15, 34)
    q_m = geometry(SAGITTAL, (0.9, 1.2, 1.1), (9.5, -14.0, 10.0))
    q_image, q_truth = phantom(q_m, q_shape, CENTRE, RADII, seed=2)
    query = add_volume(scene, q_image, q_m, name="query", window=(50.0, 900.0))
    s = centre_slice(LPS_M, 0)
    seg, (sid,) = add_segmentation(scene, support, [("organ", one_slice(s_truth, 0, s), (0.2, 0.6, 1.0))])
    before = snapshot(scene)
    # aligned axis 0 of the query is its j axis reversed (j runs to -S, the support's k to +S)
    j_centre = int(round(np.linalg.solve(q_m, np.append(CENTRE, 1.0))[1]))
    a_centre = q_shape[1] - 1 - j_centre
    run = run_on_nodes(lite_backend, support, seg, sid, axis=0, support_slices=[s], query_volume=query,
                       slice_range="custom", first=a_centre - 1, last=a_centre + 1)
    assert run.inputs.reorientation.perm[0] == 1 and run.inputs.reorientation.flip[0]
    status = run.start().wait(timeout=300)
    assert status.state == "finished", status.error
    out, rid = run.writer.segmentation_node, run.writer.segment_id
    got = mrml.segment_array(out, rid, query)
    js = [j_centre - 1, j_centre, j_centre + 1]
    assert not take(got, 1, [j for j in range(q_shape[1]) if j not in js]).any()
    d = dice(take(got, 1, js), take(q_truth, 1, js))
    print(f"query in another orientation: Dice {d:.3f}")
    assert d >= CROSS_DICE_FLOOR, d
    # in RAS: a mirrored or transposed slice would put the centroid centimetres away
    centroid = world_centroid(out, rid)
    expected = mrml.voxel_centers_ras(q_m, np.argwhere(take(q_truth, 1, js) > 0) + [0, js[0], 0]).mean(axis=0)
    print(f"query in another orientation: centroid off by {np.linalg.norm(centroid - expected):.2f} mm")
    assert np.linalg.norm(centroid - expected) < 2.0, (centroid, expected)  # mm
    assert snapshot(scene)["nodes"][:len(before["nodes"])] == before["nodes"]


def test_cancel_rolls_back_streamed_slices_and_runs_are_never_reentered(lite_backend):
    scene, volume, seg, sid, _ = labelled_phantom()
    before = snapshot(scene)
    run = run_on_nodes(lite_backend, volume, seg, sid, axis=0, output_segmentation=seg)
    run.start()
    second = run_on_nodes(lite_backend, volume, seg, sid, axis=0)
    with pytest.raises(RunInProgress):
        second.start()
    assert second.state == "new" and mrml.active_run() is run
    while len(run.records) < 2 and not run.finished:  # the support slice and one segmented slice
        run.poll()
    assert mrml.segment_array(seg, run.writer.segment_id, volume).any()  # streamed into the scene
    assert snapshot(scene) != before
    run.cancel()
    status = run.wait(timeout=120)
    assert status.state == "cancelled" and status.done < status.total
    assert snapshot(scene) == before
    assert mrml.active_run() is None


def test_failed_run_rolls_back_and_reports_the_error(lite_backend):
    scene, volume, seg, sid, _ = labelled_phantom()
    flat = add_volume(scene, np.full(SHAPE, 7.0, np.float32), LPS_M, name="flat")  # no display window
    before = snapshot(scene)
    run = run_on_nodes(lite_backend, volume, seg, sid, axis=0, query_volume=flat, output_segmentation=seg)
    status = run.start().wait(timeout=120)
    assert status.state == "failed"
    assert isinstance(status.error, ValueError) and "intensity window is empty" in str(status.error)
    assert snapshot(scene) == before and mrml.active_run() is None


def test_result_segment_deleted_mid_run_stops_cleanly(lite_backend):
    scene, volume, seg, sid, _ = labelled_phantom()
    before = snapshot(scene)
    run = run_on_nodes(lite_backend, volume, seg, sid, axis=0, output_segmentation=seg, slice_range="around",
                       margin=2)
    run.start()
    seg.GetSegmentation().RemoveSegment(run.writer.segment_id)  # the user deletes the result
    status = run.wait(timeout=120)
    assert status.state == "failed" and "was removed during the run" in str(status.error)
    assert snapshot(scene) == before and mrml.active_run() is None


def test_run_refuses_an_output_grid_that_is_not_the_query(lite_backend):
    scene = new_scene()
    image, truth = phantom(LPS_M, SHAPE, CENTRE, RADII)
    volume = add_volume(scene, image, LPS_M)
    other = add_volume(scene, image[:, :, :10].copy(), LPS_M, name="cropped")
    seg, (sid,) = add_segmentation(scene, volume, [("organ", one_slice(truth, 0, 7), (1, 0, 0))])
    inputs = mrml.read_inputs(volume, seg, sid, axis=0)
    with pytest.raises(mrml.MRMLInputError, match="write with the query volume as reference"):
        SegmentationRun(lite_backend, inputs, mrml.SegmentWriter(other, None))


def test_self_test_recipe_on_a_real_head_mri(lite_backend):
    """The steps of SynPoTest (SynPo.py) on Colin27 instead of MRHead, through the same path."""
    import SimpleITK as sitk

    from SynPoLib.scene import selftest
    from conftest import TEMPLATES

    image = sitk.ReadImage(str(TEMPLATES / "ch2.nii.gz"))
    array = sitk.GetArrayFromImage(image).astype(np.float32)
    lps = np.eye(4)
    lps[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3) * np.asarray(image.GetSpacing())[None, :]
    lps[:3, 3] = image.GetOrigin()
    ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # how Slicer shows an LPS file
    scene = new_scene()
    original = add_volume(scene, array, ras, name="Colin27", window=(0.0, 200.0))
    case = selftest.lesion_case(mrml.volume_array(original), mrml.ijk_to_world(original), axis=0)
    volume = add_volume(scene, case.image, ras, name="Colin27 with test lesion", window=(0.0, 200.0))
    seg, (sid,) = add_segmentation(scene, volume, [("lesion", case.support, (0.9, 0.6, 0.4))])
    before = snapshot(scene)
    run = run_on_nodes(lite_backend, volume, seg, sid, axis=0, support_slices=[case.slice],
                       slice_range="around", margin=selftest.MARGIN)
    status = run.start().wait(timeout=600)
    assert status.state == "finished", status.error
    out = run.writer.segmentation_node
    role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
    assert out.GetNodeReference(role) is volume
    got = mrml.segment_array(out, run.writer.segment_id, volume)
    d = dice(got[case.scored], case.truth[case.scored])
    print(f"self-test recipe on Colin27: Dice {d:.3f} over {len(case.scored)} slices")
    assert d >= SELFTEST_COLIN_FLOOR >= selftest.DICE_FLOOR, d
    near = list(range(case.slice - selftest.MARGIN, case.slice + selftest.MARGIN + 1))
    assert not np.delete(got, near, axis=0).any()
    assert len(status.records) == len(near)
    # in RAS, where the lesion was put
    truth_centroid = mrml.voxel_centers_ras(ras, np.argwhere(case.truth[near] > 0) + [near[0], 0, 0]).mean(axis=0)
    assert np.linalg.norm(world_centroid(out, run.writer.segment_id) - truth_centroid) < 1.5
    assert snapshot(scene)["nodes"][:len(before["nodes"])] == before["nodes"]  # inputs untouched


def test_slices_that_arrive_together_are_shown_with_one_display_update(lite_backend):
    scene, volume, seg, sid, s = labelled_phantom()
    events = []
    seg.GetSegmentation().AddObserver(slicer.vtkSegmentation.SourceRepresentationModified,
                                      lambda caller, event: events.append(event))
    run = run_on_nodes(lite_backend, volume, seg, sid, axis=0, output_segmentation=seg, slice_range="custom",
                       first=s, last=s + 2)
    run.start()
    while run._events.qsize() < 3:  # the support slice and two segmented ones, not yet applied
        time.sleep(0.05)
    events.clear()
    status = run.poll()
    assert status.done == 3 and len(events) == 1
    got = mrml.segment_array(seg, run.writer.segment_id, volume)
    assert all(take(got, 0, [i]).any() for i in (s, s + 1, s + 2))
    assert run.wait(timeout=60).state == "finished"
