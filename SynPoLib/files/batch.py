"""A cohort from one example: every case of a manifest, resumable, on one machine or on Ray.

:func:`run_batch` is what ``synpo batch`` does, callable from Python and from Slicer's
Python console with a :class:`BatchRequest`::

    from SynPoLib.files import BatchRequest, run_batch
    outcome = run_batch(BatchRequest(manifest="cohort.csv", out="results",
                                     shared={"support_mask": "atlas.nii.gz", "support_slice": [81], "label": 77}))
    print(outcome.report)            # results/report.md, worst case first

The output folder holds ``cases/<name>/`` per case (the segmentation, its per-slice
records, a small montage and ``status.json``), ``summary.csv`` and ``report.md``.
Running the same batch again resumes it: cases finished with the same inputs and
configuration are skipped, failed and unfinished ones run (:mod:`.status`).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Union

from ..errors import Cancelled, InputError
from .case import CaseJob, make_job, record_failure
from .manifest import SHARED_FIELDS, Source, read_manifest
from .segment import SegmentRequest
from .status import finished, input_digests, read_status
from .summary import write_summary

ENGINES = ("local", "ray")
#: SegmentRequest fields the batch sets itself for each case (not shared options)
PER_CASE = frozenset({"query", "support", "support_mask", "support_slice", "label", "axis", "slice_range",
                      "reference", "reference_label", "out", "labelmap", "png", "records", "confidence_png"})
#: the manifest's names for SegmentRequest fields that are spelled otherwise there
MANIFEST_NAMES = {"slice_range": "range"}


@dataclass
class BatchRequest:
    """One ``synpo batch`` run.

    ``shared`` holds :class:`~SynPoLib.files.SegmentRequest` fields for every case: the
    shared support (``support``, ``support_mask``, ``support_slice``, ``label``,
    ``axis``, ``slice_range``, ``reference_label``: a manifest row's own value wins) and
    the method's options (``backend``, ``device``, ``config``, ``set``, ``window``,
    ``mode``, ...). ``manifest`` is a ``.csv``/``.json`` file or a list of row dicts.
    """

    manifest: Source
    out: str
    shared: Dict[str, Any] = field(default_factory=dict)
    #: "local" (this machine) or "ray"
    engine: str = "local"
    #: local: worker processes (1 = in this process); ray: actors (None = one per GPU,
    #: or one per ``cpus_per_worker`` cores without GPUs)
    workers: Optional[int] = None
    #: ray: an existing cluster ("auto", "ray://host:10001", ...); None starts one here
    address: Optional[str] = None
    #: threads (local) or Ray CPUs per worker; None: local, the cores shared out; ray, 1
    cpus_per_worker: Optional[float] = None
    #: ray: GPUs per actor (0.5: two actors share a GPU); None = 1 when the cluster has GPUs
    gpus_per_worker: Optional[float] = None
    #: times a case is sent again when its worker dies under it
    retries: int = 2
    #: refuse to start when any row is invalid (default: invalid rows fail alone)
    strict: bool = False
    #: also write each case's mask as ``<name>.labelmap.nii.gz``
    labelmaps: bool = False


@dataclass
class BatchProgress:
    """Sent after each case finishes (and once at the start, with ``record`` None)."""

    total: int
    done: int
    failed: int
    skipped: int
    elapsed: float
    record: Optional[dict]
    #: case name -> the worker running it now
    running: Dict[str, str]

    @property
    def finished(self) -> int:
        return self.done + self.failed

    @property
    def remaining_seconds(self) -> float:
        """Time left at the pace so far (cases run in parallel count once each)."""
        if self.finished == 0:
            return float("nan")
        return self.elapsed / self.finished * (self.total - self.finished)


@dataclass
class BatchOutcome:
    """What a batch run did; every case's record is also on disk."""

    out: str
    #: every case of the manifest, in manifest order: its status record (None: not run yet)
    records: Dict[str, Optional[dict]]
    ran: List[str]
    skipped: List[str]
    failed: List[str]
    invalid: List[str]
    seconds: float
    engine: str
    workers: int
    summary: str
    report: str
    cancelled: bool = False
    notes: List[str] = field(default_factory=list)

    @property
    def done(self) -> List[str]:
        return [n for n, r in self.records.items() if r and r.get("state") == "done"]

    def report_lines(self) -> List[str]:
        total = len(self.records)
        pending = [n for n, r in self.records.items() if not r or r.get("state") not in ("done", "failed")]
        lines = [f"{len(self.ran)} case(s) run in {self.seconds:.1f} s with the {self.engine} engine "
                 f"({self.workers} worker(s)); {len(self.skipped)} already finished and skipped"]
        lines.append(f"{len(self.done)} of {total} done, {total - len(self.done) - len(pending)} failed"
                     + (f", {len(pending)} not finished (run the same command again to resume)" if pending else ""))
        for name in self.failed:
            rec = self.records.get(name) or {}
            lines.append(f"failed: {name}: {rec.get('error')}")
        lines.extend(self.notes)
        lines.append(f"wrote {self.summary} and {self.report}")
        return lines


