"""The registration mode: the support's mask carried from slice to slice by registration.

How a slice's mask is made (everything else, acceptance, auto-stop, records, progress
and cancel, is the :class:`~SynPoLib.volume.sink.ResultSink`'s):

1. **Chain** (:mod:`SynPoLib.registration`): walking outward from each labelled slice,
   the next slice (fixed) is registered with the previous one (moving) by SimpleITK's
   diffeomorphic Demons on a crop around the previous mask, and the previous *soft*
   mask moves through that displacement field. The field is computed once per pair
   of slices and can move several soft masks (:class:`SynPoLib.registration.SliceField`).
2. **Refinement**: each slice's output is scikit-image's random walker seeded inside
   the eroded soft mask and outside the dilated one; refined masks never feed the chain.
   Optionally the backend's mask, prompted with the prior's box, is averaged into the
   prior first (``registration.backend_weight``; off in the presets: measured +0.002).
3. **Where the structure ends** (SynPo's own similarity): the backend encodes each
   slice once; the cosine between the support's prototype and the prototype under the
   slice's mask is the slice's confidence (1.0 on the support itself). Walking outward
   past the outermost supports, ``quality.stop_after`` slices in a row below
   ``registration.stop_threshold`` end the direction (:meth:`SynPoConfig.mode_quality`);
   between two supports the chain never stops. Low slices are flagged as in every mode.
4. **k-shot**: between two supports both chains cross the gap and each slice blends the
   two soft masks by distance (``registration.meeting``, measured +0.011 over the nearer
   chain alone).
5. **Support in another volume**: a 3-D affine registration (SimpleITK) of the support
   volume onto the query maps each support slice's mask into the query; the chain
   starts at the query slice the support slice's centre lands on, from the mapped
   (soft) mask, that slice itself being the refined mapped mask. The chain's slices are
   then compared with the prototype under that mask, in the query itself: the stop
   threshold was measured within one volume, and across volumes every cosine is lower.

Lengths are in millimetres with the query's in-plane spacing. Memory does not grow
with the number of slices beyond the output mask: the chain holds the previous slice,
its soft mask and a batch of encodings; a blended gap holds one chain's soft masks
cropped to the structure. Numbers: ``docs/scoreboard.md`` (Colin27 + AAL).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import registration as core
from ..backends.base import SAM, EncodedSlice
from ..method.prompts import grow_box, mask_box
from ..preprocess import in_plane_spacing, take_slice
from .sink import Direction, ResultSink
from .types import Job, SliceRecord, should_stop

#: timing keys of this mode's records (besides the shared "encode")
REGISTRATION = core.REGISTRATION
REFINEMENT = core.REFINEMENT
#: the cosine and the bookkeeping
SIMILARITY = "synpo"
#: the backend's decoder call of the optional fusion
DECODE = "decode"


@dataclass
class Start:
    """Where a chain starts in the query: a query slice and its soft mask there."""

    #: query slice index
    index: int
    #: the support slice it comes from
    support: int
    #: (rows, cols) float32 mask in [0, 1] on the query slice
    soft: np.ndarray
    #: the support prototype the chain's slices are compared with
    prototype: np.ndarray
    #: the start slice is a query slice to segment (another volume), not a labelled one
    segment: bool = False
    note: str = ""


class _Images:
    """Normalised query slices, the last few kept (the chain asks for each about twice)."""

    def __init__(self, job: Job, keep: int = 4) -> None:
        self.job = job
        self.keep = keep
        self._cache: "OrderedDict[int, np.ndarray]" = OrderedDict()

    def __call__(self, index: int) -> np.ndarray:
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        image = core.normalise_slice(take_slice(self.job.query, index, self.job.axis), self.job.q_window)
        self._cache[index] = image
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return image


class _Encodings:
    """The backend's encoder pass per query slice, batched ahead along the walk.

    ``ahead(order)`` tells the slices the walk will ask for next; a miss encodes up to
    ``batch_size`` of them in one call. What a stopped direction leaves is dropped.
    """

    def __init__(self, job: Job, sink: ResultSink) -> None:
        self.job, self.sink = job, sink
        self.order: List[int] = []
        self._cache: Dict[int, Tuple[EncodedSlice, float]] = {}

    def ahead(self, order: Sequence[int]) -> None:
        self.order = list(order)
        self._cache.clear()

    def get(self, index: int) -> Tuple[EncodedSlice, float]:
        """The slice's encoding and its share of the batch's encoder seconds."""
        if index not in self._cache:
            self.sink.check_cancel()
            batch = [index]
            if index in self.order:
                at = self.order.index(index)
                batch += [q for q in self.order[at + 1:at + self.job.batch_size]]
            t = time.perf_counter()
            encoded = self.job.backend.encode([self.job.query_roi(q) for q in batch])
            share = (time.perf_counter() - t) / len(batch)
            self._cache.update({q: (enc, share) for q, enc in zip(batch, encoded)})
        return self._cache.pop(index)


def feature_key(encoded: EncodedSlice) -> str:
    """The grid the similarity is read on: the SAM-family image encoder's (what was
    measured, with LiteMedSAM), else the backend's only one."""
    return SAM if SAM in encoded.features else next(iter(encoded.features))


