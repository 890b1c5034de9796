"""Several structures in one run: shared encoder passes, and no pixel claimed twice.

A run segments any number of structures of one query volume (:class:`Structure`: a
name, a label value and its :class:`~SynPoLib.volume.types.Support`). What does not
depend on the structure is done once:

- the backend's **encoder pass** of each query slice (and of each support slice) serves
  every structure (:mod:`SynPoLib.volume.encoder`); the slices and propagate modes walk
  structures labelled on the same slices in lockstep (:func:`.slices.run_tracks`);
- in the registration mode, also the **displacement field** between two slices (on the
  crop around the union of the structures' masks) and the 3-D affine registration of
  another support volume (:func:`.registration.run_tracks`);
- modes without a shared runner (video, hybrid) run the structures one after another.

Each structure keeps everything that is its own: support context, guidance, acceptance,
auto-stop, records. Before overlaps are decided each structure's result is exactly its
one-structure run's in the slices and propagate modes (a test checks it); in the
registration mode the shared field is computed on a larger crop than one structure's,
so masks differ slightly from a one-structure run (measured: docs/multi-structure.md).

**Overlaps.** Structures that touch must not overlap in the result, unless the user's
own segments overlap on a support slice (nested structures: a lesion inside an organ);
such pairs are left overlapping. A pixel two structures claim goes to the one with the
strongest claim (:class:`ConflictRule`); a pixel the user labelled (a support slice, a
corrected or kept slice of a re-run) always wins over a computed one.
"""

from __future__ import annotations

import enum
import itertools
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np

from ..backends.base import Backend
from ..config import Mode, SynPoConfig
from ..preprocess import in_plane_spacing, take_slice, window_bounds
from .encoder import SHARED_ENCODINGS
from .modes import MODES, checked_config
from .sink import PixelEvidence, ResultSink, Track
from .types import (CancelCheck, Job, ProgressCallback, ProgressEvent, SliceSelection, Support, VolumeResult,
                    check_query, resolve_slices)


class ConflictRule(str, enum.Enum):
    """What decides a pixel two structures claim (both computed, not both labelled)."""

    #: the decoder's logit at the pixel: the model's own evidence for each structure
    LOGIT = "logit"
    #: the pixel's similarity to each structure's support prototype (SAM features)
    SIMILARITY = "similarity"
    #: the slice's confidence (score relative to the support's own) of each structure
    CONFIDENCE = "confidence"
    #: how deep inside each structure's mask the pixel lies (distance to its edge, mm)
    DEPTH = "depth"


#: the rule each mode decides doubly claimed pixels by, when none is given. Measured on
#: Colin27 + AAL, 14 touching structures in 4 groups, LiteMedSAM, each group labelled on
#: one slice (benchmarks/conflict_rules.py, docs/multi-structure.md): mean Dice
#:   slices mode:  similarity 0.4908, overlaps left 0.4855, logit 0.4824, depth 0.4744,
#:                 confidence 0.4695; pixels given to the atlas's owner 70 / 63 / 51 / 51 %
#:   registration: confidence 0.6424, logit 0.6423, depth 0.6417, similarity 0.6411
#:                 (overlaps left 0.6427: its chains rarely collide, 1070 pixels in all);
#:                 given to the owner 56 / 51 / 52 / 44 %                             [G]
DEFAULT_RULES: Dict[Mode, ConflictRule] = {Mode.REGISTRATION: ConflictRule.CONFIDENCE}
#: every other mode (the SAM-family ones): the pixel goes to the structure whose support
#: it looks most like                                                                 [G]
DEFAULT_RULE = ConflictRule.SIMILARITY


def default_rule(mode: Mode) -> ConflictRule:
    """The measured conflict rule of ``mode`` (:data:`DEFAULT_RULES`)."""
    return DEFAULT_RULES.get(Mode(mode), DEFAULT_RULE)


