"""The paper's mode: every query slice segmented on its own from its support slice.

Memory does not grow with the number of slices beyond the output mask: slices are
windowed, encoded, segmented and dropped one batch at a time. A :class:`Guidance`
(the propagate mode's) may add a prompt carried over from the previous slice.
"""

from __future__ import annotations

import time
from typing import Dict, Optional, Protocol

import numpy as np

from ..method.segmenter import Guide, SliceResult, SupportContext, SynPoSegmenter
from .qc import relative_confidence
from .sink import ResultSink
from .types import Job, SliceRecord


class Guidance(Protocol):
    """What a mode carries from one slice to the next along a direction."""

    def begin(self, context: SupportContext) -> None:
        """A new direction starts at the support slice ``context``."""

    def guide(self) -> Optional[Guide]:
        """The prompt for the next slice (None: the support's own)."""

    def after(self, result: SliceResult, confident: bool) -> None:
        """The slice was segmented; ``confident``: accepted and above the stop threshold."""


def prepare_supports(job: Job, segmenter: SynPoSegmenter) -> Dict[int, SupportContext]:
    """Each support slice encoded once and summarised for every query slice it serves."""
    contexts = {}
    for s in job.support.slices:
        image, mask_roi = job.support_roi(s)
        contexts[s] = segmenter.prepare_support(job.backend.encode([image])[0], mask_roi, job.s_geometry.valid())
    return contexts


def slice_record(job: Job, index: int, support_index: int, result: SliceResult,
                 context: SupportContext) -> SliceRecord:
    """The record of a slice SynPo segmented, in native slice pixels."""
    geometry = job.q_geometry
    box = None if result.box is None else geometry.points_to_native(result.box.reshape(2, 2)).reshape(4)
    return SliceRecord(
        index=index, support_index=support_index,
        points=geometry.points_to_native(result.points.coords), labels=result.points.labels, box=box,
        score=result.score, synergy_score=result.synergy_score, iou=result.iou,
        confidence=relative_confidence(result.score, context.self_score),
        timings=dict(result.timings), notes=result.notes)


def run(job: Job, sink: ResultSink, guidance: Optional[Guidance] = None) -> None:
    """Segment ``job``'s slices into ``sink``, outward from each support, batch by batch."""
    segmenter = SynPoSegmenter(job.backend, job.config)
    contexts = prepare_supports(job, segmenter)
    valid = job.q_geometry.valid()
    for chain in job.chains():
        context = contexts[chain.support]
        direction = sink.direction(chain.support, chain.slices)
        if guidance is not None:
            guidance.begin(context)
        for b in range(0, len(chain.slices), job.batch_size):
            if direction.stopped:
                break
            sink.check_cancel()
            batch = chain.slices[b:b + job.batch_size]
            t = time.perf_counter()
            encoded = job.backend.encode([job.query_roi(s) for s in batch])
            encode_share = (time.perf_counter() - t) / len(batch)
            for s, enc in zip(batch, encoded):
                if direction.stopped:
                    break
                sink.check_cancel()
                result = segmenter.segment(enc, context, valid, guide=guidance.guide() if guidance else None)
                t = time.perf_counter()
                mask = job.q_geometry.logits_to_native(result.logits) > 0
                record = slice_record(job, s, chain.support, result, context)
                record.timings["synpo"] += time.perf_counter() - t
                record.timings["encode"] = encode_share
                confident = direction.offer(record, mask)
                if guidance is not None:
                    guidance.after(result, confident)
        direction.close()


__all__ = ["Guidance", "prepare_supports", "run", "slice_record"]