Cancel = Union[threading.Event, Callable[[], bool], None]


def run_batch(request: BatchRequest, progress: Optional[Callable[[BatchProgress], None]] = None,
              cancel: Cancel = None, on_actors: Optional[Callable[[list], None]] = None) -> BatchOutcome:
    """Check the whole manifest, run the unfinished cases, write the summary and report.

    ``progress`` gets a :class:`BatchProgress` after each case. ``cancel`` (an Event or
    a callable) stops the batch at the next slice of each running case: the finished
    cases are kept, the summary is written, and :class:`~SynPoLib.errors.Cancelled`
    is raised; Ctrl-C does the same and raises ``KeyboardInterrupt``. A second run of
    the same request resumes. ``on_actors`` (Ray) receives the actors' names.
    """
    started = time.perf_counter()
    jobs, invalid = prepare(request)
    with batch_lock(Path(request.out)):
        return _run_prepared(request, jobs, invalid, started, progress, cancel, on_actors)


@contextmanager
def batch_lock(out: Path) -> Iterator[None]:
    """Hold ``out/batch.lock`` for the run: two drivers on one folder would do cases twice."""
    out.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; one driver per folder is the user's care
        yield
        return
    handle = open(out / "batch.lock", "a+")
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise InputError(f"another synpo batch ({holder}) is writing into {out}: wait for it to end, "
                             "or choose another --out") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        handle.close()  # closing releases the lock


def _run_prepared(request: BatchRequest, jobs: List[CaseJob], invalid: Dict[str, str], started: float,
                  progress, cancel: Cancel, on_actors) -> BatchOutcome:
    out = Path(request.out)
    records: Dict[str, Optional[dict]] = {}
    todo: List[CaseJob] = []
    skipped: List[str] = []
    for job in jobs:
        record = read_status(job.case_dir)
        if job.name in invalid:
            records[job.name] = record_failure(job, invalid[job.name])
            continue
        done, _why = finished(record, input_digests(job.case.inputs), job.fingerprint, job.case_dir)
        records[job.name] = record
        if done:
            skipped.append(job.name)
        else:
            todo.append(job)

    should_stop = _stop_check(cancel)
    ran: List[str] = []
    running: Dict[str, str] = {}
    counts = {"done": 0, "failed": 0}
    lock = threading.Lock()

    def emit(record: Optional[dict]) -> None:
        if progress is not None:
            progress(BatchProgress(total=len(todo), done=counts["done"], failed=counts["failed"],
                                   skipped=len(skipped), elapsed=time.perf_counter() - started, record=record,
                                   running=dict(running)))

    def on_start(job: CaseJob, worker: str) -> None:
        with lock:
            running[job.name] = worker

    def on_result(record: dict) -> None:
        with lock:
            name = record["case"]
            running.pop(name, None)
            if record.get("state") == "cancelled":
                return  # not stored: the next run does it
            records[name] = record
            ran.append(name)
            counts["done" if record.get("state") == "done" else "failed"] += 1
        emit(record)

    emit(None)
    report = None
    interrupted: Optional[BaseException] = None
    try:
        report = _engine(request, todo, on_start, on_result, should_stop, on_actors)
    except KeyboardInterrupt as exc:
        interrupted = exc
    finally:
        for job in jobs:  # what another process may have finished meanwhile, and the truth on disk
            records[job.name] = read_status(job.case_dir) if job.name not in ran else records[job.name]
        summary, report_md = write_summary(out, [(job.case, records[job.name]) for job in jobs],
                                           title=f"SynPo batch: {Path(str(request.manifest)).name}"
                                           if isinstance(request.manifest, (str, os.PathLike)) else "SynPo batch")
    cancelled = interrupted is not None or (should_stop() and len(ran) + len(skipped) < len(jobs) - len(invalid))
    outcome = BatchOutcome(
        out=str(out), records=records, ran=ran, skipped=skipped,
        failed=[n for n in ran if (records.get(n) or {}).get("state") == "failed"] + sorted(invalid),
        invalid=sorted(invalid), seconds=time.perf_counter() - started, engine=request.engine,
        workers=report.workers if report else 0, summary=str(summary), report=str(report_md),
        cancelled=cancelled, notes=list(report.notes) if report else [])
    if interrupted is not None:
        raise interrupted
    if cancelled:
        raise Cancelled(f"batch cancelled: {len(outcome.done)} of {len(jobs)} cases done; "
                        "run it again to resume")
    return outcome