@dataclass(frozen=True)
class StructuresConfig:
    """How a multi-structure run shares work and decides overlaps."""

    #: the rule for pixels two structures claim; None: the mode's measured one
    #: (:data:`DEFAULT_RULES`)                                                         [G]
    conflict: Optional[ConflictRule] = None
    #: encoded query slices kept for structures whose walks differ (other support slices)
    shared_encodings: int = SHARED_ENCODINGS

    def __post_init__(self) -> None:
        if self.conflict is not None and not isinstance(self.conflict, ConflictRule):
            object.__setattr__(self, "conflict", ConflictRule(self.conflict))
        if self.shared_encodings < 1:
            raise ValueError("shared_encodings must be >= 1")

    def rule(self, mode: Mode) -> ConflictRule:
        """The rule a run in ``mode`` uses."""
        return self.conflict if self.conflict is not None else default_rule(mode)


@dataclass
class Structure:
    """One structure of a multi-structure run.

    Two entries with the same name are parts of one structure (a re-run whose supports
    lie in two volumes): their slices must not overlap, their results are merged.
    """

    name: str
    support: Support
    #: its value in a labelmap of the result
    label: int = 1
    #: its query slices (None: the run's ``slices``)
    slices: SliceSelection = None
    #: query slice -> support slice (None: the nearest support)
    assignment: Optional[Mapping[int, int]] = None
    #: as ``segment_volume``'s (None: ``query is support.volume``)
    same_volume: Optional[bool] = None


@dataclass
class StructuresResult:
    """Each structure's result on the query, overlaps decided."""

    #: name -> its result (mask and records), in the order the structures were given
    results: Dict[str, VolumeResult]
    #: name -> label value
    labels: Dict[str, int]
    axis: int
    window: Tuple[float, float]
    rule: ConflictRule
    #: pairs left overlapping because the user's segments overlap on a support slice
    overlapping: Tuple[Tuple[str, str], ...] = ()
    #: name -> pixels it gave to another structure that claimed them too
    given_up: Dict[str, int] = field(default_factory=dict)

    def __getitem__(self, name: str) -> VolumeResult:
        return self.results[name]

    @property
    def names(self) -> List[str]:
        return list(self.results)

    def labelmap(self, dtype=np.uint16) -> np.ndarray:
        """One label image of every structure; where a pair is allowed to overlap, the later
        structure's label shows (a ``.seg.nrrd`` keeps both: see :mod:`SynPoLib.io`)."""
        first = next(iter(self.results.values()))
        out = np.zeros(first.mask.shape, dtype=dtype)
        for name, result in self.results.items():
            out[result.mask > 0] = self.labels[name]
        return out


def structures_from_labelmap(volume: np.ndarray, labelmap: np.ndarray, slices: Sequence[int], *,
                             labels: Optional[Sequence[int]] = None, axis: int = 0,
                             spacing: Optional[Sequence[float]] = None,
                             window: Optional[Tuple[float, float]] = None,
                             names: Optional[Mapping[int, str]] = None) -> List[Structure]:
    """One :class:`Structure` per label of ``labelmap`` drawn on the support ``slices``.

    ``labels`` None: every label drawn on any of the slices. A structure's support
    slices are those of ``slices`` it is drawn on; a requested label drawn on none of
    them is refused.
    """
    slices = sorted(set(int(s) for s in (slices if np.ndim(slices) else [slices])))
    n = np.shape(labelmap)[axis] if np.ndim(labelmap) == 3 else 0
    for s in slices:
        if not 0 <= s < n:
            raise ValueError(f"support slice {s} is outside the volume (0..{n - 1} along axis {axis})")
    drawn = {s: set(int(v) for v in np.unique(take_slice(labelmap, s, axis))) - {0} for s in slices}
    present = sorted(set().union(*drawn.values()))
    if labels is None:
        labels = present
        if not labels:
            raise ValueError(f"no label is drawn on support slice(s) {', '.join(map(str, slices))}")
    out = []
    for label in labels:
        label = int(label)
        mine = [s for s in slices if label in drawn[s]]
        if not mine:
            raise ValueError(f"label {label} is not drawn on support slice(s) {', '.join(map(str, slices))} "
                             f"(drawn there: {', '.join(map(str, present)) or 'nothing'})")
        name = (names or {}).get(label, f"label {label}")
        out.append(Structure(name=name, label=label,
                             support=Support(volume=volume, mask=labelmap == label, slices=mine, axis=axis,
                                             spacing=spacing, window=window)))
    return out


