"""Several segments in one run, and runs again after corrections, on MRML nodes (slicer-core,
real LiteMedSAM): one result segment each, one undo step restoring the scene exactly, the
corrected slices found in the scene, and the review list naming what the correction changed."""

from __future__ import annotations

import numpy as np
import pytest

import slicer
from slicer_scene import LPS, add_segmentation, add_volume, ellipsoid, geometry, new_scene, oriented, snapshot, \
    voxel_world

from SynPoLib import scene as mrml
from SynPoLib.metrics import dice
from SynPoLib.scene import (CHANGED_BY_CORRECTION, CORRECTED_BY_USER, corrected_slices, rerun_on_nodes, review_rows,
                            run_on_nodes)
from SynPoLib.volume.corrections import RECOMPUTED

SHAPE = (14, 22, 18)
CENTRE, RADII = (1.5, -2.0, 1.0), (5.0, 6.0, 4.0)
MATRIX = geometry(LPS, (1.0, 1.0, 1.5), (7.0, 10.0, -10.0))
#: as test_mrml_runs.py: LiteMedSAM on the bright ellipsoid within one volume         [G]
DICE_FLOOR = 0.75


def two_structures():
    """The phantom's bright ellipsoid and the dimmer one beside it, both labelled on one slice."""
    points = voxel_world(MATRIX, SHAPE)
    organ = ellipsoid(points, CENTRE, RADII)
    other_centre = np.asarray(CENTRE) + np.array([0.0, 2.2 * RADII[1], 0.0])
    other = ellipsoid(points, other_centre, np.asarray(RADII) * 0.6)
    rng = np.random.default_rng(0)
    image = (80.0 + 700.0 * organ + 300.0 * other + rng.normal(0.0, 25.0, organ.shape)).astype(np.float32)
    scene = new_scene()
    volume = add_volume(scene, image, MATRIX, name="MR", window=(50.0, 900.0))
    s = int(round(np.linalg.solve(MATRIX, np.append(CENTRE, 1.0))[2]))
    labelled = []
    for mask in (organ, other):
        one = np.zeros(SHAPE, np.uint8)
        one[s] = mask[s]
        labelled.append(one)
    seg, ids = add_segmentation(scene, volume, [("organ", labelled[0], (1.0, 0.0, 0.0)),
                                                ("other", labelled[1], (0.0, 0.0, 1.0))])
    return scene, volume, seg, ids, s, organ.astype(np.uint8), other.astype(np.uint8)


def user_edits(seg, segment_id, mask):
    """What the Segment Editor does to a segment: its voxels replaced, in its own layer."""
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    image = oriented(mask, MATRIX)
    assert logic.SetBinaryLabelmapToSegment(image, seg, segment_id, logic.MODE_REPLACE, image.GetExtent())


def test_several_segments_run_once_and_one_undo_takes_every_result_back(lite_backend):
    scene, volume, seg, (organ_id, other_id), s, organ, other = two_structures()
    before = snapshot(scene)
    encoded = lite_backend.encoder_calls.counts.get("sam", 0)
    run = run_on_nodes(lite_backend, volume, seg, [organ_id, other_id], axis=0, output_segmentation=seg,
                       slice_range="around", margin=2)
    status = run.start().wait(timeout=600)
    assert status.state == "finished", status.error
    assert lite_backend.encoder_calls.counts["sam"] - encoded == 5, "4 query slices + the support, once for both"
    results = {name: mrml.segment_array(seg, w.segment_id, volume) for name, w in run.writers.items()}
    names = {name: seg.GetSegmentation().GetSegment(w.segment_id).GetName() for name, w in run.writers.items()}
    assert names == {organ_id: "organ SynPo", other_id: "other SynPo"}
    near = [s - 2, s - 1, s + 1, s + 2]
    assert dice(results[organ_id][near], organ[near]) >= DICE_FLOOR
    # the dim one is 3 mm across and gone 3 mm away: found on the slices next to the labelled one
    assert results[other_id][[s - 1, s + 1]].any() and dice(results[other_id][s], other[s]) == 1.0
    assert not (results[organ_id] & results[other_id]).any()
    assert sorted(status.structures) == sorted([organ_id, other_id])
    rows = review_rows(status, names=names)
    assert [(r.index, r.segment) for r in rows][:2] == [(s - 2, organ_id), (s - 2, other_id)]
    assert all(r.flag.startswith(f"{names[r.segment]}: ") for r in rows if r.flag)
    run.undo()
    assert snapshot(scene) == before, "one undo step takes every result segment back"


