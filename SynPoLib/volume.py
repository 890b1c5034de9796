"""The volume driver: SynPo on every query slice along one axis (spec §6).

Arrays are indexed like SimpleITK's and Slicer's ``arrayFromVolume``: (k, j, i). A
support is one or more labelled slices along ``axis`` (0, 1 or 2) of a support volume;
the query is the same or another volume, cut along the same axis. Each query slice is
served by the nearest support slice (by relative position along the axis, which is the
slice distance when support and query are one volume), or by an explicit assignment
(the FSMIS protocol's chunks).

Memory does not grow with the number of slices beyond the output mask: slices are
windowed, encoded, segmented and dropped one batch at a time.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .backends.base import Backend
from .config import Mode, SynPoConfig
from .presets import preset
from .prompts import grow_box, mask_box
from .qc import ChainState, keep_support_component, relative_confidence
from .preprocess import (SliceGeometry, apply_window, in_plane_spacing, slice_geometry, take_slice,
                         window_bounds)
from .segmenter import Guide, SupportContext, SynPoSegmenter


class Cancelled(RuntimeError):
    """The run was cancelled; nothing was returned, so nothing the caller holds changed."""


@dataclass
class Support:
    """Labelled support slices of one volume."""

    volume: np.ndarray
    mask: np.ndarray
    slices: Sequence[int]
    axis: int = 0
    #: voxel spacing in array order (k, j, i); None means isotropic
    spacing: Optional[Sequence[float]] = None
    #: intensity window (low, high); None derives it from the configuration
    window: Optional[Tuple[float, float]] = None

    def __post_init__(self) -> None:
        if self.axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {self.axis}")
        if np.ndim(self.volume) != 3:
            raise ValueError(f"support volume must be 3-D, got shape {np.shape(self.volume)}")
        if np.shape(self.mask) != np.shape(self.volume):
            raise ValueError(
                f"support mask shape {np.shape(self.mask)} differs from its volume's {np.shape(self.volume)}")
        self.slices = [int(s) for s in (self.slices if np.ndim(self.slices) else [self.slices])]
        if not self.slices:
            raise ValueError("give at least one support slice")
        n = self.volume.shape[self.axis]
        for s in self.slices:
            if not 0 <= s < n:
                raise ValueError(f"support slice {s} is outside the volume (0..{n - 1} along axis {self.axis})")
            if not np.any(take_slice(self.mask, s, self.axis)):
                raise ValueError(f"support mask is empty on slice {s} along axis {self.axis}")


@dataclass
class SliceRecord:
    """What happened on one query slice."""

    index: int
    #: the support slice that served it, or -1 for a support slice copied as labelled
    support_index: int
    #: prompt points in native slice pixels (col, row), and their labels
    points: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int32))
    #: box prompt in native slice pixels (col0, row0, col1, row1), if any
    box: Optional[np.ndarray] = None
    score: float = float("nan")
    synergy_score: float = float("nan")
    iou: float = float("nan")
    #: score relative to the support's own (SynPoLib.qc): ~1 looks like the support
    confidence: float = float("nan")
    pixels: int = 0
    accepted: bool = True
    #: seconds: encode (share of the batch), decode, synpo (own work)
    timings: Dict[str, float] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "index": self.index, "support_index": self.support_index,
            "points": np.round(self.points, 2).tolist(), "labels": self.labels.tolist(),
            "box": None if self.box is None else np.round(self.box, 2).tolist(),
            "score": self.score, "synergy_score": self.synergy_score, "iou": self.iou,
            "confidence": self.confidence,
            "pixels": self.pixels, "accepted": self.accepted,
            "timings": {k: round(v, 5) for k, v in self.timings.items()}, "notes": list(self.notes),
        }


@dataclass
class ProgressEvent:
    """Sent after each slice: counts, its record and its native mask (for streaming)."""

    done: int
    total: int
    record: SliceRecord
    mask: np.ndarray
    elapsed: float

    @property
    def remaining_seconds(self) -> float:
        return self.elapsed / max(self.done, 1) * (self.total - self.done)


@dataclass
class VolumeResult:
    """The segmentation of a query volume (same shape) and a record per slice."""

    mask: np.ndarray
    records: List[SliceRecord]
    axis: int
    window: Tuple[float, float]

    def record(self, index: int) -> SliceRecord:
        for rec in self.records:
            if rec.index == index:
                return rec
        raise KeyError(index)


CancelCheck = Union[Callable[[], bool], threading.Event, None]


def should_stop(cancel: CancelCheck) -> bool:
    """Whether a cancel check (an Event, a callable or None) asks to stop now."""
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set() if is_set is not None else cancel())


def assign_supports(query_slices: Sequence[int], support_slices: Sequence[int], n_query: int,
                    n_support: int) -> Dict[int, int]:
    """Nearest support slice for each query slice, by relative position along the axis.

    Positions are index / (n - 1), so within one volume this is plain slice distance;
    ties go to the lower support slice.
    """
    sup = sorted(set(int(s) for s in support_slices))
    sup_pos = np.array([s / max(n_support - 1, 1) for s in sup])
    out = {}
    for q in query_slices:
        d = np.abs(sup_pos - q / max(n_query - 1, 1))
        out[int(q)] = sup[int(np.argmin(d))]
    return out


def _set_slice(volume: np.ndarray, index: int, axis: int, values: np.ndarray) -> None:
    where = [slice(None)] * 3
    where[axis] = index
    volume[tuple(where)] = values


def resolve_slices(slices: Optional[Union[Sequence[int], range, Tuple[int, int]]], n: int) -> List[int]:
    """Query slice indices: None is all; a (start, stop) pair is a half-open range."""
    if slices is None:
        return list(range(n))
    if isinstance(slices, tuple) and len(slices) == 2 and not isinstance(slices, range):
        start, stop = slices
        slices = range(int(start), int(stop))
    out = sorted(set(int(s) for s in slices))
    bad = [s for s in out if not 0 <= s < n]
    if bad:
        raise ValueError(f"query slices {bad[:5]} are outside 0..{n - 1}")
    if not out:
        raise ValueError("the query slice range is empty")
    return out


def check_query(query: np.ndarray, support: Support, same_volume: Optional[bool],
                query_spacing: Optional[Sequence[float]]) -> Tuple[bool, Optional[Sequence[float]]]:
    """Validate a query against its support; return (same volume?, query spacing).

    Shared by every mode so that they refuse the same inputs with the same words.
    """
    if np.ndim(query) != 3:
        raise ValueError(f"query volume must be 3-D, got shape {np.shape(query)}")
    same = (query is support.volume) if same_volume is None else bool(same_volume)
    if same and np.shape(query) != np.shape(support.volume):
        raise ValueError("same_volume was given but query and support shapes differ")
    if query_spacing is None and same:
        query_spacing = support.spacing
    return same, query_spacing


def segment_volume(backend: Backend, query: np.ndarray, support: Support, *,
                   config: Optional[SynPoConfig] = None,
                   slices: Optional[Union[Sequence[int], range, Tuple[int, int]]] = None,
                   query_spacing: Optional[Sequence[float]] = None,
                   query_window: Optional[Tuple[float, float]] = None,
                   assignment: Optional[Mapping[int, int]] = None,
                   same_volume: Optional[bool] = None,
                   batch_size: int = 1,
                   progress: Optional[Callable[[ProgressEvent], None]] = None,
                   cancel: CancelCheck = None) -> VolumeResult:
    """Segment ``query`` slice by slice along ``support.axis``.

    ``config`` defaults to the preset measured for the backend (``backend.preset``).

    ``same_volume`` (default: ``query is support.volume``) makes the labelled support
    slices part of the result as labelled instead of re-segmenting them. A cancelled
    run raises :class:`Cancelled`; the inputs are never written to.
    """
    if config is None:
        config = preset(backend.preset)
    if config.propagation.mode in (Mode.VIDEO, Mode.HYBRID):
        try:
            from .video import segment_volume_video
        except ImportError as exc:
            raise ValueError(f"the {config.propagation.mode.value} mode needs SAM2's video predictor "
                             f"(SynPoLib.video): {exc}") from exc
        return segment_volume_video(backend, query, support, config=config, slices=slices,
                                    query_spacing=query_spacing, query_window=query_window,
                                    same_volume=same_volume, hybrid=config.propagation.mode == Mode.HYBRID,
                                    batch_size=batch_size, progress=progress, cancel=cancel)
    same, query_spacing = check_query(query, support, same_volume, query_spacing)
    if batch_size < 1:
        raise ValueError("batch_size must be >= 1")
    axis = support.axis
    n_query = query.shape[axis]
    wanted = resolve_slices(slices, n_query)
    copied = [s for s in wanted if same and s in support.slices]
    todo = [s for s in wanted if s not in copied]

    segmenter = SynPoSegmenter(backend, config)
    q_window = query_window or (support.window if same and support.window else None) \
        or window_bounds(query, config.window)
    s_window = support.window or (q_window if same else window_bounds(support.volume, config.window))

    # Supports: encoded once each.
    s_geometry = slice_geometry(
        _slice_shape(support.volume.shape, axis), in_plane_spacing(support.spacing, axis), config.geometry)
    contexts: Dict[int, SupportContext] = {}
    for s in support.slices:
        image = s_geometry.image_to_roi(apply_window(take_slice(support.volume, s, axis), s_window))
        mask_roi = s_geometry.mask_to_roi(take_slice(support.mask, s, axis) > 0)
        if not mask_roi.any():
            raise ValueError(f"support mask on slice {s} vanishes at the {config.geometry.roi_size}-pixel ROI")
        contexts[s] = segmenter.prepare_support(backend.encode([image])[0], mask_roi)
    if assignment is None:
        assignment = assign_supports(todo, support.slices, n_query, support.volume.shape[axis])
    else:
        missing = [q for q in todo if q not in assignment or assignment[q] not in contexts]
        if missing:
            raise ValueError(f"no support assigned to query slices {missing[:5]}")

    q_geometry: SliceGeometry = slice_geometry(
        _slice_shape(query.shape, axis), in_plane_spacing(query_spacing, axis), config.geometry)
    valid = q_geometry.valid()
    out = np.zeros(query.shape, dtype=np.uint8)
    records: List[SliceRecord] = []
    total = len(wanted)
    start = time.perf_counter()
    propagate = config.propagation.mode == Mode.PROPAGATE

    def report(record: SliceRecord, mask: np.ndarray) -> None:
        records.append(record)
        if progress is not None:
            progress(ProgressEvent(done=len(records), total=total, record=record, mask=mask,
                                   elapsed=time.perf_counter() - start))

    def paint(record: SliceRecord, mask: np.ndarray) -> None:
        if record.accepted:
            _set_slice(out, record.index, axis, mask)
        report(record, mask if record.accepted else np.zeros_like(mask))

    def leave_unpainted(record: SliceRecord, mask: np.ndarray, why: str) -> None:
        record.accepted = False
        record.pixels = 0
        record.notes = tuple(record.notes) + (why,)
        report(record, np.zeros_like(mask))

    for s in copied:
        mask = np.asarray(take_slice(support.mask, s, axis) > 0)
        _set_slice(out, s, axis, mask)
        report(SliceRecord(index=s, support_index=-1, pixels=int(mask.sum()), notes=("support slice",)), mask)

    for support_index, chain in _chains(todo, assignment):
        ctx = contexts[support_index]
        state = ChainState(config.quality)
        previous = _Carry(mask=ctx.mask_roi, low_res=None) if propagate else None
        for b in range(0, len(chain), batch_size):
            batch = chain[b:b + batch_size]
            if state.stopped:
                for s in batch:
                    leave_unpainted(SliceRecord(index=s, support_index=support_index),
                                    np.zeros(q_geometry.native, bool), "auto-stop: not segmented")
                continue
            if should_stop(cancel):
                raise Cancelled(f"cancelled after {len(records)} of {total} slices")
            images = [q_geometry.image_to_roi(apply_window(take_slice(query, s, axis), q_window)) for s in batch]
            t = time.perf_counter()
            encoded = backend.encode(images)
            encode_share = (time.perf_counter() - t) / len(batch)
            for s, enc in zip(batch, encoded):
                if state.stopped:
                    leave_unpainted(SliceRecord(index=s, support_index=support_index),
                                    np.zeros(q_geometry.native, bool), "auto-stop: not segmented")
                    continue
                if should_stop(cancel):
                    raise Cancelled(f"cancelled after {len(records)} of {total} slices")
                guide = _guide(previous, config, valid, ctx.box_wh) if propagate else None
                result = segmenter.segment(enc, ctx, valid, guide=guide)
                t = time.perf_counter()
                mask = q_geometry.logits_to_native(result.logits) > 0
                pixels = int(mask.sum())
                accepted = pixels >= max(config.quality.min_pixels, 1)
                if config.quality.min_score is not None and not result.score >= config.quality.min_score:
                    accepted = False
                confidence = relative_confidence(result.score, ctx.self_score)
                timings = dict(result.timings)
                timings["synpo"] += time.perf_counter() - t
                timings["encode"] = encode_share
                box = None
                if result.box is not None:
                    box = q_geometry.points_to_native(result.box.reshape(2, 2)).reshape(4)
                record = SliceRecord(
                    index=s, support_index=support_index,
                    points=q_geometry.points_to_native(result.points.coords), labels=result.points.labels,
                    box=box, score=result.score, synergy_score=result.synergy_score, iou=result.iou,
                    confidence=confidence, pixels=pixels if accepted else 0, accepted=accepted,
                    timings=timings, notes=result.notes)
                final, dropped = state.push(s, confidence, record.pixels, (record, mask))
                for _, (rec, m) in final:
                    paint(rec, m)
                for _, (rec, m) in dropped:
                    leave_unpainted(rec, m, "auto-stop: below the confidence threshold")
                if propagate and accepted and not state.is_low(confidence, record.pixels):
                    previous = _Carry(mask=result.mask, low_res=result.low_res)
        for _, (rec, m) in state.finish():
            paint(rec, m)

    if config.quality.largest_component and out.any():
        seeds = np.zeros_like(out)
        for s in (copied or []):
            _set_slice(seeds, s, axis, take_slice(out, s, axis))
        cleaned = keep_support_component(out, seeds if seeds.any() else None)
        for rec in records:
            if rec.support_index >= 0 and rec.pixels:
                kept = int(np.count_nonzero(take_slice(cleaned, rec.index, axis)))
                if kept < rec.pixels:
                    rec.notes = tuple(rec.notes) + (f"3D cleanup removed {rec.pixels - kept} pixels",)
                    rec.pixels = kept
        out = cleaned
    records.sort(key=lambda r: r.index)
    return VolumeResult(mask=out, records=records, axis=axis, window=q_window)


@dataclass
class _Carry:
    """What the propagate mode hands from one slice to the next (ROI mask, low-res logits)."""

    mask: np.ndarray
    low_res: Optional[np.ndarray]


def _guide(previous: Optional[_Carry], config: SynPoConfig, valid: np.ndarray,
           support_box_wh: Tuple[float, float]) -> Optional[Guide]:
    """The propagated prompt from the previous slice's result (None: use the support's)."""
    if previous is None or not previous.mask.any():
        return None
    cfg = config.propagation
    box = None
    if cfg.box:
        box = mask_box(previous.mask)
        if cfg.support_size:
            centre = (box[:2] + box[2:]) / 2.0
            half = (np.asarray(support_box_wh, np.float32) - 1.0) / 2.0
            box = np.concatenate([centre - half, centre + half]).astype(np.float32)
        box = grow_box(box, cfg.box_margin, valid)
    mask_input = None
    if cfg.mask:
        # the support slice has no logits: its mask stands in, as confident logits
        mask_input = previous.low_res if previous.low_res is not None else \
            np.where(previous.mask, 10.0, -10.0).astype(np.float32)
    if box is None and mask_input is None and not cfg.points:
        return None
    return Guide(box=box, mask_input=mask_input, points=cfg.points)


def _chains(todo: Sequence[int], assignment: Mapping[int, int]) -> List[Tuple[int, List[int]]]:
    """Query slices grouped by support and ordered outward from it: up, then down.

    Auto-stop and propagation both need each direction visited from the support out.
    """
    chains = []
    for sup in sorted(set(assignment[q] for q in todo)):
        mine = [q for q in todo if assignment[q] == sup]
        up = sorted(q for q in mine if q > sup)
        down = sorted((q for q in mine if q < sup), reverse=True)
        for chain in (up, down):
            if chain:
                chains.append((sup, chain))
    return chains


def _slice_shape(shape: Sequence[int], axis: int) -> Tuple[int, int]:
    rest = [int(n) for i, n in enumerate(shape) if i != axis]
    return rest[0], rest[1]
