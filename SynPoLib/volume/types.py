"""What every mode of the volume driver shares: the support, the records, and the job.

Arrays are indexed like SimpleITK's and Slicer's ``arrayFromVolume``: (k, j, i). A
support is one or more labelled slices along ``axis`` (0, 1 or 2) of a support volume;
the query is the same or another volume, cut along the same axis. Each query slice is
served by the nearest support slice (by relative position along the axis, which is the
slice distance when support and query are one volume), or by an explicit assignment
(the FSMIS protocol's chunks).
"""

from __future__ import annotations

import math
import numbers
import threading
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..backends.base import Backend
from ..config import SynPoConfig
from ..errors import Cancelled, InputError
from ..io import Volume
from ..preprocess import (SliceGeometry, apply_window, in_plane_spacing, nonfinite_count, slice_geometry, take_slice,
                          window_bounds)


def whole_number(value, what: str) -> int:
    """``value`` as an int when it is one (never truncating 5.7 to 5); else :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def check_axis(axis) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or axis not in (0, 1, 2):
        raise InputError(f"axis must be 0, 1 or 2 (the k, j or i axis of the array), got {axis!r}")
    return int(axis)


def check_image(array, what: str) -> None:
    """A 3-D array of numbers (an image or a labelmap)."""
    if np.ndim(array) != 3:
        raise InputError(f"{what} must be 3-D, got shape {np.shape(array)}")
    kind = np.asarray(array).dtype.kind
    if kind not in "biuf":
        raise InputError(f"{what} must hold numbers, got dtype {np.asarray(array).dtype}")
    if min(np.shape(array)) < 1:
        raise InputError(f"{what} has no voxels (shape {np.shape(array)})")


def check_spacing(spacing, what: str) -> Optional[Tuple[float, float, float]]:
    if spacing is None:
        return None
    try:
        values = tuple(float(v) for v in spacing)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be 3 positive numbers (k, j, i), got {spacing!r}") from None
    if len(values) != 3 or not all(math.isfinite(v) and v > 0 for v in values):
        raise InputError(f"{what} must be 3 positive numbers (k, j, i), got {spacing!r}")
    return values


def check_window(window, what: str) -> Optional[Tuple[float, float]]:
    if window is None:
        return None
    try:
        low, high = (float(v) for v in window)
    except (TypeError, ValueError):
        raise InputError(f"{what} must be (low, high), got {window!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InputError(f"{what} ({low:g}, {high:g}): LOW must be below HIGH, both finite")
    return low, high


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
    #: physical placement (LPS mm, as SimpleITK: origin, row-major 3x3 direction);
    #: only a support in another volume uses it (the registration mode's 3-D affine
    #: start); None: origin 0, identity directions
    origin: Optional[Sequence[float]] = None
    direction: Optional[Sequence[float]] = None

    def __post_init__(self) -> None:
        self.axis = check_axis(self.axis)
        check_image(self.volume, "support volume")
        check_image(self.mask, "support mask")
        if np.shape(self.mask) != np.shape(self.volume):
            raise InputError(
                f"support mask shape {np.shape(self.mask)} differs from its volume's {np.shape(self.volume)}")
        if np.asarray(self.mask).dtype.kind == "f" and not np.isfinite(self.mask).all():
            raise InputError("support mask holds NaN/Inf: give a boolean or label mask")
        raw = self.slices if np.ndim(self.slices) else [self.slices]
        self.slices = [whole_number(s, "a support slice index") for s in raw]
        if not self.slices:
            raise InputError("give at least one support slice")
        self.spacing = check_spacing(self.spacing, "support spacing")
        self.window = check_window(self.window, "support window")
        n = self.volume.shape[self.axis]
        for s in self.slices:
            if not 0 <= s < n:
                raise InputError(f"support slice {s} is outside the volume (0..{n - 1} along axis {self.axis})")
            if not np.any(take_slice(self.mask, s, self.axis)):
                raise InputError(f"support mask is empty on slice {s} along axis {self.axis}")


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
    #: score relative to the support's own (SynPoLib.volume.qc): ~1 looks like the support
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
    #: the structure the slice belongs to, in a multi-structure run ("" otherwise)
    structure: str = ""

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
    #: what a person should know about the run, one line each (e.g. NaN voxels)
    notes: Tuple[str, ...] = ()

    def record(self, index: int) -> SliceRecord:
        for rec in self.records:
            if rec.index == index:
                return rec
        raise KeyError(index)


CancelCheck = Union[Callable[[], bool], threading.Event, None]
SliceSelection = Optional[Union[Sequence[int], range, Tuple[int, int]]]
ProgressCallback = Optional[Callable[[ProgressEvent], None]]


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


def resolve_slices(slices: SliceSelection, n: int) -> List[int]:
    """Query slice indices: None is all; a (start, stop) pair is a half-open range."""
    if slices is None:
        return list(range(n))
    if isinstance(slices, tuple) and len(slices) == 2 and not isinstance(slices, range):
        start, stop = (whole_number(v, "a query slice range end") for v in slices)
        if not start < stop:
            raise InputError(f"the query slice range ({start}, {stop}) is empty: START must be below STOP")
        slices = range(start, stop)
    if isinstance(slices, (str, bytes)) or not hasattr(slices, "__iter__"):
        raise InputError(f"slices must be a range, a list of indices or a (start, stop) pair, got {slices!r}")
    out = sorted(set(whole_number(s, "a query slice index") for s in slices))
    bad = [s for s in out if not 0 <= s < n]
    if bad:
        raise InputError(f"query slices {bad[:5]} are outside 0..{n - 1}")
    if not out:
        raise InputError("the query slice range is empty")
    return out


def check_query(query: np.ndarray, support: Support, same_volume: Optional[bool],
                query_spacing: Optional[Sequence[float]]) -> Tuple[bool, Optional[Sequence[float]]]:
    """Validate a query against its support; return (same volume?, query spacing)."""
    check_image(query, "query volume")
    if not isinstance(support, Support):
        raise InputError(f"support must be a Support, got {type(support).__name__}")
    same = (query is support.volume) if same_volume is None else bool(same_volume)
    if same and np.shape(query) != np.shape(support.volume):
        raise InputError("same_volume was given but query and support shapes differ")
    query_spacing = check_spacing(query_spacing, "query_spacing")
    if query_spacing is None and same:
        query_spacing = support.spacing
    return same, query_spacing


def slice_shape(shape: Sequence[int], axis: int) -> Tuple[int, int]:
    """(rows, cols) of a slice along ``axis`` of a volume of ``shape``."""
    rest = [int(n) for i, n in enumerate(shape) if i != axis]
    return rest[0], rest[1]


def set_slice(volume: np.ndarray, index: int, axis: int, values: np.ndarray) -> None:
    """Write ``values`` into slice ``index`` along ``axis`` of ``volume``, in place."""
    where = [slice(None)] * 3
    where[axis] = index
    volume[tuple(where)] = values


@dataclass(frozen=True)
class Chain:
    """Query slices served by one support, in the order they are visited: outward from it."""

    support: int
    slices: Tuple[int, ...]
    #: "backward" (towards index 0) or "forward"
    direction: str


def outward_chains(todo: Sequence[int], assignment: Mapping[int, int]) -> List[Chain]:
    """Query slices grouped by support and ordered outward from it: up, then down.

    Auto-stop and every mode that carries something from slice to slice need each
    direction visited from the support out.
    """
    chains = []
    for sup in sorted(set(assignment[q] for q in todo)):
        mine = [q for q in todo if assignment[q] == sup]
        up = sorted(q for q in mine if q > sup)
        down = sorted((q for q in mine if q < sup), reverse=True)
        for slices, direction in ((up, "forward"), (down, "backward")):
            if slices:
                chains.append(Chain(support=sup, slices=tuple(slices), direction=direction))
    return chains


@dataclass
class Job:
    """One run's inputs, checked, with what every mode derives from them the same way."""

    backend: Backend
    query: np.ndarray
    support: Support
    config: SynPoConfig
    #: the query slices to return, ascending
    wanted: List[int]
    #: query and support are one volume: the labelled slices are copied as labelled
    same: bool
    query_spacing: Optional[Sequence[float]]
    #: intensity windows of the query and the support volume
    q_window: Tuple[float, float]
    s_window: Tuple[float, float]
    q_geometry: SliceGeometry
    s_geometry: SliceGeometry
    #: query slice -> support slice, for the slices that are segmented (not copied)
    assignment: Dict[int, int]
    batch_size: int = 1
    #: NaN/Inf voxels of the query and of the support volume (never painted)
    q_nonfinite: int = 0
    s_nonfinite: int = 0
    #: the query's physical placement (see Support.origin); None: origin 0, identity
    query_origin: Optional[Sequence[float]] = None
    query_direction: Optional[Sequence[float]] = None

    @classmethod
    def build(cls, backend: Backend, query: np.ndarray, support: Support, config: SynPoConfig, *,
              slices: SliceSelection = None, query_spacing: Optional[Sequence[float]] = None,
              query_window: Optional[Tuple[float, float]] = None,
              assignment: Optional[Mapping[int, int]] = None, same_volume: Optional[bool] = None,
              batch_size: int = 1, query_origin: Optional[Sequence[float]] = None,
              query_direction: Optional[Sequence[float]] = None) -> "Job":
        same, query_spacing = check_query(query, support, same_volume, query_spacing)
        if whole_number(batch_size, "batch_size") < 1:
            raise InputError(f"batch_size must be >= 1, got {batch_size}")
        if not isinstance(config, SynPoConfig):
            raise InputError(f"config must be a SynPoConfig, got {type(config).__name__}")
        query_window = check_window(query_window, "query_window")
        axis = support.axis
        n_query = query.shape[axis]
        wanted = resolve_slices(slices, n_query)
        todo = [s for s in wanted if not (same and s in support.slices)]
        # One window per volume, never per slice; one volume, one window.
        q_window = query_window or (support.window if same and support.window else None) \
            or window_bounds(query, config.window)
        s_window = support.window or (q_window if same else window_bounds(support.volume, config.window))
        if assignment is None:
            chosen = assign_supports(todo, support.slices, n_query, support.volume.shape[axis])
        else:
            missing = [q for q in todo if q not in assignment or assignment[q] not in support.slices]
            if missing:
                raise InputError(f"no support assigned to query slices {missing[:5]}")
            chosen = {q: int(assignment[q]) for q in todo}
        geometry = config.geometry
        job = cls(backend=backend, query=query, support=support, config=config, wanted=wanted, same=same,
                   query_spacing=query_spacing, q_window=q_window, s_window=s_window,
                   q_geometry=slice_geometry(slice_shape(query.shape, axis), in_plane_spacing(query_spacing, axis),
                                             geometry),
                   s_geometry=slice_geometry(slice_shape(support.volume.shape, axis),
                                             in_plane_spacing(support.spacing, axis), geometry),
                   assignment=chosen, batch_size=int(batch_size), q_nonfinite=nonfinite_count(query),
                   s_nonfinite=0 if same else nonfinite_count(support.volume),
                   query_origin=support.origin if same and query_origin is None else query_origin,
                   query_direction=support.direction if same and query_direction is None else query_direction)
        for s in support.slices:  # a sliver of a support can vanish at the ROI: say so before any work
            job.support_mask_roi(s)
        return job

    @property
    def axis(self) -> int:
        return self.support.axis

    @property
    def copied(self) -> List[int]:
        """Wanted slices that are labelled support slices of the same volume."""
        return [s for s in self.wanted if self.same and s in self.support.slices]

    def query_volume(self) -> Volume:
        """The query as an :class:`~SynPoLib.io.Volume` (its array and physical geometry)."""
        return _volume(self.query, self.query_spacing, self.query_origin, self.query_direction)

    def support_volume(self) -> Volume:
        """The support volume as an :class:`~SynPoLib.io.Volume`."""
        s = self.support
        return _volume(s.volume, s.spacing, s.origin, s.direction)

    @property
    def todo(self) -> List[int]:
        """Wanted slices a mode segments, ascending."""
        return sorted(self.assignment)

    def chains(self) -> List[Chain]:
        return outward_chains(self.todo, self.assignment)

    @property
    def notes(self) -> Tuple[str, ...]:
        """The NaN/Inf policy, said once per volume that has such voxels."""
        out = []
        for name, count in (("query", self.q_nonfinite), ("support volume", self.s_nonfinite)):
            if count:
                out.append(f"{name}: {count} NaN/Inf voxels left out of the intensity window, shown to the model as "
                           "background and never painted")
        return tuple(out)

    def paintable(self, index: int, mask: np.ndarray) -> np.ndarray:
        """``mask`` on query slice ``index`` without its NaN/Inf voxels (they carry no image)."""
        if not self.q_nonfinite:
            return mask
        return np.logical_and(mask, np.isfinite(take_slice(self.query, index, self.axis)))

    def query_roi(self, index: int) -> np.ndarray:
        """Query slice ``index`` windowed and scaled into the method's R x R image."""
        return self.q_geometry.image_to_roi(apply_window(take_slice(self.query, index, self.axis), self.q_window))

    def support_roi(self, index: int) -> Tuple[np.ndarray, np.ndarray]:
        """Support slice ``index`` as the R x R image and its mask on the ROI."""
        image = self.s_geometry.image_to_roi(
            apply_window(take_slice(self.support.volume, index, self.axis), self.s_window))
        return image, self.support_mask_roi(index)

    def support_mask_roi(self, index: int) -> np.ndarray:
        """Support slice ``index``'s mask on the ROI; refused when it vanishes there."""
        mask_roi = self.s_geometry.mask_to_roi(take_slice(self.support.mask, index, self.axis) > 0)
        if not mask_roi.any():
            raise InputError(f"the support mask on slice {index} is too small to survive scaling to the "
                             f"{self.config.geometry.roi_size}-pixel image the model sees: label more of it")
        return mask_roi


def _volume(array: np.ndarray, spacing, origin, direction) -> Volume:
    return Volume(array=array, spacing=tuple(float(v) for v in (spacing if spacing is not None else (1.0,) * 3)),
                  origin=tuple(float(v) for v in (origin if origin is not None else (0.0,) * 3)),
                  direction=tuple(float(v) for v in (direction if direction is not None else np.eye(3).ravel())))


__all__ = ["CancelCheck", "Cancelled", "Chain", "Job", "ProgressEvent", "SliceRecord", "Support", "VolumeResult",
           "assign_supports", "check_axis", "check_image", "check_query", "check_spacing", "check_window",
           "outward_chains", "resolve_slices", "set_slice", "should_stop", "slice_shape", "whole_number"]
