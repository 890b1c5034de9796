"""Where every mode's slices go: the output array, the records, progress, auto-stop.

A mode only says how a slice's mask is made. It hands each segmented slice to a
:class:`Direction` of the :class:`ResultSink`, which decides the rest the same way
for every mode: whether the mask counts (the acceptance rule), whether the direction
has walked past the structure's end (auto-stop: :class:`~SynPoLib.volume.qc.ChainState`),
what is painted, what the caller's progress callback sees, and the record of every
slice, including the ones never segmented.

A multi-structure run (:mod:`SynPoLib.volume.structures`) gives each structure its own
sink (a :class:`Track`); a sink asked to ``keep_evidence`` also keeps, for every painted
pixel, what the mode knew about it (:class:`Evidence`: the decoder's logit, the
prototype similarity), so pixels two structures claim can be decided afterwards.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config import QualityConfig
from ..errors import Cancelled
from ..preprocess import take_slice
from .qc import ChainState, keep_support_component
from .types import CancelCheck, Job, ProgressCallback, ProgressEvent, SliceRecord, VolumeResult, set_slice, should_stop

#: notes on records of slices auto-stop left unpainted
STOPPED = "auto-stop: below the confidence threshold"
NOT_SEGMENTED = "auto-stop: not segmented"


@dataclass
class Evidence:
    """What a mode knows about each pixel of a slice's mask (native slice grids)."""

    #: the decoder's logits (foreground where > 0)
    logits: Optional[np.ndarray] = None
    #: the structure's prototype similarity (SAM features)
    similarity: Optional[np.ndarray] = None


#: per painted slice: flat pixel indices of the mask, and the evidence's values there
#: (name -> float16 values), see :attr:`ResultSink.evidence`
PixelEvidence = Tuple[np.ndarray, Dict[str, np.ndarray]]


class ResultSink:
    """Owns one run's output mask and records; every mode writes through it."""

    def __init__(self, job: Job, progress: ProgressCallback = None, cancel: CancelCheck = None,
                 keep_evidence: bool = False) -> None:
        self.job = job
        #: the acceptance and auto-stop rules as the job's mode applies them
        self.quality: QualityConfig = job.config.mode_quality()
        self.out = np.zeros(job.query.shape, dtype=np.uint8)
        self.records: List[SliceRecord] = []
        self.wanted = set(job.wanted)
        self.total = len(job.wanted)
        self.progress = progress
        self.cancel = cancel
        self.start = time.perf_counter()
        self.keep_evidence = bool(keep_evidence)
        #: slice index -> the painted pixels' evidence (only with ``keep_evidence``):
        #: memory grows with the painted pixels, never with whole slices
        self.evidence: Dict[int, PixelEvidence] = {}

    # -- slices
    def check_cancel(self) -> None:
        """Raise :class:`Cancelled` if the caller asked to stop."""
        if should_stop(self.cancel):
            raise Cancelled(f"cancelled after {len(self.records)} of {self.total} slices")

    def report(self, record: SliceRecord, mask: np.ndarray) -> None:
        self.records.append(record)
        if self.progress is not None:
            self.progress(ProgressEvent(done=len(self.records), total=self.total, record=record, mask=mask,
                                        elapsed=time.perf_counter() - self.start))

    def paint(self, record: SliceRecord, mask: np.ndarray, evidence: Optional[Evidence] = None) -> None:
        if record.accepted:
            set_slice(self.out, record.index, self.job.axis, mask)
            if self.keep_evidence and evidence is not None:
                where = np.flatnonzero(mask)
                values = {name: np.asarray(array, np.float32).reshape(-1)[where].astype(np.float16)
                          for name, array in (("logits", evidence.logits), ("similarity", evidence.similarity))
                          if array is not None}
                self.evidence[record.index] = (where, values)
        self.report(record, mask if record.accepted else np.zeros_like(mask))

    def leave_unpainted(self, record: SliceRecord, why: str) -> None:
        record.accepted = False
        record.pixels = 0
        record.notes = tuple(record.notes) + (why,)
        self.report(record, np.zeros(self.job.q_geometry.native, dtype=bool))

    def copy_supports(self, make_record: Callable[..., SliceRecord] = SliceRecord) -> None:
        """Same volume: the labelled support slices that were asked for, as labelled."""
        job = self.job
        for s in job.copied:
            mask = job.paintable(s, np.asarray(take_slice(job.support.mask, s, job.axis) > 0))
            set_slice(self.out, s, job.axis, mask)
            self.report(make_record(index=s, support_index=-1, pixels=int(mask.sum()), notes=("support slice",)),
                        mask)

    def direction(self, support_index: int, slices: Sequence[int],
                  make_record: Optional[Callable[[int], SliceRecord]] = None,
                  auto_stop: bool = True) -> "Direction":
        """The bookkeeping of one walk outward from ``support_index`` over ``slices``.

        ``auto_stop=False`` for a walk that ends at another labelled slice (between two
        supports the structure is known to go on): acceptance and records as usual."""
        if make_record is None:
            def make_record(index: int) -> SliceRecord:
                return SliceRecord(index=index, support_index=support_index)
        return Direction(self, support_index, slices, make_record, auto_stop=auto_stop)

    # -- the end
    def result(self) -> VolumeResult:
        """The run's result: 3D clean-up if configured, records in slice order."""
        job, out = self.job, self.out
        if self.quality.largest_component and out.any():
            seeds = np.zeros_like(out)
            for s in job.copied:
                set_slice(seeds, s, job.axis, take_slice(out, s, job.axis))
            cleaned = keep_support_component(out, seeds if seeds.any() else None)
            for rec in self.records:
                if rec.support_index >= 0 and rec.pixels:
                    kept = int(np.count_nonzero(take_slice(cleaned, rec.index, job.axis)))
                    if kept < rec.pixels:
                        rec.notes = tuple(rec.notes) + (f"3D cleanup removed {rec.pixels - kept} pixels",)
                        rec.pixels = kept
            out = cleaned
        self.records.sort(key=lambda r: r.index)
        return VolumeResult(mask=out, records=self.records, axis=job.axis, window=job.q_window, notes=job.notes)


