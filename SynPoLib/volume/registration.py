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

Several structures in one run (:func:`run_tracks`): structures labelled on the same
slices walk their chains in lockstep; between two slices one displacement field,
computed on the crop around the union of their masks, moves every structure's soft
mask (:func:`SynPoLib.registration.propagate_chain_many`), and one encoder pass gives
every structure its similarity. Each structure keeps its own refinement, stop and
records. A support in another volume is registered onto the query once for all.

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
from ..resize import resize_bilinear
from .encoder import SupportEncodings
from .sink import Direction, Evidence, ResultSink, Track
from .slices import support_key
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
    """The backend's encoder pass per query slice, batched ahead along the walk, shared by
    every structure walking it.

    ``ahead(order)`` tells the slices the walk will ask for next; a miss encodes up to
    ``batch_size`` of them in one call. A slice's encoding stays until the walk moves to
    another slice (every structure reads it in between); what a stopped walk leaves is
    dropped.
    """

    def __init__(self, job: Job, sink: ResultSink) -> None:
        self.job, self.sink = job, sink
        self.order: List[int] = []
        self._cache: Dict[int, Tuple[EncodedSlice, float]] = {}
        self._current: Optional[Tuple[int, EncodedSlice, float]] = None

    def ahead(self, order: Sequence[int]) -> None:
        self.order = list(order)
        self._cache.clear()
        self._current = None

    def get(self, index: int) -> Tuple[EncodedSlice, float]:
        """The slice's encoding and its share of the batch's encoder seconds (0 when the
        slice was handed out before: the first structure carries the cost)."""
        if self._current is not None and self._current[0] == index:
            return self._current[1], 0.0
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
        encoded, share = self._cache.pop(index)
        self._current = (index, encoded, share)
        return encoded, share


def feature_key(encoded: EncodedSlice) -> str:
    """The grid the similarity is read on: the SAM-family image encoder's (what was
    measured, with LiteMedSAM), else the backend's only one."""
    return SAM if SAM in encoded.features else next(iter(encoded.features))


class _Structure:
    """One structure's side of a run: its job, sink, chain starts and directions."""

    def __init__(self, track: Track) -> None:
        self.track = track
        self.job, self.sink = track.job, track.sink
        self.starts: Dict[int, Start] = {}
        self.directions: Dict[int, Direction] = {}
        self.closed: set = set()