# ---------------------------------------------------------------------------- running
@dataclass
class StructuresRun:
    """Each structure's result before overlaps are decided, and what decides them."""

    structures: List[Structure]
    results: Dict[str, VolumeResult]
    #: name -> slice -> the painted pixels' evidence (logits, similarity)
    evidence: Dict[str, Dict[int, PixelEvidence]]
    axis: int
    window: Tuple[float, float]
    query_spacing: Optional[Sequence[float]]
    #: run statistics: encoder passes of query slices, ...
    stats: Dict[str, int] = field(default_factory=dict)
    #: the mode that ran (it decides the default conflict rule)
    mode: Mode = Mode.SLICES


class _Progress:
    """One progress count over every structure's slices."""

    def __init__(self, callback: ProgressCallback, total: int) -> None:
        self.callback = callback
        self.total = total
        self.done = 0
        self.start = time.perf_counter()

    def track(self, name: str) -> Optional[Callable[[ProgressEvent], None]]:
        if self.callback is None:
            return None

        def forward(event: ProgressEvent) -> None:
            self.done += 1
            self.callback(ProgressEvent(done=self.done, total=self.total, record=event.record, mask=event.mask,
                                        elapsed=time.perf_counter() - self.start, structure=name))
        return forward


def _shared_runner(mode: Mode) -> Optional[Callable[[Sequence[Track], int], None]]:
    """The mode's runner of several tracks at once, if it has one."""
    if mode == Mode.SLICES:
        from . import slices

        return lambda tracks, capacity: slices.run_tracks(tracks, capacity=capacity)
    if mode == Mode.PROPAGATE:
        from . import propagate, slices

        return lambda tracks, capacity: slices.run_tracks(tracks, guidance=propagate.guidance, capacity=capacity)
    if mode == Mode.REGISTRATION:
        from . import registration

        return lambda tracks, capacity: registration.run_tracks(tracks)
    return None


def run_structures(backend: Backend, query: np.ndarray, structures: Sequence[Structure], *,
                   config: Optional[SynPoConfig] = None, slices: SliceSelection = None,
                   query_spacing: Optional[Sequence[float]] = None,
                   query_window: Optional[Tuple[float, float]] = None, batch_size: int = 1,
                   progress: ProgressCallback = None, cancel: CancelCheck = None,
                   options: StructuresConfig = StructuresConfig(),
                   query_origin: Optional[Sequence[float]] = None,
                   query_direction: Optional[Sequence[float]] = None) -> StructuresRun:
    """Segment every structure, sharing encoder passes; overlaps are left as they come.

    :func:`segment_structures` is this plus :func:`resolve_overlaps`.
    """
    structures = list(structures)
    if not structures:
        raise ValueError("give at least one structure")
    config = checked_config(backend, config)
    axes = {s.support.axis for s in structures}
    if len(axes) != 1:
        raise ValueError(f"every structure's support must lie along one axis, got axes {sorted(axes)}")
    _check_parts(structures, query)
    first = structures[0]
    same0, spacing0 = check_query(query, first.support, first.same_volume, query_spacing)
    query_spacing = spacing0
    if query_window is None:
        # one window for the query, whatever structure asks: the encoder passes are shared
        query_window = (first.support.window if same0 and first.support.window else None) \
            or window_bounds(query, config.window)
    jobs = []
    for s in structures:
        job = Job.build(backend, query, s.support, config, slices=s.slices if s.slices is not None else slices,
                        query_spacing=query_spacing, query_window=query_window, assignment=s.assignment,
                        same_volume=s.same_volume, batch_size=batch_size, query_origin=query_origin,
                        query_direction=query_direction)
        jobs.append(job)
    counter = _Progress(progress, sum(len(j.wanted) for j in jobs))
    tracks = [Track(job, ResultSink(job, counter.track(s.name), cancel, keep_evidence=len(structures) > 1), s.name)
              for job, s in zip(jobs, structures)]
    mode = config.propagation.mode
    runner = _shared_runner(mode)
    passes_before = _encoded(backend)
    if runner is not None:
        for track in tracks:
            track.sink.copy_supports()
        runner(tracks, options.shared_encodings)
    else:
        for track in tracks:
            MODES[mode](track.job, track.sink)
    results: Dict[str, List[VolumeResult]] = {}
    evidence: Dict[str, Dict[int, PixelEvidence]] = {}
    for track in tracks:
        results.setdefault(track.name, []).append(track.sink.result())
        evidence.setdefault(track.name, {}).update(track.sink.evidence)
    merged = {name: _merge(parts) for name, parts in results.items()}
    stats = {"encoded_slices": _encoded(backend) - passes_before}
    return StructuresRun(structures=structures, results=merged, evidence=evidence, axis=first.support.axis,
                         window=tuple(query_window), query_spacing=query_spacing, stats=stats, mode=mode)