@pytest.fixture
def first_run(lite_backend):
    scene, volume, seg, (organ_id, _), s, organ, _ = two_structures()
    run = run_on_nodes(lite_backend, volume, seg, organ_id, axis=0, output_segmentation=seg,
                       slice_range="around", margin=3)
    assert run.start().wait(timeout=600).state == "finished"
    return scene, volume, seg, run, s, organ


def test_run_again_finds_the_corrections_recomputes_between_them_and_is_one_undo_step(lite_backend, first_run):
    scene, volume, seg, run, s, organ = first_run
    rid = run.writer.segment_id
    with pytest.raises(mrml.MRMLInputError, match="no slice of the result was corrected"):
        rerun_on_nodes(lite_backend, run)
    first = mrml.segment_array(seg, rid, volume)
    fixed = first.copy()
    fixed[s + 2] = organ[s + 2]
    fixed[s + 2, :3] = 1  # a correction unlike anything the model drew: it must stay as drawn
    user_edits(seg, rid, fixed)
    assert corrected_slices(run) == {"": [s + 2]}
    before = snapshot(scene)
    encoded = lite_backend.encoder_calls.counts["sam"]
    again = rerun_on_nodes(lite_backend, run)
    status = again.start().wait(timeout=600)
    assert status.state == "finished", status.error
    recomputed = [r.index for r in status.records if RECOMPUTED in r.notes]
    assert recomputed == [s + 1, s + 3], "between the support and the correction, and past it to the range's end"
    assert lite_backend.encoder_calls.counts["sam"] - encoded == 2 + 2, "2 slices + the supports s and s + 2"
    now = mrml.segment_array(seg, rid, volume)
    np.testing.assert_array_equal(now[s + 2], fixed[s + 2], err_msg="the corrected slice is never changed")
    kept = [i for i in range(SHAPE[0]) if i not in (s + 1, s + 2, s + 3)]
    np.testing.assert_array_equal(now[kept], first[kept], err_msg="the rest is left as it was")
    assert status.corrected == {"": [s + 2]}
    changed = status.changed[""]
    assert set(changed) <= {s + 1, s + 3}
    flags = {r.index: r.flag for r in review_rows(status)}
    assert flags[s + 2] == CORRECTED_BY_USER
    assert all(flags[i].startswith(CHANGED_BY_CORRECTION) for i in changed)
    again.undo()
    assert snapshot(scene) == before, "one undo step restores the scene before the run again"
    np.testing.assert_array_equal(mrml.segment_array(seg, rid, volume), fixed)


def test_a_cancelled_run_again_puts_the_users_corrections_back(lite_backend, first_run):
    scene, volume, seg, run, s, organ = first_run
    rid = run.writer.segment_id
    fixed = mrml.segment_array(seg, rid, volume)
    fixed[s - 2] = 0  # the user erases the structure on s - 2: a barrier
    user_edits(seg, rid, fixed)
    before = snapshot(scene)
    again = rerun_on_nodes(lite_backend, run)
    again.start()
    again.cancel()
    status = again.wait(timeout=600)
    assert status.state == "cancelled"
    assert snapshot(scene) == before


def test_updater_restores_a_segment_on_its_own_layer_or_a_shared_one_exactly():
    """No model: a result segment on its own full-grid layer (as SynPo wrote it), and one the
    Segment Editor moved into a shared layer; an unchanged segment is never written."""
    scene, volume, seg, (organ_id, _), s, organ, other = two_structures()
    writer = mrml.SegmentWriter(volume, seg, name="organ SynPo")
    rid = writer.begin()
    writer.write_volume(organ)
    writer.commit()
    for edit_first in (False, True):
        if edit_first:
            user_edits(seg, rid, organ)  # the Segment Editor rewrites it: shared layer, cropped extent
        before = snapshot(scene)
        updater = mrml.SegmentUpdater(volume, seg, rid)
        updater.begin()
        updater.write_volume(organ)  # the same voxels: nothing is written
        assert snapshot(scene) == before
        changed = organ.copy()
        changed[s] = 0
        updater.write_volume(changed)
        assert not mrml.segment_array(seg, rid, volume)[s].any() and snapshot(scene) != before
        updater.commit()
        updater.undo()
        assert snapshot(scene) == before