class _RegistrationRun:
    """One registration-mode run into a :class:`ResultSink`; :func:`run` is its face."""

    def __init__(self, job: Job, sink: ResultSink) -> None:
        self.job, self.sink = job, sink
        self.cfg = job.config.registration
        self.axis = job.axis
        self.spacing = in_plane_spacing(job.query_spacing, self.axis)
        self.images = _Images(job)
        self.encodings = _Encodings(job, sink)
        self.grid_threshold = job.config.synergy.mask_threshold
        self.valid = job.q_geometry.valid()
        #: encodings the fusion hook made, for the slice's record to reuse
        self._pending: Dict[int, Tuple[EncodedSlice, float]] = {}
        #: legs whose direction is closed
        self._closed: set = set()

    # -- the support's side
    def _prototype(self, encoded: EncodedSlice, mask_roi: np.ndarray) -> np.ndarray:
        return core.support_prototype(encoded.features[feature_key(encoded)], mask_roi, self.grid_threshold)

    def starts(self) -> List[Start]:
        """The chains' starts: the labelled slices themselves (one volume), or the slices
        they map to after a 3-D affine registration (another volume)."""
        job = self.job
        out = []
        if job.same:
            for s in sorted(set(job.support.slices)):
                image, mask_roi = job.support_roi(s)
                prototype = self._prototype(job.backend.encode([image])[0], mask_roi)
                mask = np.asarray(take_slice(job.support.mask, s, self.axis) > 0, np.float32)
                out.append(Start(index=s, support=s, soft=mask, prototype=prototype))
            return out
        return self._mapped_starts()

    def _mapped_starts(self) -> List[Start]:
        job, affine = self.job, self.job.config.affine
        query, support = job.query_volume(), job.support_volume()
        report: dict = {}
        transform = core.register_affine(query, support, affine, abort=lambda: should_stop(self.sink.cancel),
                                         report=report)
        self.sink.check_cancel()
        if transform is None:  # pragma: no cover - aborted without a cancel request
            raise RuntimeError("the 3-D affine registration was aborted")
        n_query = job.query.shape[self.axis]
        slice_mm = float(job.query_spacing[self.axis]) if job.query_spacing is not None else 1.0
        by_slice: Dict[int, Start] = {}
        for s in sorted(set(job.support.slices)):
            self.sink.check_cancel()
            s_mask = np.asarray(take_slice(job.support.mask, s, self.axis) > 0)
            image, mask_roi = job.support_roi(s)
            prototype = self._prototype(job.backend.encode([image])[0], mask_roi)
            mapped = core.mapped_slice(s_mask, s, self.axis, support, query, transform)
            candidates = core.start_candidates(mapped, n_query, slice_mm, affine)
            softs = {q: core.map_support_slice(s_mask, s, self.axis, support, query, transform, q)
                     for q in candidates}
            scores = {}
            if len(candidates) > 1:
                for q, soft in softs.items():
                    roi = job.q_geometry.mask_to_roi(soft > self.cfg.threshold)
                    if roi.any():
                        encoded = job.backend.encode([job.query_roi(q)])[0]
                        scores[q] = core.prototype_cosine(prototype, encoded.features[feature_key(encoded)], roi,
                                                          self.grid_threshold)
            q0 = core.choose_start_slice(scores, mapped)
            if not 0 <= q0 < n_query:
                raise ValueError(f"support slice {s} maps to query slice {mapped:.1f}, outside the query "
                                 f"(0..{n_query - 1} along axis {self.axis}): the volumes do not overlap there")
            soft = softs.get(q0)
            if soft is None:
                soft = core.map_support_slice(s_mask, s, self.axis, support, query, transform, q0)
            if not (soft > self.cfg.threshold).any():
                raise ValueError(f"support slice {s}'s mask maps outside query slice {q0}: the 3-D affine "
                                 "registration did not overlap the volumes")
            if q0 in by_slice:
                continue  # two supports landing on one query slice: the first one starts there
            by_slice[q0] = Start(index=q0, support=s, soft=soft.astype(np.float32), prototype=prototype,
                                 segment=True, note=f"chain start: support slice {s} mapped by a 3-D affine "
                                                    f"registration from the {report.get('start')} start "
                                                    f"(lands at {mapped:.1f})")
        return [by_slice[q] for q in sorted(by_slice)]

    # -- per slice
    def _fuse(self, index: int, soft: np.ndarray, timings: Dict[str, float]) -> np.ndarray:
        """The backend's mask from the prior's box, averaged into the prior (the hook)."""
        inside = soft > self.cfg.threshold
        if not inside.any():
            return soft
        geometry = self.job.q_geometry
        box_roi = geometry.mask_to_roi(inside)
        if not box_roi.any():
            return soft
        encoded, share = self.encodings.get(index)
        self._pending[index] = (encoded, share)  # the stop signal reuses it
        box = grow_box(mask_box(box_roi), self.cfg.backend_box_margin, self.valid)
        t = time.perf_counter()
        pred = self.job.backend.predict(encoded, box=box, multimask=False, roi_size=geometry.roi_size)
        logits = geometry.logits_to_native(pred.logits[0])
        timings[DECODE] = timings.get(DECODE, 0.0) + time.perf_counter() - t
        probability = (1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))).astype(np.float32)
        return core.fuse_prior(soft, probability, self.cfg.backend_weight)

    def _record(self, index: int, support: int, mask: np.ndarray, prototype: np.ndarray,
                seconds: Dict[str, float], notes: Tuple[str, ...] = ()) -> SliceRecord:
        encoded, share = self._pending.pop(index, None) or self.encodings.get(index)
        t = time.perf_counter()
        roi = self.job.q_geometry.mask_to_roi(mask)
        cosine = core.prototype_cosine(prototype, encoded.features[feature_key(encoded)], roi, self.grid_threshold)
        timings = {REGISTRATION: seconds.get(REGISTRATION, 0.0), REFINEMENT: seconds.get(REFINEMENT, 0.0),
                   "encode": share}
        if DECODE in seconds:
            timings[DECODE] = seconds[DECODE]
        timings[SIMILARITY] = time.perf_counter() - t
        return SliceRecord(index=index, support_index=support, score=cosine, confidence=cosine,
                           pixels=int(np.count_nonzero(mask)), timings=timings, notes=notes)

    # -- the run
    def run(self) -> None:
        job, cfg, sink = self.job, self.cfg, self.sink
        starts = {st.index: st for st in self.starts()}
        fused: Dict[int, Dict[str, float]] = {}
        first, last = min(job.wanted), max(job.wanted)
        legs = [leg for leg in core.plan_legs(list(starts), first, last, cfg.meeting) if _needed(leg, job.wanted)]
        # the legs whose slices are yielded (the first leg of a blended gap is held)
        yielding = [leg for leg in legs if leg.partner is None or leg.partner < leg.support]
        for st in starts.values():
            if st.segment:
                self._segment_start(st)

        directions: Dict[int, Direction] = {}

        def direction_of(leg: core.Leg) -> Direction:
            if id(leg) not in directions:
                for other in yielding:  # the walk has left every earlier leg
                    if other is leg:
                        break
                    self._close(other, directions, starts)
                self.encodings.ahead([q for q in leg.slices if q in sink.wanted])
                directions[id(leg)] = sink.direction(leg.support, leg.slices, self._make_record(leg, starts),
                                                     auto_stop=leg.outward)
            return directions[id(leg)]

        def keep_going(step: core.ChainStep, leg: core.Leg) -> bool:
            direction = direction_of(leg)
            seconds = {**step.seconds, **fused.pop(step.index, {})}
            if step.index in sink.wanted:  # slices walked through on the way are not judged
                start, notes = self._served_by(step.index, leg, starts)
                direction.offer(self._record(step.index, start.support, step.mask, start.prototype, seconds,
                                             notes), step.mask)
            return not direction.stopped

        def prior_hook(index: int, soft: np.ndarray) -> np.ndarray:
            if index not in sink.wanted:
                return soft
            timings: Dict[str, float] = {}
            out = self._fuse(index, soft, timings)
            fused[index] = timings
            return out

        for _ in core.propagate_supports(
                self.images, {q: st.soft for q, st in starts.items()}, first, last, self.spacing, cfg,
                keep_going=keep_going, prior_hook=prior_hook if cfg.backend_weight > 0 else None,
                before_slice=lambda index: sink.check_cancel(), legs=legs):
            pass
        for leg in yielding:
            self._close(leg, directions, starts)

    def _close(self, leg: core.Leg, directions: Dict[int, Direction], starts: Dict[int, Start]) -> None:
        """End a leg's direction once (one the walk never reached records its slices)."""
        if id(leg) in self._closed:
            return
        direction = directions.get(id(leg))
        if direction is None:
            direction = self.sink.direction(leg.support, leg.slices, self._make_record(leg, starts),
                                            auto_stop=leg.outward)
        direction.close()
        self._closed.add(id(leg))

    def _segment_start(self, st: Start) -> None:
        """Another volume: the start slice's own mask is the refined mapped mask, and the
        chain's slices are compared with the prototype under it, in the query.

        The stop threshold was measured within one volume; across volumes every cosine
        is lower (another scanner, another subject, a template), so measured against the
        support's prototype a chain would stop at once. The start slice's record keeps
        its cosine to the labelled slice: how alike the two volumes look there."""
        t = time.perf_counter()
        mask = core.refine_mask(self.images(st.index), st.soft, self.spacing, self.cfg)
        seconds = {REFINEMENT: time.perf_counter() - t}
        encoded, share = self.encodings.get(st.index)
        self._pending[st.index] = (encoded, share)
        record = self._record(st.index, st.support, mask, st.prototype, seconds, (st.note,))
        roi = self.job.q_geometry.mask_to_roi(mask)
        if roi.any():
            st.prototype = self._prototype(encoded, roi)
            record.confidence = 1.0  # the chain's reference from here on
        if st.index in self.sink.wanted:
            direction = self.sink.direction(st.support, [st.index], auto_stop=False)
            direction.offer(record, mask)
            direction.close()

    def _served_by(self, index: int, leg: core.Leg, starts: Dict[int, Start]) -> Tuple[Start, Tuple[str, ...]]:
        """The start whose prototype judges ``index`` (the nearer one in a blended gap)."""
        if leg.partner is None:
            return starts[leg.support], ()
        a, b = leg.support, leg.partner
        nearer = a if abs(index - a) <= abs(index - b) else b
        return starts[nearer], (f"blend of the chains from slices {min(a, b)} and {max(a, b)}",)

    def _make_record(self, leg: core.Leg, starts: Dict[int, Start]):
        def make_record(index: int) -> SliceRecord:
            return SliceRecord(index=index, support_index=self._served_by(index, leg, starts)[0].support)
        return make_record


def _needed(leg: core.Leg, wanted: Sequence[int]) -> bool:
    """Whether a leg reaches a wanted slice: a gap between supports with none is not walked."""
    if leg.outward:
        return True
    lo, hi = min(leg.slices), max(leg.slices)
    return any(lo <= q <= hi for q in wanted)


def run(job: Job, sink: ResultSink) -> None:
    """Segment ``job``'s slices into ``sink`` by registration-guided propagation."""
    _RegistrationRun(job, sink).run()


__all__ = ["DECODE", "REFINEMENT", "REGISTRATION", "SIMILARITY", "Start", "feature_key", "run"]