def _encoded(backend: Backend) -> int:
    """Slices the backend has encoded so far (each backbone counts a slice once)."""
    counts = getattr(getattr(backend, "encoder_calls", None), "counts", None) or {0: 0}
    return max(counts.values())


def _check_parts(structures: Sequence[Structure], query: np.ndarray) -> None:
    by_name: Dict[str, List[Structure]] = {}
    for s in structures:
        by_name.setdefault(s.name, []).append(s)
    for name, parts in by_name.items():
        labels = {p.label for p in parts}
        if len(labels) > 1:
            raise ValueError(f"structure {name!r} is given with several labels {sorted(labels)}")
        if len(parts) > 1:
            n = np.shape(query)[parts[0].support.axis]
            seen: Set[int] = set()
            for p in parts:
                if p.slices is None:
                    raise ValueError(f"the parts of structure {name!r} must each say which slices they segment")
                mine = set(resolve_slices(p.slices, n))
                if mine & seen:
                    raise ValueError(f"the parts of structure {name!r} share slices {sorted(mine & seen)[:5]}")
                seen |= mine


def _merge(parts: List[VolumeResult]) -> VolumeResult:
    if len(parts) == 1:
        return parts[0]
    mask = parts[0].mask.copy()
    for p in parts[1:]:
        np.maximum(mask, p.mask, out=mask)
    records = sorted((r for p in parts for r in p.records), key=lambda r: r.index)
    return VolumeResult(mask=mask, records=records, axis=parts[0].axis, window=parts[0].window)


# ---------------------------------------------------------------------------- overlaps
def overlapping_pairs(structures: Sequence[Structure]) -> Set[FrozenSet[str]]:
    """Pairs of structures drawn overlapping on a slice labelled for both: the user means them to."""
    allowed: Set[FrozenSet[str]] = set()
    for a, b in itertools.combinations(structures, 2):
        if a.name == b.name or frozenset((a.name, b.name)) in allowed:
            continue
        if a.support.axis != b.support.axis or np.shape(a.support.mask) != np.shape(b.support.mask):
            continue
        if not (a.support.volume is b.support.volume or np.shape(a.support.volume) == np.shape(b.support.volume)):
            continue
        axis = a.support.axis
        # only a slice labelled for both says how the user means them: elsewhere one of
        # the masks is not the user's drawing of that slice
        for s in sorted(set(a.support.slices) & set(b.support.slices)):
            if np.any((take_slice(a.support.mask, s, axis) > 0) & (take_slice(b.support.mask, s, axis) > 0)):
                allowed.add(frozenset((a.name, b.name)))
                break
    return allowed


def _depth(mask: np.ndarray, spacing: Tuple[float, float]) -> np.ndarray:
    from scipy import ndimage  # on first use: the Slicer GUI imports this package without scipy

    return ndimage.distance_transform_edt(mask, sampling=spacing).astype(np.float32)


def _strength(rule: ConflictRule, mask: np.ndarray, index: int, evidence: Optional[PixelEvidence],
              confidence: float, spacing: Tuple[float, float]) -> Optional[np.ndarray]:
    """A structure's claim on every pixel of its mask on one slice (-inf elsewhere); None
    when the rule's evidence is missing for this slice."""
    out = np.full(mask.shape, -np.inf, dtype=np.float32)
    if rule == ConflictRule.DEPTH:
        out[mask] = _depth(mask, spacing)[mask]
        return out
    if rule == ConflictRule.CONFIDENCE:
        if not np.isfinite(confidence):
            return None
        out[mask] = confidence
        return out
    key = "logits" if rule == ConflictRule.LOGIT else "similarity"
    if evidence is None or key not in evidence[1]:
        return None
    where, values = evidence[0], evidence[1][key].astype(np.float32)
    flat = out.reshape(-1)
    flat[where] = values
    # pixels a 3D clean-up kept but the evidence never saw cannot happen; pixels the
    # evidence holds but the mask lost are cleared
    flat[~mask.reshape(-1)] = -np.inf
    return out


