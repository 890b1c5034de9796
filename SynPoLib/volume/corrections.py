"""Run again after the user corrected slices: the corrections teach the next run.

After a run the user fixes a few slices (Segment Editor, or a corrected labelmap on the
command line). A re-run treats every corrected slice as one more labelled slice:

- a corrected slice where the structure is drawn is an extra **support**: it serves
  the query slices nearer to it than to any other support, as labelled slices do;
- a corrected slice where the user erased the structure is a **barrier**: the structure
  is absent there, so no support's walk crosses it; slices beyond it with no support
  on their side are emptied (a leak past the structure's end, erased on one slice,
  goes away on all the slices behind it);
- only the slices whose result **can change** are segmented again: those between a new
  correction and its neighbouring supports, barriers or corrected slices (or the end
  of the run's range) (:func:`plan_correction`); every other slice is left as it was;
- a corrected slice is **never changed**, and wins any pixel another structure claims.

Corrections of earlier rounds stay supports and barriers, but trigger nothing: their
neighbours were recomputed when they were made.

Positions: within one volume, slice indices; a support in another volume sits at its
relative position along the axis (as :func:`~SynPoLib.volume.types.assign_supports`
places it). A re-run whose supports lie in two volumes (the original support in
another volume, corrected slices in the query) runs each volume's slices as one part
of the structure (:class:`~SynPoLib.volume.structures.Structure`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..backends.base import Backend
from ..config import SynPoConfig
from ..preprocess import take_slice
from .structures import Structure, StructuresConfig, StructuresResult, finish, run_structures
from .types import (CancelCheck, ProgressCallback, SliceRecord, SliceSelection, Support, VolumeResult, check_query,
                    resolve_slices, set_slice)

#: notes on the records of a re-run
CORRECTED = "corrected by the user"
EMPTIED = "correction: the structure is erased on a corrected slice between here and every support"
RECOMPUTED = "recomputed after a correction"

#: what serves a recomputed slice: ("support", s) an original support slice,
#: ("corrected", c) a corrected query slice
Source = Tuple[str, int]
ORIGINAL = "support"
CORRECTION = "corrected"


@dataclass(frozen=True)
class CorrectionPlan:
    """What a re-run does for one structure."""

    #: corrected slices of this round (they trigger recomputation) and of earlier ones
    corrected: Tuple[int, ...]
    earlier: Tuple[int, ...]
    #: corrected slices (either round) where the structure is absent
    barriers: Tuple[int, ...]
    #: recomputed query slice -> what serves it
    recompute: Dict[int, Source]
    #: slices emptied: no support on their side of a barrier
    emptied: Tuple[int, ...]

    @property
    def touched(self) -> List[int]:
        """Every slice the re-run may change (recomputed or emptied), ascending."""
        return sorted(set(self.recompute) | set(self.emptied))


def plan_correction(wanted: Sequence[int], supports: Mapping[int, float], corrected: Mapping[int, bool],
                    earlier: Optional[Mapping[int, bool]] = None, same_volume: bool = True) -> CorrectionPlan:
    """The slices a re-run recomputes, and what serves each.

    ``wanted``: the query slices the run covers. ``supports``: original support slice ->
    its position in the query (its index when ``same_volume``: then it is a query slice
    kept as labelled). ``corrected`` / ``earlier``: corrected query slice (this round /
    earlier rounds) -> whether the structure is drawn on it. A slice is recomputed when
    it lies strictly between a slice corrected this round and the nearest support,
    barrier or corrected slice on that side (or the end of ``wanted``), and is none of
    those. It is served by the nearest support (original
    or corrected) between the barriers around it, ties to the lower; with none there,
    it is emptied.
    """
    earlier = dict(earlier or {})
    corrected = {int(c): bool(v) for c, v in corrected.items()}
    earlier = {int(c): bool(v) for c, v in earlier.items() if int(c) not in corrected}
    marks = {**earlier, **corrected}
    wanted = sorted(set(int(q) for q in wanted))
    # original supports a correction replaced are no supports any more
    originals = {int(s): float(p) for s, p in supports.items() if not any(abs(p - c) < 1e-9 for c in marks)}
    points: List[Tuple[float, str, int]] = [(p, ORIGINAL, s) for s, p in originals.items()]
    points += [(float(c), CORRECTION if drawn else "barrier", c) for c, drawn in marks.items()]
    points.sort()
    positions = [p for p, _, _ in points]
    lo_end, hi_end = (wanted[0] - 1, wanted[-1] + 1) if wanted else (0, 0)
    touched = set()
    for c in corrected:
        k = bisect.bisect_left(positions, c)
        below = [p for p in positions[:k] if p < c]
        above = [p for p in positions[k:] if p > c]
        lo = below[-1] if below else lo_end
        hi = above[0] if above else hi_end
        touched.update(q for q in wanted if lo < q < hi)
    touched -= set(marks)
    if same_volume:
        touched -= set(int(s) for s in supports)
    barriers = sorted(c for c, drawn in marks.items() if not drawn)
    servers = [(p, kind, s) for p, kind, s in points if kind != "barrier"]
    recompute: Dict[int, Source] = {}
    emptied = []
    for q in sorted(touched):
        b = bisect.bisect_left(barriers, q)
        low = barriers[b - 1] if b > 0 else -np.inf
        high = barriers[b] if b < len(barriers) else np.inf
        inside = [(abs(p - q), p, kind, s) for p, kind, s in servers if low < p < high]
        if not inside:
            emptied.append(q)
            continue
        _, _, kind, s = min(inside)
        recompute[q] = (kind, s)
    return CorrectionPlan(corrected=tuple(sorted(corrected)), earlier=tuple(sorted(earlier)),
                          barriers=tuple(barriers), recompute=recompute, emptied=tuple(emptied))


@dataclass
class Correction:
    """One structure as the user left it after correcting slices, for a re-run."""

    name: str
    #: the support of the first run (its slices stay supports)
    support: Support
    #: the structure's mask on the query now: the last result with the user's corrections
    current: np.ndarray
    #: slices corrected since the last run (each triggers recomputation around it)
    corrected: Sequence[int]
    #: slices corrected in earlier rounds (supports or barriers, nothing more)
    earlier: Sequence[int] = ()
    label: int = 1
    #: the query slices the runs cover (None: all)
    slices: SliceSelection = None
    same_volume: Optional[bool] = None
    #: the last run's records, carried over for the slices left as they were
    records: Sequence[SliceRecord] = ()


@dataclass
class CorrectedResult(StructuresResult):
    """A re-run's result: each structure's whole mask, and what the corrections changed."""

    plans: Dict[str, CorrectionPlan] = field(default_factory=dict)
    #: name -> slices whose mask differs from before the re-run (corrected slices excluded)
    changed: Dict[str, List[int]] = field(default_factory=dict)

    @property
    def recomputed(self) -> Dict[str, List[int]]:
        return {name: sorted(plan.recompute) for name, plan in self.plans.items()}


def _preset_of(backend: Backend) -> SynPoConfig:
    from ..presets import preset

    return preset(backend.preset)


def _positions(correction: Correction, same: bool, n_query: int) -> Dict[int, float]:
    support = correction.support
    n_support = support.volume.shape[support.axis]
    scale = max(n_query - 1, 1) / max(n_support - 1, 1)
    return {int(s): float(s) if same else s * scale for s in support.slices}


def rerun(backend: Backend, query: np.ndarray, corrections: Sequence[Correction], *,
          config: Optional[SynPoConfig] = None, query_spacing: Optional[Sequence[float]] = None,
          query_window: Optional[Tuple[float, float]] = None, batch_size: int = 1,
          progress: ProgressCallback = None, cancel: CancelCheck = None,
          options: StructuresConfig = StructuresConfig(), query_origin: Optional[Sequence[float]] = None,
          query_direction: Optional[Sequence[float]] = None) -> CorrectedResult:
    """Run again after corrections (see the module's doc); every structure in one run.

    The inputs (``current`` masks included) are never written to. Progress counts the
    recomputed slices only. A cancelled run raises :class:`~SynPoLib.errors.Cancelled`.
    """
    corrections = list(corrections)
    if not corrections:
        raise ValueError("give at least one structure to run again")
    names = [c.name for c in corrections]
    if len(set(names)) != len(names):
        raise ValueError("each structure may be given once")
    parts: List[Structure] = []
    plans: Dict[str, CorrectionPlan] = {}
    axis = corrections[0].support.axis
    n_query = np.shape(query)[axis] if np.ndim(query) == 3 else 0
    for c in corrections:
        if c.support.axis != axis:
            raise ValueError("every structure's support must lie along one axis")
        if np.shape(c.current) != np.shape(query):
            raise ValueError(f"the current mask of {c.name!r} has shape {np.shape(c.current)}, the query "
                             f"{np.shape(query)}")
        same, _ = check_query(query, c.support, c.same_volume, query_spacing)
        wanted = resolve_slices(c.slices, n_query)
        marks = sorted(set(int(s) for s in c.corrected) | set(int(s) for s in c.earlier))
        outside = [s for s in marks if not 0 <= s < n_query]
        if outside:
            raise ValueError(f"corrected slice {outside[0]} is outside the query (0..{n_query - 1} along axis {axis})")
        drawn = {s: bool(np.any(take_slice(c.current, s, axis))) for s in marks}
        plan = plan_correction(wanted, _positions(c, same, n_query), {s: drawn[s] for s in c.corrected},
                               {s: drawn[s] for s in c.earlier}, same_volume=same)
        plans[c.name] = plan
        from_original = {q: s for q, (kind, s) in plan.recompute.items() if kind == ORIGINAL}
        from_corrected = {q: s for q, (kind, s) in plan.recompute.items() if kind == CORRECTION}
        if same:
            # one volume: one support holding the original and the corrected slices
            used = sorted(set(from_original.values()) | set(from_corrected.values()))
            if used:
                mask = (np.asarray(c.current) > 0).copy()  # corrected slices as the user left them
                for s in set(from_original.values()):
                    set_slice(mask, s, axis, take_slice(c.support.mask, s, axis) > 0)
                support = Support(volume=c.support.volume, mask=mask, slices=used, axis=axis,
                                  spacing=c.support.spacing, window=c.support.window)
                parts.append(Structure(c.name, support, c.label, slices=sorted(plan.recompute),
                                       assignment={q: s for q, (_, s) in plan.recompute.items()},
                                       same_volume=True))
        else:
            if from_original:
                support = Support(volume=c.support.volume, mask=c.support.mask,
                                  slices=sorted(set(from_original.values())), axis=axis,
                                  spacing=c.support.spacing, window=c.support.window)
                parts.append(Structure(c.name, support, c.label, slices=sorted(from_original),
                                       assignment=from_original, same_volume=False))
            if from_corrected:
                support = Support(volume=query, mask=np.asarray(c.current) > 0,
                                  slices=sorted(set(from_corrected.values())), axis=axis, spacing=query_spacing,
                                  window=query_window, origin=query_origin, direction=query_direction)
                parts.append(Structure(c.name, support, c.label, slices=sorted(from_corrected),
                                       assignment=from_corrected, same_volume=True))
    if query_window is None:
        from ..presets import preset
        from ..preprocess import window_bounds

        cfg = config if config is not None else preset(backend.preset)
        first = corrections[0]
        same0, _ = check_query(query, first.support, first.same_volume, query_spacing)
        # the window of the first run: the support's own in one volume, else the query's
        query_window = (first.support.window if same0 and first.support.window else None) \
            or window_bounds(query, cfg.window)
    if parts:
        run = run_structures(backend, query, parts, config=config, query_spacing=query_spacing,
                             query_window=query_window, batch_size=batch_size, progress=progress,
                             cancel=cancel, options=options, query_origin=query_origin,
                             query_direction=query_direction)
        fresh = run.results
    else:
        run, fresh = None, {}
    results: Dict[str, VolumeResult] = {}
    changed: Dict[str, List[int]] = {}
    for c in corrections:
        plan = plans[c.name]
        current = (np.asarray(c.current) > 0).astype(np.uint8)
        mask = current.copy()
        new = fresh.get(c.name)
        for q in plan.recompute:
            set_slice(mask, q, axis, take_slice(new.mask, q, axis))
        for q in plan.emptied:
            set_slice(mask, q, axis, 0)
        records = _records(c, plan, new)
        results[c.name] = VolumeResult(mask=mask, records=records, axis=axis, window=tuple(query_window))
    if run is not None:
        run.results = results
        run.structures = _all_structures(corrections, parts)
        touched = set().union(*(set(p.touched) for p in plans.values()))
        fixed = {c.name: set(range(n_query)) - set(plans[c.name].touched) for c in corrections}
        decided = finish(run, options.rule(run.mode), fixed=fixed, only=touched)
    else:
        decided = StructuresResult(results=results, labels={c.name: int(c.label) for c in corrections}, axis=axis,
                                   window=tuple(query_window),
                                   rule=options.rule((config or _preset_of(backend)).propagation.mode))
    for c in corrections:
        before = np.asarray(c.current) > 0
        after = decided.results[c.name].mask > 0
        changed[c.name] = [q for q in plans[c.name].touched
                           if not np.array_equal(take_slice(before, q, axis), take_slice(after, q, axis))]
    return CorrectedResult(results=decided.results, labels=decided.labels, axis=axis, window=decided.window,
                           rule=decided.rule, overlapping=decided.overlapping, given_up=decided.given_up,
                           plans=plans, changed=changed)


def _all_structures(corrections: Sequence[Correction], parts: Sequence[Structure]) -> List[Structure]:
    """Every structure for the overlap rules: the run's parts, and the originals (whose
    supports say which pairs the user drew overlapping)."""
    return [Structure(c.name, c.support, c.label) for c in corrections] + list(parts)


def _records(c: Correction, plan: CorrectionPlan, new: Optional[VolumeResult]) -> List[SliceRecord]:
    touched = set(plan.touched)
    marks = set(plan.corrected) | set(plan.earlier)
    out = {r.index: r for r in c.records if r.index not in touched and r.index not in marks}
    axis = c.support.axis
    for q in marks:
        pixels = int(np.count_nonzero(take_slice(c.current, q, axis)))
        out[q] = SliceRecord(index=q, support_index=-1, pixels=pixels, notes=(CORRECTED,))
    if new is not None:
        for r in new.records:
            if r.index in plan.recompute:
                r.notes = tuple(r.notes) + (RECOMPUTED,)
                out[r.index] = r
    for q in plan.emptied:
        # decided by the user's erasure, as a labelled slice is: never flagged
        out[q] = SliceRecord(index=q, support_index=-1, pixels=0, notes=(EMPTIED,))
    return sorted(out.values(), key=lambda r: r.index)


__all__ = ["CORRECTED", "CorrectedResult", "Correction", "CorrectionPlan", "EMPTIED", "RECOMPUTED",
           "plan_correction", "rerun"]
