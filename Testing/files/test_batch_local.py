"""``run_batch`` with the local engine on real volumes and the real LiteMedSAM.

One batch of the four-volume cohort (plus a damaged download and a volume with no
finite voxel) runs once for the module; the tests read what it wrote, then change
inputs, outputs and records and check that a re-run does exactly the unfinished work.
The tests run in file order (the resume test changes the folder the others read).
"""

import csv
import dataclasses
import hashlib
import json
import os
import shutil
import threading

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from SynPoLib.errors import Cancelled
from SynPoLib.files import BatchRequest, batch_results, run_batch

from conftest import BATCH_CASES, batch_manifest, batch_shared

VALID = [name for name, _, _ in BATCH_CASES]
#: Dice of the lite backend on the Colin27 crops, measured on this cohort (2 slices, thalamus
#: from one labelled slice): colin_a 0.871 (its 1 unlabelled slice), colin_b 0.794
DICE_FLOORS = {"colin_a": 0.84, "colin_b": 0.76}


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def leftovers(folder):
    """Temporary files anywhere under a batch folder (what a half-written output leaves)."""
    return [p for p in folder.rglob(".*") if p.is_file()]


@pytest.fixture(scope="module")
def local_run(batch_cohort, tmp_path_factory):
    folder = tmp_path_factory.mktemp("local_batch")
    mni_b = folder / "mni_b.nii.gz"  # a copy: the resume test changes it
    shutil.copy(batch_cohort["mni_b"], mni_b)
    cohort = dict(batch_cohort, mni_b=mni_b)
    manifest = batch_manifest(folder / "cohort.csv", cohort,
                              extra=[("broken", batch_cohort["broken"]), ("blank", batch_cohort["blank"])])
    request = BatchRequest(manifest=str(manifest), out=str(folder / "out"), shared=batch_shared(cohort))
    events = []
    outcome = run_batch(request, progress=events.append)
    return {"folder": folder, "out": folder / "out", "request": request, "outcome": outcome, "events": events,
            "cohort": cohort}


def test_every_case_done_and_the_broken_ones_fail_alone(local_run):
    outcome, out = local_run["outcome"], local_run["out"]
    assert sorted(outcome.done) == sorted(VALID)
    assert sorted(outcome.failed) == ["blank", "broken"]
    assert outcome.invalid == ["broken"]          # refused by the checks before any work
    assert "ends early" in outcome.records["broken"]["error"]
    assert "no voxel holds a finite value" in outcome.records["blank"]["error"]  # found by its worker
    with open(out / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["case"] for r in rows[:2]} == {"blank", "broken"}   # worst first: the failed ones
    assert all(r["status"] == "done" for r in rows[2:]) and len(rows) == 6
    by_case = {r["case"]: r for r in rows}
    assert "ends early" in by_case["broken"]["error"]
    for name, floor in DICE_FLOORS.items():
        assert float(by_case[name]["dice"]) >= floor, (name, by_case[name]["dice"])
    assert by_case["mni_a"]["dice"] == ""                          # no reference, no Dice
    confidences = [float(r["confidence_mean"]) for r in rows[2:]]
    flagged = [int(r["flagged"]) / int(r["slices"]) for r in rows[2:]]
    assert list(zip([-f for f in flagged], confidences)) == sorted(zip([-f for f in flagged], confidences))
    report = (out / "report.md").read_text()
    for name in VALID:
        image = out / "cases" / name / f"{name}.png"
        assert image.is_file() and f"]({image.relative_to(out)})" in report
        assert sitk.ReadImage(str(image)).GetSize()[0] <= 1200   # a small montage
    assert "no voxel holds a finite value" in report
    assert not leftovers(out)


def test_status_records_hold_digests_fingerprint_timings_and_qc(local_run):
    out, cohort = local_run["out"], local_run["cohort"]
    for name, query_key, ref_key in BATCH_CASES:
        record = json.loads((out / "cases" / name / "status.json").read_text())
        assert record["state"] == "done" and record["error"] is None
        assert record["inputs"]["query"]["sha256"] == sha256(cohort[query_key])
        assert record["inputs"]["support_mask"]["sha256"] == sha256(cohort["aal_a"])
        assert ("reference" in record["inputs"]) == (ref_key is not None)
        assert len(record["fingerprint"]) == 20
        for file_name, digest in record["outputs"].items():
            assert sha256(out / "cases" / name / file_name) == digest
        assert set(record["outputs"]) == {f"{name}.seg.nrrd", f"{name}.records.json", f"{name}.png"}
        seconds = record["seconds"]
        assert seconds["total"] >= seconds["segment"] > 0
        # the in-process engine reuses this process's models (0 s when an earlier test built them)
        assert record["worker"]["name"] == "local" and record["worker"]["load_seconds"] >= 0
        assert record["worker"]["pid"] == os.getpid()
        assert isinstance(record["flags"], dict) and 0 < record["confidence_mean"] < 2
        # the result lies on its query's grid (origin and spacing from the query file)
        header = nrrd.read_header(str(out / "cases" / name / f"{name}.seg.nrrd"))
        query = sitk.ReadImage(str(cohort[query_key]))
        lps = np.array(query.GetOrigin())
        assert np.allclose(header["space origin"], lps, atol=1e-4)
        assert np.allclose(np.abs(np.diag(header["space directions"])), query.GetSpacing(), atol=1e-5)