def resolve_overlaps(masks: Mapping[str, np.ndarray], axis: int, rule: ConflictRule, *,
                     evidence: Optional[Mapping[str, Mapping[int, PixelEvidence]]] = None,
                     confidence: Optional[Mapping[str, Mapping[int, float]]] = None,
                     fixed: Optional[Mapping[str, Set[int]]] = None,
                     allowed: Set[FrozenSet[str]] = frozenset(),
                     spacing: Tuple[float, float] = (1.0, 1.0),
                     only: Optional[Set[int]] = None) -> Dict[str, Dict[int, Dict[str, int]]]:
    """Give each pixel several structures claim to one of them, in place.

    ``masks``: name -> uint8 volume (changed in place). On slice ``i`` a structure with
    ``i`` in ``fixed[name]`` (labelled by the user, or kept from an earlier result) has
    an unbeatable claim; the others claim by ``rule``. Claimants are taken strongest
    first, each kept if every one kept before may overlap it (``allowed``); ties go to
    the structure given first. When the rule's evidence is missing on a slice for a
    claimant (a mode that gives none), the slice is decided by depth. ``only``: the
    slices to look at (default: all).

    Returns loser -> slice -> winner -> pixels given up.
    """
    names = list(masks)
    evidence = evidence or {}
    confidence = confidence or {}
    fixed = fixed or {}
    lost: Dict[str, Dict[int, Dict[str, int]]] = {}
    if len(names) < 2:
        return lost
    first = masks[names[0]]
    counts = np.zeros(first.shape, dtype=np.uint8)
    for name in names:
        counts += masks[name] > 0
    busy = np.flatnonzero((counts > 1).any(axis=tuple(a for a in range(3) if a != axis)))
    for i in busy:
        i = int(i)
        if only is not None and i not in only:
            continue
        where = [slice(None)] * 3
        where[axis] = i
        views = {name: masks[name][tuple(where)] for name in names}
        claims = {name: views[name] > 0 for name in names}
        conflict = sum(c.astype(np.uint8) for c in claims.values()) > 1
        if not conflict.any():
            continue
        claimants = [name for name in names if (claims[name] & conflict).any()]
        strengths = {}
        slice_rule = rule
        for name in claimants:
            if i in fixed.get(name, ()):
                strengths[name] = np.where(claims[name], np.inf, -np.inf).astype(np.float32)
                continue
            s = _strength(slice_rule, claims[name], i, evidence.get(name, {}).get(i),
                          confidence.get(name, {}).get(i, float("nan")), spacing)
            if s is None:
                slice_rule = ConflictRule.DEPTH
                break
            strengths[name] = s
        if slice_rule != rule:  # the rule's evidence is missing here: decide by depth
            strengths = {name: (np.where(claims[name], np.inf, -np.inf).astype(np.float32)
                                if i in fixed.get(name, ()) else
                                _strength(ConflictRule.DEPTH, claims[name], i, None, float("nan"), spacing))
                         for name in claimants}
        stack = np.stack([strengths[name] for name in claimants])  # (c, rows, cols)
        rows, cols = np.nonzero(conflict)
        values = stack[:, rows, cols]  # (c, p)
        # strongest first; a stable sort keeps the given order on ties
        order = np.argsort(-values, axis=0, kind="stable")
        losers = np.zeros(values.shape, dtype=bool)
        winners = order[0]
        if not any(frozenset(pair) in allowed for pair in itertools.combinations(claimants, 2)):
            losers = values > -np.inf
            losers[winners, np.arange(values.shape[1])] = False
        else:
            for p in range(values.shape[1]):
                kept: List[int] = []
                for c in order[:, p]:
                    if values[c, p] == -np.inf:
                        continue
                    if all(frozenset((claimants[c], claimants[k])) in allowed for k in kept):
                        kept.append(int(c))
                    else:
                        losers[c, p] = True
        for c, name in enumerate(claimants):
            gone = losers[c]
            if not gone.any():
                continue
            views[name][rows[gone], cols[gone]] = 0
            tally = lost.setdefault(name, {}).setdefault(i, {})
            for w in np.unique(winners[gone]):
                tally[claimants[int(w)]] = tally.get(claimants[int(w)], 0) + int(np.sum(winners[gone] == w))
    return lost


