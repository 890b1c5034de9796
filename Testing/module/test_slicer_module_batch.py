"""The module's Logic runs a cohort (SynPoLib.files.run_batch) and loads its results into the
scene, headless (SynPo/SynPo.py unchanged, real MRML, the real LiteMedSAM)."""

from __future__ import annotations

import sys
import threading

import numpy as np
import pytest

import slicer  # slicer-core: a missing one fails, never skips
import slicer_headless

from SynPoLib import scene as mrml
from SynPoLib.files import read_manifest

from conftest import batch_manifest, batch_shared


@pytest.fixture(scope="module")
def session():
    s = slicer_headless.Session().install()
    s.load_module()
    yield s
    s.uninstall()


def test_logic_batch_then_load_results_worst_first(session, batch_cohort, tmp_path):
    session.new_scene()
    logic = sys.modules["SynPo"].SynPoLogic()
    manifest = batch_manifest(tmp_path / "m.csv", batch_cohort, cases=[("colin_a", "colin_a", "aal_a")],
                              extra=[("blank", batch_cohort["blank"])])
    ticks = []
    events = []
    timer_thread = threading.main_thread()

    def progress(event):
        events.append(event)
        ticks.append(threading.current_thread() is not timer_thread)  # the work runs off the GUI thread

    outcome = logic.batch(str(manifest), tmp_path / "out", shared=batch_shared(batch_cohort), progress=progress)
    assert outcome.done == ["colin_a"] and outcome.failed == ["blank"]
    assert events and all(ticks)
    assert not [t for t in threading.enumerate() if t.name == "SynPo batch"]
    pairs = logic.loadBatchResults(tmp_path / "out")
    ((volume, segmentation),) = pairs                      # only finished cases are loaded
    assert volume.GetName() == "colin_a" and slicer.mrmlScene.IsNodePresent(segmentation)
    (segment_id, _), = mrml.segment_names(segmentation)
    mask = mrml.segment_array(segmentation, segment_id, volume)
    record = outcome.records["colin_a"]
    assert mask.sum() > 100 and mask.shape == tuple(reversed(volume.GetImageData().GetDimensions()))
    assert record["painted"] == 1                           # the one unlabelled slice of colin_a
    # what was loaded is the query the manifest named
    (case,) = [c for c in read_manifest(str(manifest), {"support_mask": "x", "support_slice": [0]})
               if c.name == "colin_a"]
    assert volume.GetStorageNode().GetFileName() == case.query
    assert np.isfinite(mrml.volume_array(volume)).all()