class Direction:
    """One walk outward from a support slice: acceptance and auto-stop, slice by slice."""

    def __init__(self, sink: ResultSink, support_index: int, slices: Sequence[int],
                 make_record: Callable[[int], SliceRecord], auto_stop: bool = True) -> None:
        self.sink = sink
        self.support_index = support_index
        self.slices = [s for s in slices if s in sink.wanted]
        self.make_record = make_record
        quality = sink.quality if auto_stop else dataclasses.replace(sink.quality, auto_stop=False)
        self.state = ChainState(quality)
        self.seen: set = set()

    @property
    def stopped(self) -> bool:
        """Auto-stop ended this direction: the mode segments no further slice of it."""
        return self.state.stopped

    def accept(self, record: SliceRecord, mask: np.ndarray) -> np.ndarray:
        """Apply the acceptance rule to ``record``; the mask that counts (empty if refused)."""
        quality = self.sink.quality
        mask = self.sink.job.paintable(record.index, mask)
        pixels = int(np.count_nonzero(mask))
        accepted = pixels >= max(quality.min_pixels, 1)
        if quality.min_score is not None and not record.score >= quality.min_score:
            accepted = False
        record.accepted = accepted
        record.pixels = pixels if accepted else 0
        return mask if accepted else np.zeros_like(mask)

    def offer(self, record: SliceRecord, mask: np.ndarray, evidence: Optional[Evidence] = None) -> bool:
        """One segmented slice (its native mask, and optionally what the mode knows about
        its pixels). Returns True when it is accepted and confident: what a mode may
        carry on to the next slice.

        Slices outside the run's wanted slices (a video mode tracks through them) are
        judged but neither painted nor recorded.
        """
        mask = self.accept(record, mask)
        confident = record.accepted and not self.state.is_low(record.confidence, record.pixels)
        if record.index not in self.sink.wanted:
            return confident
        self.seen.add(record.index)
        final, dropped = self.state.push(record.index, record.confidence, record.pixels,
                                         (record, mask, evidence))
        for _, (rec, m, ev) in final:
            self.sink.paint(rec, m, ev)
        for _, (rec, _m, _ev) in dropped:
            self.sink.leave_unpainted(rec, STOPPED)
        return confident

    def close(self, why: str = NOT_SEGMENTED) -> None:
        """The walk is over: paint what auto-stop still held, record the slices never reached."""
        for _, (rec, m, ev) in self.state.finish():
            self.sink.paint(rec, m, ev)
        for s in self.slices:
            if s not in self.seen:
                self.sink.leave_unpainted(self.make_record(s), why)
                self.seen.add(s)


@dataclass
class Track:
    """One structure's share of a run: its checked inputs and its sink."""

    job: Job
    sink: ResultSink
    #: the structure's name ("" in a one-structure run)
    name: str = ""


__all__ = ["Direction", "Evidence", "NOT_SEGMENTED", "PixelEvidence", "ResultSink", "STOPPED", "Track"]
