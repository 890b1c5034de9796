"""One case of a batch, as a worker runs it: segment, picture, status record.

:func:`run_case` is the unit every engine schedules (in this process, in a worker
process, or in a Ray actor): it never raises for a problem of the case itself (the
record says ``failed`` and why), so one bad scan never stops the others. The models
come from :func:`SynPoLib.backends.create_backend`, which builds them once per
process: a worker pays for loading once, not per case.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from ..errors import Cancelled, InputError
from .manifest import Case
from .segment import SegmentRequest, segment_files
from .status import (STATUS_VERSION, input_digests, output_digests, remove_partial_files, write_status)

#: panels in a case's review montage: enough to see the worst slices and the shape   [G]
MONTAGE_PANELS = 4


@dataclass(frozen=True)
class CaseJob:
    """Everything a worker needs for one case (picklable: it travels to other processes)."""

    case: Case
    request: SegmentRequest
    case_dir: str
    fingerprint: str

    @property
    def name(self) -> str:
        return self.case.name


def case_outputs(case_dir: os.PathLike, name: str, labelmap: bool = False) -> Dict[str, str]:
    """The files a case writes in its folder, by role."""
    folder = Path(case_dir)
    out = {"segmentation": str(folder / f"{name}.seg.nrrd"), "records": str(folder / f"{name}.records.json"),
           "montage": str(folder / f"{name}.png")}
    if labelmap:
        out["labelmap"] = str(folder / f"{name}.labelmap.nii.gz")
    return out


def make_job(case: Case, shared: dict, out_dir: os.PathLike,
             labelmap: bool = False) -> Tuple[CaseJob, Optional[str]]:
    """The case's job (the shared options, the row's inputs, its outputs), and why it
    cannot run (None when it can): ``synpo segment``'s own checks
    (:func:`SynPoLib.files.check_request`), made before any case runs."""
    from .status import config_fingerprint
    from .validate import check_request

    case_dir = Path(out_dir) / "cases" / case.name
    outputs = case_outputs(case_dir, case.name, labelmap)
    request = SegmentRequest(**{
        **shared,
        "query": case.query, "support": case.support, "support_mask": case.support_mask,
        "support_slice": list(case.support_slice), "label": case.label, "axis": case.axis,
        "slice_range": case.slice_range, "reference": case.reference, "reference_label": case.reference_label,
        "out": outputs["segmentation"], "records": outputs["records"], "labelmap": outputs.get("labelmap"),
        # the montage is the batch's own small one (run_case), not segment's 18 panels
        "png": None, "confidence_png": None, "quiet": True,
    })
    config, problem = None, None
    try:
        config = check_request(request).config
    except InputError as exc:
        problem = str(exc)
    job = CaseJob(case=case, request=request, case_dir=str(case_dir),
                  fingerprint=config_fingerprint(request, config))
    return job, problem


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def base_record(job: CaseJob, state: str, error: Optional[str] = None, **extra) -> dict:
    """A status record's common part (also what the driver writes for a case that never ran)."""
    record = {
        "version": STATUS_VERSION, "case": job.name, "row": job.case.row, "state": state,
        "query": job.case.query, "fingerprint": job.fingerprint, "error": error,
        "finished": now(),
    }
    record.update(extra)
    return record


def record_failure(job: CaseJob, why: str) -> dict:
    """Write and return the record of a case that failed outside :func:`run_case` (its
    worker died under it, it never passed validation): the summary shows why."""
    record = base_record(job, "failed", why)
    write_status(job.case_dir, record)
    return record


def run_case(job: CaseJob, should_stop: Optional[Callable[[], bool]] = None,
             worker: Optional[dict] = None) -> dict:
    """Run one case and write its outputs and status record; returns the record.

    ``should_stop`` is polled after every slice: when it says so the case stops with
    nothing written and the record's state is ``cancelled`` (not stored: the next run
    does the case). ``worker`` describes who ran it (stored in the record).
    """
    started, t0, cpu0 = now(), time.perf_counter(), time.process_time()
    folder = Path(job.case_dir)
    info = dict(worker or {}, host=socket.gethostname(), pid=os.getpid())
    removed = remove_partial_files(folder)
    digests = input_digests(job.case.inputs)
    hashed = time.perf_counter() - t0

    def progress(event) -> None:
        if should_stop is not None and should_stop():
            raise Cancelled("batch stopped")

    try:
        if should_stop is not None and should_stop():
            raise Cancelled("batch stopped")
        outcome = segment_files(job.request, progress=progress)
        t_seg = time.perf_counter()
        montage = case_outputs(folder, job.name)["montage"]
        panels = save_case_montage(montage, job, outcome)
        outputs = [Path(p).name for p in job.request.outputs] + [Path(montage).name]
        record = base_record(job, "done", inputs=digests, started=started, worker=info,
                             outputs=output_digests(folder, outputs), montage_slices=panels,
                             partial_files_removed=removed, **qc_summary(outcome),
                             seconds={"total": round(time.perf_counter() - t0, 3), "hash": round(hashed, 3),
                                      "segment": round(outcome.seconds, 3),
                                      "read_write": round(t_seg - t0 - hashed - outcome.seconds, 3),
                                      "montage": round(time.perf_counter() - t_seg, 3),
                                      # CPU time of the worker's process (all its threads): the
                                      # case's cost whatever else the machine runs
                                      "cpu": round(time.process_time() - cpu0, 3),
                                      **slice_seconds(outcome.result.records)},
                             backend=outcome.backend, config=outcome.config.to_dict())
    except Cancelled:
        return base_record(job, "cancelled", "stopped before it finished", worker=info)
    except InputError as exc:
        record = _failed(job, str(exc), digests, started, t0, info)
    except Exception as exc:  # noqa: BLE001 - one case's failure is recorded, the batch goes on
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        record = _failed(job, f"{type(exc).__name__}: {first}"[:500], digests, started, t0, info,
                         traceback=traceback.format_exc(limit=20))
    write_status(folder, record)
    return record