def prepare(request: BatchRequest):
    """(every case's job, case name -> why it is invalid): all checks before any work.

    Problems of the whole batch (the manifest, the shared options, the output folder)
    raise :class:`~SynPoLib.errors.InputError`; a row whose own inputs are wrong is
    returned as invalid (it fails alone), unless ``strict`` or every row is wrong.
    """
    if request.engine not in ENGINES:
        raise InputError(f"unknown engine {request.engine!r}; choose from {', '.join(ENGINES)}")
    if request.workers is not None and request.workers < 1:
        raise InputError(f"--workers must be at least 1, got {request.workers}")
    if request.engine != "ray":
        ray_only = (("--address", request.address), ("--gpus-per-worker", request.gpus_per_worker))
        given = [flag for flag, value in ray_only if value is not None]
        if given:
            raise InputError(f"{', '.join(given)} apply to --engine ray")
    if request.retries < 0:
        raise InputError(f"--retries must be 0 or more, got {request.retries}")
    if request.cpus_per_worker is not None and request.cpus_per_worker <= 0:
        raise InputError(f"--cpus-per-worker must be positive, got {request.cpus_per_worker}")
    if request.gpus_per_worker is not None and request.gpus_per_worker < 0:
        raise InputError(f"--gpus-per-worker must be 0 or more, got {request.gpus_per_worker}")
    known = {f.name for f in dataclasses.fields(SegmentRequest)}
    unknown = sorted(set(request.shared) - known)
    if unknown:
        raise InputError(f"unknown shared option(s) {', '.join(unknown)}; known: {', '.join(sorted(known - PER_CASE))}")
    row_defaults = {MANIFEST_NAMES.get(k, k): v for k, v in request.shared.items() if k in PER_CASE}
    own = sorted(k for k in row_defaults if k not in SHARED_FIELDS and row_defaults[k] is not None)
    if own:
        raise InputError(f"{', '.join(own)} cannot be shared: each case has its own (the manifest's rows, "
                         "and the folder given as --out)")
    row_defaults = {k: v for k, v in row_defaults.items() if k in SHARED_FIELDS}
    options = {k: v for k, v in request.shared.items() if k not in PER_CASE}
    cases = read_manifest(request.manifest, row_defaults)
    out = Path(request.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out must be a folder, got the file {out}")
    jobs, invalid = [], {}
    for case in cases:
        job, problem = make_job(case, options, out, labelmap=request.labelmaps)
        jobs.append(job)
        if problem:
            invalid[job.name] = problem
    _check_outputs_apart(jobs)
    if invalid and (request.strict or len(invalid) == len(jobs)):
        name, problem = next(iter(invalid.items()))
        job = next(j for j in jobs if j.name == name)
        more = f" (and {len(invalid) - 1} more row(s))" if len(invalid) > 1 else ""
        raise InputError(f"manifest row {job.case.row} ({name}): {problem}{more}")
    return jobs, invalid


def _check_outputs_apart(jobs: Sequence[CaseJob]) -> None:
    """No case may write where any case reads (a cohort's scans are never overwritten)."""
    inputs = {}
    for job in jobs:
        for role, path in job.case.inputs.items():
            inputs.setdefault(os.path.realpath(path), (job, role))
    for job in jobs:
        for path in job.request.outputs:
            hit = inputs.get(os.path.realpath(path))
            if hit:
                other, role = hit
                raise InputError(f"manifest row {job.case.row} ({job.name}) would write {path}, the {role} of "
                                 f"row {other.case.row}: choose another --out folder")


def _stop_check(cancel: Cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event) or hasattr(cancel, "is_set"):
        return cancel.is_set
    return cancel


def _engine(request: BatchRequest, jobs, on_start, on_result, should_stop, on_actors):
    if request.engine == "ray":
        from .engine_ray import run_ray

        return run_ray(jobs, on_start, on_result, should_stop, workers=request.workers, address=request.address,
                       cpus_per_worker=request.cpus_per_worker or 1.0, gpus_per_worker=request.gpus_per_worker,
                       retries=request.retries, on_actors=on_actors)
    from .engine_local import run_pool, run_sequential

    threads = max(1, int(request.cpus_per_worker)) if request.cpus_per_worker else None
    if (request.workers or 1) > 1 and len(jobs) > 1:
        return run_pool(jobs, min(request.workers, len(jobs)), on_start, on_result, should_stop,
                        retries=request.retries, threads=threads)
    return run_sequential(jobs, on_start, on_result, should_stop, threads=threads)


def batch_results(out: os.PathLike) -> List[dict]:
    """The status records in a batch's output folder, worst first (what the report shows)."""
    from .summary import rank_records

    folder = Path(out) / "cases"
    records = [read_status(p) for p in sorted(folder.iterdir()) if p.is_dir()] if folder.is_dir() else []
    return rank_records([r for r in records if r])


__all__ = ["BatchOutcome", "BatchProgress", "BatchRequest", "ENGINES", "batch_results", "prepare", "run_batch"]
