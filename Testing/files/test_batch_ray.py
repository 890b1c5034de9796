"""``synpo batch --engine ray`` on a real local Ray cluster: 2 CPU workers, the lite backend,
the four-volume cohort. Ray is a test dependency (``make test`` installs the ``ray``
extra): a missing Ray fails here, it never skips."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import ray

from SynPoLib.files import BatchRequest, run_batch
from SynPoLib.files.engine_ray import NAMESPACE

from conftest import BATCH_CASES, ROOT, batch_manifest, batch_shared

VALID = [name for name, _, _ in BATCH_CASES]


@pytest.fixture(scope="module")
def ray_cluster():
    """A Ray cluster on this machine with 2 CPUs, for the module."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def leftovers(folder):
    return [p for p in folder.rglob(".*") if p.is_file()]


def states(out):
    """case -> state, from the status records on disk."""
    return {p.parent.name: json.loads(p.read_text())["state"] for p in (out / "cases").glob("*/status.json")}


def test_a_killed_worker_reruns_its_case_and_corrupt_cases_fail_alone(ray_cluster, batch_cohort, tmp_path):
    manifest = batch_manifest(tmp_path / "m.csv", batch_cohort,
                              extra=[("broken", batch_cohort["broken"]), ("blank", batch_cohort["blank"])])
    out = tmp_path / "out"
    killed = {}

    def kill_a_busy_worker(event):
        # after the first case (colin_a: one slice to segment), the other actor is in the
        # middle of colin_b (two slices): end its process as a crash would
        if event.record is None or killed:
            return
        case, name = sorted(event.running.items())[0]
        actor = ray.get_actor(name, namespace=NAMESPACE)
        killed.update(case=case, pid=ray.get(actor.describe.remote())["pid"],
                      record_existed=(out / "cases" / case / "status.json").exists())
        ray.kill(actor, no_restart=False)

    outcome = run_batch(BatchRequest(manifest=str(manifest), out=str(out), shared=batch_shared(batch_cohort),
                                     engine="ray", workers=2, retries=2), progress=kill_a_busy_worker)
    assert killed and not killed["record_existed"], "the worker must be killed while its case runs"
    assert sorted(outcome.done) == sorted(VALID)
    record = outcome.records[killed["case"]]
    assert record["state"] == "done"
    assert record["worker"]["restarted"] is True and record["worker"]["pid"] != killed["pid"]  # run again
    # no duplicates, no partial files: each case once in the summary, its outputs as recorded
    assert len(outcome.ran) == len(set(outcome.ran))
    with open(out / "summary.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(r["case"] for r in rows) == sorted(VALID + ["blank", "broken"])
    assert not leftovers(out)
    for name in VALID:
        files = sorted(p.name for p in (out / "cases" / name).iterdir())
        assert files == sorted([f"{name}.png", f"{name}.records.json", f"{name}.seg.nrrd", "status.json"])
    # the corrupt cases fail alone, each with its reason in the summary
    by_case = {r["case"]: r for r in rows}
    assert by_case["broken"]["status"] == "failed" and "ends early" in by_case["broken"]["error"]
    assert by_case["blank"]["status"] == "failed" and "no voxel holds a finite value" in by_case["blank"]["error"]
    assert outcome.workers == 2


def test_an_interrupted_driver_resumes_with_only_the_unfinished_cases(ray_cluster, batch_cohort, tmp_path):
    manifest = batch_manifest(tmp_path / "m.csv", batch_cohort)
    out = tmp_path / "out"
    shared = batch_shared(batch_cohort)
    command = [sys.executable, "-m", "SynPoLib", "batch", str(manifest), "--out", str(out),
               "--support", shared["support"], "--support-mask", shared["support_mask"], "--support-slice", "0",
               "--label", "77", "--engine", "ray", "--address", ray_cluster, "--workers", "2", "--quiet"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    # its own session, as a terminal's foreground job: Ctrl-C reaches every process of it
    driver = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 400
        while "done" not in states(out).values():
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no case finished in time"
            time.sleep(0.2)
        os.killpg(driver.pid, signal.SIGINT)
        stdout, stderr = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
    assert driver.returncode == 130, stderr
    assert "the same command resumes" in stderr
    assert not leftovers(out)
    finished = sorted(n for n, s in states(out).items() if s == "done")
    assert 1 <= len(finished) < len(VALID)
    resumed = run_batch(BatchRequest(manifest=str(manifest), out=str(out), shared=shared, engine="ray", workers=2))
    assert sorted(resumed.skipped) == finished
    assert sorted(resumed.ran) == sorted(set(VALID) - set(finished))
    assert sorted(resumed.done) == sorted(VALID)


def test_more_workers_than_the_cluster_holds_is_refused(ray_cluster, batch_cohort, tmp_path):
    """An actor Ray cannot place would hold its case forever: the batch says so instead."""
    from SynPoLib.errors import InputError

    manifest = batch_manifest(tmp_path / "m.csv", batch_cohort)
    request = BatchRequest(manifest=str(manifest), out=str(tmp_path / "out"), shared=batch_shared(batch_cohort),
                           engine="ray", workers=3)
    with pytest.raises(InputError, match=r"--workers 3: the Ray cluster has room for 2 worker\(s\) of 1 CPU"):
        run_batch(request)
    with pytest.raises(InputError, match="--cpus-per-worker 4: the Ray cluster has 2 CPU"):
        run_batch(BatchRequest(**{**request.__dict__, "workers": None, "cpus_per_worker": 4}))
    assert not list((tmp_path / "out").glob("cases/*/status.json"))


def test_workers_that_cannot_start_stop_the_batch_with_the_reason(ray_cluster, batch_cohort, tmp_path):
    """A device the cluster lacks: every actor fails to load its models, no case runs, and
    the reason comes back as one line (the command line's exit code 2)."""
    from SynPoLib.errors import InputError

    manifest = batch_manifest(tmp_path / "m.csv", batch_cohort)
    request = BatchRequest(manifest=str(manifest), out=str(tmp_path / "out"),
                           shared=batch_shared(batch_cohort, device="cuda"), engine="ray", workers=2,
                           gpus_per_worker=0)
    with pytest.raises(InputError, match="no Ray worker could start: device 'cuda' requested but CUDA is not "
                                         "available here"):
        run_batch(request)
    assert not list((tmp_path / "out").glob("cases/*/status.json"))   # not one case recorded as failed
    with open(tmp_path / "out" / "summary.csv") as handle:
        assert {r["status"] for r in csv.DictReader(handle)} == {"pending"}