def test_progress_reports_cases_done_and_time_left(local_run):
    events = local_run["events"]
    assert events[0].record is None and events[0].total == 5   # every runnable case; 'broken' was refused
    assert [e.finished for e in events[1:]] == [1, 2, 3, 4, 5]
    assert events[-1].done == 4 and events[-1].failed == 1
    assert all(np.isfinite(e.remaining_seconds) for e in events[1:])
    assert events[-1].remaining_seconds == 0


def test_a_rerun_does_only_the_unfinished_work(local_run):
    out, request, cohort = local_run["out"], local_run["request"], local_run["cohort"]
    again = run_batch(request)
    assert sorted(again.skipped) == sorted(VALID)
    assert again.ran == ["blank"]                                 # failed before: tried again
    # an input changed, an output truncated, a case killed mid-write (no record, a temp file)
    image = sitk.ReadImage(str(cohort["mni_b"]))
    sitk.WriteImage(image * 1.01, str(cohort["mni_b"]))
    seg = out / "cases" / "colin_b" / "colin_b.seg.nrrd"
    seg.write_bytes(seg.read_bytes()[:-20])
    (out / "cases" / "mni_a" / "status.json").unlink()
    litter = out / "cases" / "mni_a" / ".mni_a.seg.nrrd.x1y2z3.seg.nrrd"
    litter.write_bytes(b"half")
    third = run_batch(request)
    assert sorted(third.ran) == sorted(["blank", "colin_b", "mni_a", "mni_b"])
    assert third.skipped == ["colin_a"]
    assert sorted(third.done) == sorted(VALID)
    assert not litter.exists() and not leftovers(out)
    assert [r["case"] for r in batch_results(out)][:1] == ["blank"]


def test_cancel_keeps_finished_cases_and_the_rerun_does_the_rest(batch_cohort, tmp_path):
    manifest = batch_manifest(tmp_path / "m.csv", batch_cohort)
    request = BatchRequest(manifest=str(manifest), out=str(tmp_path / "out"), shared=batch_shared(batch_cohort),
                           workers=2)
    stop = threading.Event()

    def stop_after_first(event):
        if event.record is not None:
            stop.set()

    with pytest.raises(Cancelled, match="run it again to resume"):
        run_batch(request, progress=stop_after_first, cancel=stop)
    finished = sorted(p.parent.name for p in (tmp_path / "out" / "cases").glob("*/status.json"))
    assert 1 <= len(finished) < len(VALID)
    assert not leftovers(tmp_path / "out")
    with open(tmp_path / "out" / "summary.csv") as handle:
        states = {r["case"]: r["status"] for r in csv.DictReader(handle)}
    assert {n for n, s in states.items() if s == "done"} == set(finished)
    assert {n for n, s in states.items() if s == "pending"} == set(VALID) - set(finished)
    rerun = run_batch(dataclasses.replace(request, workers=1))
    assert sorted(rerun.skipped) == finished
    assert sorted(rerun.ran) == sorted(set(VALID) - set(finished))
    assert sorted(rerun.done) == sorted(VALID)



def test_an_unexpected_error_in_a_case_is_recorded_not_raised(batch_cohort, tmp_path):
    """Every error a user can fix is an InputError; anything else (a bug, a device failing, a
    caller's callback raising) is recorded against the case too, with its traceback."""
    from SynPoLib.files.case import make_job, run_case
    from SynPoLib.files.manifest import read_manifest

    (case,) = read_manifest([{"query": str(batch_cohort["mni_a"]), "output": "mni_a"}],
                            {k: v for k, v in batch_shared(batch_cohort).items() if k != "backend"})
    job, problem = make_job(case, {"backend": "lite"}, tmp_path / "out")
    assert problem is None

    def failing_callback():
        raise RuntimeError("the caller's stop check broke")

    record = run_case(job, should_stop=failing_callback)
    assert record["state"] == "failed"
    assert record["error"] == "RuntimeError: the caller's stop check broke"
    stored = json.loads((tmp_path / "out" / "cases" / "mni_a" / "status.json").read_text())
    assert stored["error"] == record["error"] and "Traceback" in stored["traceback"]
    assert sorted(p.name for p in (tmp_path / "out" / "cases" / "mni_a").iterdir()) == ["status.json"]
