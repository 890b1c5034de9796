"""The paper's mode: every query slice segmented on its own from its support slice.

Memory does not grow with the number of slices beyond the output mask: slices are
windowed, encoded, segmented and dropped one batch at a time. A :class:`Guidance`
(the propagate mode's) may add a prompt carried over from the previous slice.

Several structures (:class:`~SynPoLib.volume.sink.Track`) run together: walks over
the same slices in the same direction (structures labelled on the same slice) are
visited in lockstep, and each query slice's encoder pass serves every structure
(:class:`~SynPoLib.volume.encoder.SharedEncoder`); each structure keeps its own
support context, guidance, acceptance and auto-stop. A structure's result is exactly
what it would be alone.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Protocol, Sequence, Tuple

import numpy as np

from ..method.segmenter import Guide, SliceResult, SupportContext, SynPoSegmenter
from .encoder import SHARED_ENCODINGS, SharedEncoder, SupportEncodings
from .qc import relative_confidence
from .sink import Direction, Evidence, ResultSink, Track
from .types import Chain, Job, SliceRecord


class Guidance(Protocol):
    """What a mode carries from one slice to the next along a direction."""

    def begin(self, context: SupportContext) -> None:
        """A new direction starts at the support slice ``context``."""

    def guide(self) -> Optional[Guide]:
        """The prompt for the next slice (None: the support's own)."""

    def after(self, result: SliceResult, confident: bool) -> None:
        """The slice was segmented; ``confident``: accepted and above the stop threshold."""


def support_key(job: Job, index: int) -> tuple:
    """What makes two support slices' ROI images the same image (for sharing their encoding)."""
    return (id(job.support.volume), job.axis, int(index), tuple(job.s_window), tuple(job.s_geometry.native),
            job.config.geometry)


def prepare_supports(job: Job, segmenter: SynPoSegmenter,
                     encodings: Optional[SupportEncodings] = None) -> Dict[int, SupportContext]:
    """Each support slice encoded once and summarised for every query slice it serves.

    With ``encodings`` (a multi-structure run) a support slice several structures are
    labelled on is encoded once for all of them.
    """
    contexts = {}
    for s in job.support.slices:
        image, mask_roi = job.support_roi(s)
        if encodings is None:
            encoded = job.backend.encode([image])[0]
        else:
            encoded = encodings.get(support_key(job, s), lambda image=image: image)
        contexts[s] = segmenter.prepare_support(encoded, mask_roi, job.s_geometry.valid())
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


@dataclass
class _Walker:
    """One structure's side of the run: its segmenter and support contexts."""

    track: Track
    segmenter: SynPoSegmenter
    contexts: Dict[int, SupportContext]
    valid: np.ndarray


@dataclass
class _Walk:
    """One structure walking one chain."""

    walker: _Walker
    chain: Chain
    direction: Direction
    guidance: Optional[Guidance]
    #: slices of the chain this walk has used or given up
    done: set = field(default_factory=set)


def run_tracks(tracks: Sequence[Track], guidance: Optional[Callable[[Job], Guidance]] = None,
               capacity: int = SHARED_ENCODINGS) -> None:
    """Segment every track's slices into its sink, outward from each support, batch by batch.

    Every track must share the query, its axis, window and slice geometry, the backend
    and the batch size (:func:`SynPoLib.volume.structures.run_structures` builds them so).
    ``guidance(job)`` makes a fresh :class:`Guidance` for each walk.
    """
    if not tracks:
        return
    lead = tracks[0].job
    tracks[0].sink.check_cancel()  # a run cancelled before it starts encodes nothing
    encoder = SharedEncoder(lead.backend, lead.query_roi, capacity=max(capacity, lead.batch_size))
    support_encodings = SupportEncodings(lead.backend)
    groups: "OrderedDict[Tuple[str, Tuple[int, ...]], List[Tuple[_Walker, Chain]]]" = OrderedDict()
    for track in tracks:
        job = track.job
        segmenter = SynPoSegmenter(job.backend, job.config)
        walker = _Walker(track, segmenter, prepare_supports(job, segmenter, support_encodings),
                         job.q_geometry.valid())
        for chain in job.chains():
            groups.setdefault((chain.direction, chain.slices), []).append((walker, chain))
            encoder.expect(chain.slices)
    for (_, slices), members in groups.items():
        walks = [_Walk(walker, chain, walker.track.sink.direction(chain.support, chain.slices),
                       guidance(walker.track.job) if guidance is not None else None)
                 for walker, chain in members]
        for walk in walks:
            if walk.guidance is not None:
                walk.guidance.begin(walk.walker.contexts[walk.chain.support])
        _walk_group(walks, slices, encoder, lead.batch_size)
        for walk in walks:
            walk.direction.close()
            for s in walk.chain.slices:
                if s not in walk.done:
                    encoder.release(s)


def _walk_group(walks: List[_Walk], slices: Sequence[int], encoder: SharedEncoder, batch_size: int) -> None:
    for b in range(0, len(slices), batch_size):
        active = [w for w in walks if not w.direction.stopped]
        if not active:
            return
        active[0].walker.track.sink.check_cancel()
        batch = slices[b:b + batch_size]
        encoded, costs = encoder.encode(batch)
        for s, enc, cost in zip(batch, encoded, costs):
            for walk in walks:
                if walk.direction.stopped:
                    continue
                sink = walk.walker.track.sink
                sink.check_cancel()
                _segment(walk, s, enc, cost)
                walk.done.add(s)
                encoder.release(s)


def _segment(walk: _Walk, index: int, encoded, encode_cost: float) -> None:
    walker, chain = walk.walker, walk.chain
    job = walker.track.job
    context = walker.contexts[chain.support]
    guide = walk.guidance.guide() if walk.guidance is not None else None
    result = walker.segmenter.segment(encoded, context, walker.valid, guide=guide)
    t = time.perf_counter()
    logits = job.q_geometry.logits_to_native(result.logits)
    mask = logits > 0
    evidence = None
    if walker.track.sink.keep_evidence:
        evidence = Evidence(logits=logits, similarity=None if result.similarity is None else
                            job.q_geometry.logits_to_native(result.similarity))
    record = slice_record(job, index, chain.support, result, context)
    record.timings["synpo"] += time.perf_counter() - t
    record.timings["encode"] = encode_cost
    confident = walk.direction.offer(record, mask, evidence)
    if walk.guidance is not None:
        walk.guidance.after(result, confident)


def run(job: Job, sink: ResultSink, guidance: Optional[Guidance] = None) -> None:
    """Segment ``job``'s slices into ``sink``, outward from each support, batch by batch."""
    run_tracks([Track(job, sink)], None if guidance is None else (lambda _job: guidance))


__all__ = ["Guidance", "prepare_supports", "run", "run_tracks", "slice_record", "support_key"]