class _RegistrationRun:
    """One registration-mode run of one or more structures; :func:`run_tracks` is its face.

    Every structure shares the query, its window and geometry, the backend and the
    configuration (a multi-structure run builds them so).
    """

    def __init__(self, tracks: Sequence[Track]) -> None:
        self.structures = [_Structure(t) for t in tracks]
        lead = self.structures[0]
        self.job, self.sink = lead.job, lead.sink
        job = self.job
        self.cfg = job.config.registration
        self.axis = job.axis
        self.spacing = in_plane_spacing(job.query_spacing, self.axis)
        self.images = _Images(job)
        self.encodings = _Encodings(job, self.sink)
        self.support_encodings = SupportEncodings(job.backend)
        self.grid_threshold = job.config.synergy.mask_threshold
        self.valid = job.q_geometry.valid()
        self._transforms: Dict[int, object] = {}
        self._pending: Dict[Tuple[int, int], Tuple[EncodedSlice, float]] = {}

    # -- the support's side
    def _prototype(self, encoded: EncodedSlice, mask_roi: np.ndarray) -> np.ndarray:
        return core.support_prototype(encoded.features[feature_key(encoded)], mask_roi, self.grid_threshold)

    def _support_encoding(self, job: Job, s: int, image: np.ndarray) -> EncodedSlice:
        return self.support_encodings.get(support_key(job, s), lambda: image)

    def starts(self, st: _Structure) -> List[Start]:
        """The chains' starts: the labelled slices themselves (one volume), or the slices
        they map to after a 3-D affine registration (another volume)."""
        job = st.job
        out = []
        if job.same:
            for s in sorted(set(job.support.slices)):
                image, mask_roi = job.support_roi(s)
                prototype = self._prototype(self._support_encoding(job, s, image), mask_roi)
                mask = np.asarray(take_slice(job.support.mask, s, self.axis) > 0, np.float32)
                out.append(Start(index=s, support=s, soft=mask, prototype=prototype))
            return out
        return self._mapped_starts(st)

    def _transform(self, st: _Structure):
        """The 3-D affine registration of the support volume onto the query, once per volume."""
        key = id(st.job.support.volume)
        if key not in self._transforms:
            job = st.job
            query, support = job.query_volume(), job.support_volume()
            report: dict = {}
            transform = core.register_affine(query, support, job.config.affine,
                                             abort=lambda: should_stop(st.sink.cancel), report=report)
            st.sink.check_cancel()
            if transform is None:  # pragma: no cover - aborted without a cancel request
                raise RuntimeError("the 3-D affine registration was aborted")
            self._transforms[key] = (transform, report)
        return self._transforms[key]

    def _mapped_starts(self, st: _Structure) -> List[Start]:
        job, affine = st.job, st.job.config.affine
        query, support = job.query_volume(), job.support_volume()
        transform, report = self._transform(st)
        n_query = job.query.shape[self.axis]
        slice_mm = float(job.query_spacing[self.axis]) if job.query_spacing is not None else 1.0
        by_slice: Dict[int, Start] = {}
        for s in sorted(set(job.support.slices)):
            st.sink.check_cancel()
            s_mask = np.asarray(take_slice(job.support.mask, s, self.axis) > 0)
            image, mask_roi = job.support_roi(s)
            prototype = self._prototype(self._support_encoding(job, s, image), mask_roi)
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
                                 segment=True, note=(f"chain start: support slice {s} mapped by a 3-D affine "
                                                     f"registration from the {report.get('start')} start "
                                                     f"(lands at {mapped:.1f})" if "skipped" not in report else
                                                     f"chain start: support slice {s} mapped by the volumes' "
                                                     f"{report.get('start')} placement, {report['skipped']} "
                                                     f"(lands at {mapped:.1f})"))
        return [by_slice[q] for q in sorted(by_slice)]

    # -- per slice
    def _fuse(self, n: int, index: int, soft: np.ndarray, timings: Dict[str, float]) -> np.ndarray:
        """The backend's mask from the prior's box, averaged into the prior (the hook)."""
        inside = soft > self.cfg.threshold
        if not inside.any():
            return soft
        geometry = self.job.q_geometry
        box_roi = geometry.mask_to_roi(inside)
        if not box_roi.any():
            return soft
        encoded, share = self.encodings.get(index)
        self._pending[(n, index)] = (encoded, share)  # the stop signal reuses it
        box = grow_box(mask_box(box_roi), self.cfg.backend_box_margin, self.valid)
        t = time.perf_counter()
        pred = self.job.backend.predict(encoded, box=box, multimask=False, roi_size=geometry.roi_size)
        logits = geometry.logits_to_native(pred.logits[0])
        timings[DECODE] = timings.get(DECODE, 0.0) + time.perf_counter() - t
        probability = (1.0 / (1.0 + np.exp(-np.clip(logits, -30.0, 30.0)))).astype(np.float32)
        return core.fuse_prior(soft, probability, self.cfg.backend_weight)

    def _record(self, n: int, index: int, support: int, mask: np.ndarray, prototype: np.ndarray,
                seconds: Dict[str, float], notes: Tuple[str, ...] = ()) -> SliceRecord:
        encoded, share = self._pending.pop((n, index), None) or self.encodings.get(index)
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

    def _evidence(self, st: _Structure, index: int, soft: np.ndarray, prototype: np.ndarray) -> Optional[Evidence]:
        """What decides pixels two structures claim (multi-structure runs only): the soft
        prior as a logit, and the pixel's similarity to the structure's prototype."""
        if not st.sink.keep_evidence:
            return None
        encoded, _ = self.encodings.get(index)
        features = encoded.features[feature_key(encoded)]
        unit = features / np.maximum(np.linalg.norm(features, axis=0, keepdims=True), 1e-8)
        grid = np.tensordot(prototype.astype(np.float32), unit, axes=(0, 0))
        geometry = self.job.q_geometry
        similarity = geometry.logits_to_native(resize_bilinear(grid.astype(np.float32), (geometry.roi_size,) * 2))
        p = np.clip(np.asarray(soft, np.float32), 1e-4, 1.0 - 1e-4)
        return Evidence(logits=np.log(p / (1.0 - p)), similarity=similarity)

    # -- the run
    def run(self) -> None:
        self.sink.check_cancel()
        groups: "OrderedDict[tuple, List[int]]" = OrderedDict()
        for n, st in enumerate(self.structures):
            st.starts = {start.index: start for start in self.starts(st)}
            key = (tuple(sorted(st.starts)), tuple(st.job.wanted))
            groups.setdefault(key, []).append(n)
        for members in groups.values():
            self._run_group(members)

    def _run_group(self, members: List[int]) -> None:
        """Structures with the same chain starts and query slices, in lockstep."""
        cfg = self.cfg
        lead = self.structures[members[0]]
        wanted = lead.job.wanted
        first, last = min(wanted), max(wanted)
        legs = [leg for leg in core.plan_legs(list(lead.starts), first, last, cfg.meeting) if _needed(leg, wanted)]
        # the legs whose slices are yielded (the first leg of a blended gap is held)
        yielding = [leg for leg in legs if leg.partner is None or leg.partner < leg.support]
        for n in members:
            st = self.structures[n]
            for start in st.starts.values():
                if start.segment:
                    self._segment_start(n, start)
        fused: Dict[Tuple[int, int], Dict[str, float]] = {}
        entered: set = set()

        def direction_of(n: int, leg: core.Leg) -> Direction:
            st = self.structures[n]
            if id(leg) not in st.directions:
                for other in yielding:  # the walk has left every earlier leg
                    if other is leg:
                        break
                    self._close(n, other)
                if id(leg) not in entered:
                    entered.add(id(leg))
                    self.encodings.ahead([q for q in leg.slices if q in st.sink.wanted])
                st.directions[id(leg)] = st.sink.direction(leg.support, leg.slices, self._make_record(n, leg),
                                                           auto_stop=leg.outward)
            return st.directions[id(leg)]

        def keep_going(step: core.ChainStep, leg: core.Leg, n: int) -> bool:
            st = self.structures[n]
            direction = direction_of(n, leg)
            seconds = {**step.seconds, **fused.pop((n, step.index), {})}
            if step.index in st.sink.wanted:  # slices walked through on the way are not judged
                start, notes = self._served_by(n, step.index, leg)
                record = self._record(n, step.index, start.support, step.mask, start.prototype, seconds, notes)
                direction.offer(record, step.mask, self._evidence(st, step.index, step.soft, start.prototype))
            return not direction.stopped

        def prior_hook(n: int, index: int, soft: np.ndarray) -> np.ndarray:
            if index not in self.structures[n].sink.wanted:
                return soft
            timings: Dict[str, float] = {}
            out = self._fuse(n, index, soft, timings)
            fused[(n, index)] = timings
            return out

        masks = {n: {q: start.soft for q, start in self.structures[n].starts.items()} for n in members}
        for _ in core.propagate_supports_many(
                self.images, masks, first, last, self.spacing, cfg, keep_going=keep_going,
                prior_hook=prior_hook if cfg.backend_weight > 0 else None,
                before_slice=lambda index: self.sink.check_cancel(), legs=legs):
            pass
        for n in members:
            for leg in yielding:
                self._close(n, leg)

    def _close(self, n: int, leg: core.Leg) -> None:
        """End a leg's direction once (one the walk never reached records its slices)."""
        st = self.structures[n]
        if id(leg) in st.closed:
            return
        direction = st.directions.get(id(leg))
        if direction is None:
            direction = st.sink.direction(leg.support, leg.slices, self._make_record(n, leg), auto_stop=leg.outward)
        direction.close()
        st.closed.add(id(leg))

    def _segment_start(self, n: int, start: Start) -> None:
        """Another volume: the start slice's own mask is the refined mapped mask, and the
        chain's slices are compared with the prototype under it, in the query.

        The stop threshold was measured within one volume; across volumes every cosine
        is lower (another scanner, another subject, a template), so measured against the
        support's prototype a chain would stop at once. The start slice's record keeps
        its cosine to the labelled slice: how alike the two volumes look there."""
        st = self.structures[n]
        t = time.perf_counter()
        mask = core.refine_mask(self.images(start.index), start.soft, self.spacing, self.cfg)
        seconds = {REFINEMENT: time.perf_counter() - t}
        encoded, share = self.encodings.get(start.index)
        self._pending[(n, start.index)] = (encoded, share)
        evidence = self._evidence(st, start.index, start.soft, start.prototype)
        record = self._record(n, start.index, start.support, mask, start.prototype, seconds, (start.note,))
        roi = self.job.q_geometry.mask_to_roi(mask)
        if roi.any():
            start.prototype = self._prototype(encoded, roi)
            record.confidence = 1.0  # the chain's reference from here on
        if start.index in st.sink.wanted:
            direction = st.sink.direction(start.support, [start.index], auto_stop=False)
            direction.offer(record, mask, evidence)
            direction.close()

    def _served_by(self, n: int, index: int, leg: core.Leg) -> Tuple[Start, Tuple[str, ...]]:
        """The start whose prototype judges ``index`` (the nearer one in a blended gap)."""
        starts = self.structures[n].starts
        if leg.partner is None:
            return starts[leg.support], ()
        a, b = leg.support, leg.partner
        nearer = a if abs(index - a) <= abs(index - b) else b
        return starts[nearer], (f"blend of the chains from slices {min(a, b)} and {max(a, b)}",)

    def _make_record(self, n: int, leg: core.Leg):
        def make_record(index: int) -> SliceRecord:
            return SliceRecord(index=index, support_index=self._served_by(n, index, leg)[0].support)
        return make_record


def _needed(leg: core.Leg, wanted: Sequence[int]) -> bool:
    """Whether a leg reaches a wanted slice: a gap between supports with none is not walked."""
    if leg.outward:
        return True
    lo, hi = min(leg.slices), max(leg.slices)
    return any(lo <= q <= hi for q in wanted)


def run(job: Job, sink: ResultSink) -> None:
    """Segment ``job``'s slices into ``sink`` by registration-guided propagation."""
    _RegistrationRun([Track(job, sink)]).run()


def run_tracks(tracks: Sequence[Track]) -> None:
    """Several structures in one run: one displacement field per pair of slices and one
    encoder pass per slice for every structure walking them (see the module's doc)."""
    if tracks:
        _RegistrationRun(tracks).run()


__all__ = ["DECODE", "REFINEMENT", "REGISTRATION", "SIMILARITY", "Start", "feature_key", "run", "run_tracks"]