def _failed(job: CaseJob, error: str, digests: dict, started: str, t0: float, info: dict, **extra) -> dict:
    return base_record(job, "failed", error, inputs=digests, started=started, worker=info,
                       seconds={"total": round(time.perf_counter() - t0, 3)}, **extra)


def slice_seconds(records) -> Dict[str, float]:
    """The per-slice timings summed over the case (encoder, decoder, SynPo's own work):
    what a faster device would shorten, against the rest of the case's time."""
    totals: Dict[str, float] = {}
    for rec in records:
        for key, value in (rec.timings or {}).items():
            totals[f"slices_{key}"] = totals.get(f"slices_{key}", 0.0) + float(value)
    return {k: round(v, 3) for k, v in sorted(totals.items())}


def qc_summary(outcome) -> dict:
    """What the summary shows of a finished case: confidence, flagged slices, Dice."""
    records = outcome.result.records
    queried = [r for r in records if r.support_index >= 0]
    confident = [float(r.confidence) for r in queried if np.isfinite(r.confidence)]
    review = {int(i): reason for i, reason in sorted(outcome.flags.items()) if "auto-stop" not in reason}
    return {
        "slices": len(queried),
        "painted": sum(1 for r in queried if r.pixels > 0),
        "auto_stopped": sum(1 for r in queried if "auto-stop" in " ".join(r.notes)),
        "confidence_mean": round(float(np.mean(confident)), 4) if confident else None,
        "confidence_min": round(float(np.min(confident)), 4) if confident else None,
        "flags": {str(i): reason for i, reason in review.items()},
        "dice": None if outcome.dice is None else round(float(outcome.dice), 4),
    }


def montage_slices(records, flags: Dict[int, str], panels: int = MONTAGE_PANELS) -> List[int]:
    """The slices a reviewer should see first: the flagged ones with the lowest
    confidence, then the rest spread over the structure; in slice order."""
    from ..overlay import pick_slices

    queried = [r for r in records if r.support_index >= 0 and np.isfinite(r.score)]
    if not queried:
        return sorted(r.index for r in records)[:panels]

    def confidence(r) -> float:
        return float(r.confidence) if np.isfinite(r.confidence) else -np.inf

    worst = sorted((r for r in queried if r.index in flags), key=confidence)[: max(1, panels // 2)]
    chosen = {r.index for r in worst}
    painted = [r.index for r in sorted(queried, key=lambda r: r.index) if r.pixels > 0 and r.index not in chosen]
    for index in pick_slices(painted, panels - len(chosen)):
        chosen.add(index)
    for r in sorted(queried, key=confidence):  # few painted slices: fill with the least confident
        if len(chosen) >= panels:
            break
        chosen.add(r.index)
    return sorted(chosen)


def save_case_montage(path: os.PathLike, job: CaseJob, outcome) -> List[int]:
    """A small PNG of the case for the report; returns the slices shown."""
    from ..io import atomic_path, read_volume
    from ..overlay import display_orientation, save_montage
    from ..preprocess import in_plane_spacing
    from .validate import select_structure

    r, result = job.request, outcome.result
    query = read_volume(r.query)
    reference = None
    if r.reference:
        ref_label = r.reference_label if r.reference_label is not None else r.label
        reference = select_structure(read_volume(r.reference).array, ref_label, "--reference", r.reference)
    records = {rec.index: rec for rec in result.records}
    shown = montage_slices(result.records, outcome.flags)
    titles = {}
    for i in shown:
        rec = records[i]
        flag = outcome.flags.get(i)
        titles[i] = f"{i}  c={rec.confidence:.2f}" + (" [flag]" if flag and "auto-stop" not in flag else "")
    row_sp, col_sp = in_plane_spacing(query.spacing, r.axis)
    with atomic_path(path) as tmp:
        save_montage(tmp, query.array, result.mask, r.axis, shown, result.window, reference=reference,
                     records=records, titles=titles, columns=len(shown), aspect=row_sp / col_sp,
                     title=job.name, orientation=display_orientation(query.direction, r.axis))
    return shown


__all__ = ["CaseJob", "MONTAGE_PANELS", "base_record", "case_outputs", "make_job", "montage_slices", "qc_summary",
           "record_failure", "run_case", "save_case_montage"]