def segment_structures(backend: Backend, query: np.ndarray, structures: Sequence[Structure], *,
                       config: Optional[SynPoConfig] = None, slices: SliceSelection = None,
                       query_spacing: Optional[Sequence[float]] = None,
                       query_window: Optional[Tuple[float, float]] = None, batch_size: int = 1,
                       progress: ProgressCallback = None, cancel: CancelCheck = None,
                       options: StructuresConfig = StructuresConfig(),
                       query_origin: Optional[Sequence[float]] = None,
                       query_direction: Optional[Sequence[float]] = None) -> StructuresResult:
    """Segment several structures of ``query`` in one run (see the module's doc).

    Arguments as :func:`SynPoLib.volume.segment_volume`'s (the query's placement too), per run; each
    :class:`Structure` may narrow its slices and assignment. ``progress`` counts every
    structure's slices together; each event names its structure. A cancelled run raises
    :class:`~SynPoLib.errors.Cancelled`.
    """
    run = run_structures(backend, query, structures, config=config, slices=slices, query_spacing=query_spacing,
                         query_window=query_window, batch_size=batch_size, progress=progress, cancel=cancel,
                         options=options, query_origin=query_origin, query_direction=query_direction)
    return finish(run, options.rule(run.mode))


def finish(run: StructuresRun, rule: ConflictRule, *, fixed: Optional[Mapping[str, Set[int]]] = None,
           only: Optional[Set[int]] = None) -> StructuresResult:
    """Decide the overlaps of a :class:`StructuresRun` and note them in the records.

    ``fixed``: name -> slices the user labelled or that are kept as they were, besides
    the support slices copied as labelled (found in the records).
    """
    allowed = overlapping_pairs(run.structures)
    labels = {}
    for s in run.structures:
        labels.setdefault(s.name, int(s.label))
    masks = {name: r.mask for name, r in run.results.items()}
    confidence = {name: {rec.index: rec.confidence for rec in r.records if rec.support_index >= 0}
                  for name, r in run.results.items()}
    pinned = {name: {rec.index for rec in r.records if rec.support_index < 0} | set((fixed or {}).get(name, ()))
              for name, r in run.results.items()}
    spacing = in_plane_spacing(run.query_spacing, run.axis)
    lost = resolve_overlaps(masks, run.axis, ConflictRule(rule), evidence=run.evidence, confidence=confidence,
                            fixed=pinned, allowed=allowed, spacing=spacing, only=only)
    given_up = {}
    for name, per_slice in lost.items():
        result = run.results[name]
        by_index = {rec.index: rec for rec in result.records}
        for i, winners in per_slice.items():
            total = sum(winners.values())
            given_up[name] = given_up.get(name, 0) + total
            rec = by_index.get(i)
            if rec is not None:
                rec.pixels = max(int(rec.pixels) - total, 0)
                rec.notes = tuple(rec.notes) + tuple(f"overlap: {count} pixels went to {winner}"
                                                     for winner, count in sorted(winners.items()))
    pairs = tuple(tuple(sorted(pair)) for pair in sorted(allowed, key=sorted))
    return StructuresResult(results=run.results, labels=labels, axis=run.axis, window=run.window,
                            rule=ConflictRule(rule), overlapping=pairs, given_up=given_up)


__all__ = ["ConflictRule", "DEFAULT_RULE", "DEFAULT_RULES", "Structure", "StructuresConfig", "StructuresResult",
           "StructuresRun", "default_rule", "finish", "overlapping_pairs", "resolve_overlaps", "run_structures",
           "segment_structures", "structures_from_labelmap"]
