"""Every check of a file-to-file run, before any work, in one place.

:func:`check_request` looks at a :class:`~SynPoLib.files.SegmentRequest` with no
volume read: the options' values and types, the configuration (preset, ``--config``,
``--set`` and the options that edit it, one rule for all), every input from its
header (:func:`SynPoLib.io.inspect_image`: a regular readable file, a 3-D grey image,
voxel data all there; about 10 ms a file), every output (a file name with a
writable format, in a folder that exists or can be made and is writable), that no
output is an input or another output, and that grids, slices and ranges agree. A
batch of cases calls it per case before running any; :func:`segment_files` calls it
first.

:func:`check_loaded` then checks what only the voxels tell (labels, the structure on
the support slices, a volume with no finite voxel), on the arrays the run reads
anyway.

Every refusal is an :class:`~SynPoLib.errors.InputError`: one line that starts with
the option (``--query``, ``--set points.n_negative=abc``) and says what to do; the
command line turns it into exit code 2.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple, Union

import numpy as np

from ..config import Mode, SynPoConfig
from ..errors import InputError
from ..io import ImageInfo, Volume, inspect_image, same_geometry
from ..paths import check_distinct, check_output_file
from ..preprocess import window_bounds
from ..presets import PRESETS, build_config
from .inputs import SAM2_BACKENDS, parse_range

#: request field -> its command-line flag, inputs first
INPUT_FLAGS = {"query": "--query", "support": "--support", "support_mask": "--support-mask",
               "reference": "--reference", "config": "--config", "corrected": "--corrected",
               "previous": "--previous"}
OUTPUT_FLAGS = {"out": "--out", "labelmap": "--labelmap", "png": "--png", "confidence_png": "--confidence-png",
                "records": "--records"}
#: what each output may be written as. Labelmaps: the single-file formats SimpleITK
#: writes (a two-file format, .hdr/.img or .mhd/.raw, cannot be renamed into place
#: as one file, so it could be left half-written)
OUTPUT_SUFFIXES = {
    "out": (".seg.nrrd", ".nrrd"),
    "labelmap": (".nii.gz", ".nii", ".nrrd", ".mha"),
    "png": (".png",),
    "confidence_png": (".png",),
    "records": (".json",),
}
#: the modes that need SAM 2.1's video predictor
VIDEO_MODES = (Mode.VIDEO, Mode.HYBRID)


@dataclass(frozen=True)
class CheckedRequest:
    """A request that passed every check made before any work, and what they found."""

    request: object
    #: headers of the inputs (support is the query's when no --support is given)
    query: ImageInfo
    support: ImageInfo
    support_mask: ImageInfo
    reference: Optional[ImageInfo]
    #: the configuration the run uses: preset, --config, --set, then the options
    config: SynPoConfig
    #: query slices to segment (None: all)
    slices: Optional[range]
    support_slices: Tuple[int, ...]
    #: --label: None (the mask's one label), "all", or the label values (several: one run)
    labels: Union[None, str, Tuple[int, ...]] = None
    #: a run again after corrections: the headers of --corrected and --previous, and
    #: the slices given with --corrected-slices
    corrected: Optional[ImageInfo] = None
    previous: Optional[ImageInfo] = None
    corrected_slices: Tuple[int, ...] = ()

    @property
    def several(self) -> bool:
        """Several structures in one run (``--label`` repeated or ``all``)."""
        return self.labels == ALL or (self.labels is not None and len(self.labels) > 1)


@dataclass(frozen=True)
class LoadedInputs:
    """What :func:`check_loaded` made of the voxels."""

    #: the structure's voxels in the support mask
    mask: np.ndarray
    #: the reference structure, when a reference was given
    reference: Optional[np.ndarray]
    #: the intensity windows of the query and of the support volume (one each, for the run)
    query_window: Tuple[float, float] = (0.0, 1.0)
    support_window: Tuple[float, float] = (0.0, 1.0)
    #: several structures: label -> its voxels in the support mask / in the reference,
    #: in the order they are segmented (``mask`` is the first one's)
    masks: Dict[int, np.ndarray] = field(default_factory=dict)
    references: Dict[int, np.ndarray] = field(default_factory=dict)
    #: a run again: label (0 for a one-structure run) -> the structure as the user left
    #: it in --corrected, the slices corrected since --previous (or --corrected-slices),
    #: and the corrected slices of earlier rounds
    current: Dict[int, np.ndarray] = field(default_factory=dict)
    corrected: Dict[int, Tuple[int, ...]] = field(default_factory=dict)
    earlier: Dict[int, Tuple[int, ...]] = field(default_factory=dict)


# --------------------------------------------------------------------------- values

def _whole(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InputError(f"{what} must be a whole number, got {value!r}")
    return int(value)


def _numbers(values, flag: str, names: str, example: str) -> Tuple[float, ...]:
    count = len(names.split())
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"{flag} takes {count} numbers ({names}), e.g. {example}; got {values!r}") from None
    if len(out) != count or any(isinstance(v, bool) for v in values):
        raise InputError(f"{flag} takes {count} numbers ({names}), e.g. {example}; got {values!r}")
    if not all(math.isfinite(v) for v in out):
        raise InputError(f"{flag} {' '.join(f'{v:g}' for v in out)}: {names} must be finite numbers, "
                         f"e.g. {example}")
    return out


#: ``--label all``: every label drawn on the support slices
ALL = "all"


def requested_labels(value) -> Union[None, str, Tuple[int, ...]]:
    """``--label`` as given (one value, repeated values, or ``all``): None (the support
    mask's one label), ``"all"``, or the label values in the order given."""
    if value is None:
        return None
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        return None
    if any(isinstance(v, str) and v.strip().lower() == ALL for v in items):
        if len(items) > 1:
            raise InputError("--label all takes every label drawn on the support slices: give it alone")
        return ALL
    out = []
    for v in items:
        if isinstance(v, str):
            try:
                v = int(v.strip())
            except ValueError:
                raise InputError(f"--label {v!r} is not a label value: give whole numbers, or all") from None
        v = _whole(v, "--label")
        if v == 0:
            raise InputError("--label 0 is the background: give the structure's label value")
        if v not in out:
            out.append(v)
    return tuple(out)


def check_values(r) -> Tuple[int, ...]:
    """The options' own values and types; returns the support slices as ints."""
    from ..backends import BACKENDS

    for field, flag in {**INPUT_FLAGS, **OUTPUT_FLAGS}.items():
        value = getattr(r, field)
        if value is not None and not isinstance(value, (str, bytes)) and not hasattr(value, "__fspath__"):
            raise InputError(f"{flag} must be a path, got {value!r}")
        if value is not None and not str(value).strip():
            raise InputError(f"{flag} is empty: give a path")
    for field in ("query", "support_mask", "out"):
        if not getattr(r, field):
            raise InputError(f"{INPUT_FLAGS.get(field) or OUTPUT_FLAGS[field]} is required")
    if r.backend not in BACKENDS:
        raise InputError(f"--backend {r.backend!r} is unknown; choose from {', '.join(sorted(BACKENDS))}")
    axis = r.axis
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or axis not in (0, 1, 2):
        raise InputError(f"--axis must be 0, 1 or 2 (the k, j or i axis of the array), got {axis!r}")
    raw = r.support_slice
    raw = [raw] if isinstance(raw, numbers.Number) else list(raw or [])
    if not raw:
        raise InputError("--support-slice is required: give the index of the labelled slice")
    slices = tuple(sorted(set(_whole(s, f"--support-slice {s!r}") for s in raw)))
    labels = requested_labels(r.label)
    several = labels == ALL or (labels is not None and len(labels) > 1)
    if r.reference_label is not None:
        if _whole(r.reference_label, "--reference-label") == 0:
            raise InputError("--reference-label 0 is the background: give the structure's label value")
        if several:
            raise InputError("--reference-label applies to one --label; with several, the reference must hold the "
                             "same label values as --support-mask")
    if r.reference_label is not None and not r.reference:
        raise InputError("--reference-label needs --reference (the labelmap it refers to)")
    if several:
        for flag, value in (("--name", r.name), ("--color", r.color)):
            if value is not None:
                raise InputError(f"{flag} applies to one structure; with several --label values each segment is "
                                 "named after its label and gets its own colour")
    corrected_slices = tuple(sorted(set(_whole(s, f"--corrected-slices {s!r}") for s in (r.corrected_slices or ()))))
    if (corrected_slices or r.previous) and not r.corrected:
        raise InputError(f"{'--corrected-slices' if corrected_slices else '--previous'} needs --corrected (the "
                         "labelmap of the last result with your corrections)")
    if r.corrected and not (corrected_slices or r.previous):
        raise InputError("--corrected: say which slices you corrected, with --corrected-slices N [N ...] or "
                         "--previous OLD (the result before your corrections: the slices that differ)")
    if r.batch_size is not None and _whole(r.batch_size, "--batch-size") < 1:
        raise InputError(f"--batch-size must be >= 1, got {r.batch_size}")
    if r.window is not None:
        low, high = _numbers(r.window, "--window", "LOW HIGH", "--window -125 275")
        if not low < high:
            raise InputError(f"--window {low:g} {high:g}: LOW must be below HIGH, e.g. --window {high:g} {low:g}")
    if r.color is not None:
        rgb = _numbers(r.color, "--color", "R G B", "--color 1 0.5 0")
        if not all(0.0 <= c <= 1.0 for c in rgb):
            raise InputError(f"--color {' '.join(f'{c:g}' for c in rgb)}: each of R G B must lie between 0 and 1, "
                             "e.g. --color 1 0.5 0")
    if r.name is not None:
        if not str(r.name).strip():
            raise InputError("--name is empty: give the segment a name (or leave --name out)")
        if any(ord(ch) < 32 or ord(ch) == 127 for ch in str(r.name)):
            raise InputError(f"--name {r.name!r} holds a control character (a line break?): "
                             "a segment name is one line of text")
    if r.mode is not None and r.mode not in {m.value for m in Mode}:
        raise InputError(f"--mode {r.mode!r} is unknown; choose from {', '.join(m.value for m in Mode)}")
    parse_range(r.slice_range)
    return slices


def check_config(r) -> SynPoConfig:
    """The run's configuration, every edit checked by one rule (SynPoLib.config.edit)."""
    from ..backends import PRESET_OF

    extra: Dict[str, Tuple[str, object]] = {}
    if r.window:
        extra["window.window"] = ("--window", [float(v) for v in r.window])
    if r.mode:
        extra["propagation.mode"] = (f"--mode {r.mode}", r.mode)
    if r.no_auto_stop:
        extra["quality.auto_stop"] = ("--no-auto-stop", False)
    if r.largest_component:
        extra["quality.largest_component"] = ("--largest-component", True)
    name = getattr(r, "preset", None)
    if name is not None and name not in PRESETS:
        raise InputError(f"--preset {name!r} is unknown; choose from {', '.join(sorted(PRESETS))}")
    assignments = [r.set] if isinstance(r.set, str) else list(r.set or ())  # one line given as a string
    cfg = build_config(name or PRESET_OF[r.backend], r.config, assignments, extra)
    mode = cfg.propagation.mode
    if mode in VIDEO_MODES and r.backend not in SAM2_BACKENDS:
        source = f"--mode {r.mode}" if r.mode else f"propagation.mode={mode.value} (--config/--set)"
        raise InputError(f"{source} runs SAM 2.1's video predictor, which the {r.backend} backend does not have: "
                         f"use --backend {' or '.join(SAM2_BACKENDS)}, or --mode slices / propagate")
    return cfg


# --------------------------------------------------------------------------- files

def check_outputs(r) -> None:
    """Each output: a writable format and a path that can be created or replaced."""
    for field, flag in OUTPUT_FLAGS.items():
        path = getattr(r, field)
        if not path:
            continue
        check_output_file(path, flag)  # a folder or a pipe is named as such, whatever its name
        suffixes = OUTPUT_SUFFIXES[field]
        if not str(path).lower().endswith(suffixes):
            raise InputError(f"{flag} {path}: SynPo writes {flag} as {' or '.join(suffixes)}; "
                             f"give a name ending in {suffixes[0]}")


def check_request(request) -> CheckedRequest:
    """Check a whole file-to-file run before any work; raises :class:`InputError`.

    Reads headers only (no voxel data): cheap enough to run on every case of a batch
    before starting the first.
    """
    r = request
    support_slices = check_values(r)
    config = check_config(r)
    query = inspect_image(r.query, "--query")
    support = inspect_image(r.support, "--support") if r.support else query
    mask = inspect_image(r.support_mask, "--support-mask")
    reference = inspect_image(r.reference, "--reference") if r.reference else None
    corrected = inspect_image(r.corrected, "--corrected") if r.corrected else None
    previous = inspect_image(r.previous, "--previous") if r.previous else None
    # an output that is an input is named as such first: "--records is the --support-mask file"
    # says more than "--records must end in .json"
    check_distinct([(flag, getattr(r, f)) for f, flag in OUTPUT_FLAGS.items()],
                   [(flag, getattr(r, f)) for f, flag in INPUT_FLAGS.items()])
    check_outputs(r)

    problem = same_geometry(support, mask)
    if problem:
        raise InputError(f"--support-mask {r.support_mask} is not on the support volume's grid: {problem}; "
                         f"resample the labelmap onto {'--support' if r.support else '--query'}")
    if reference is not None:
        problem = same_geometry(query, reference)
        if problem:
            raise InputError(f"--reference {r.reference} is not on the query's grid: {problem}; "
                             "resample it onto the query")
    for flag, path, info in (("--corrected", r.corrected, corrected), ("--previous", r.previous, previous)):
        if info is not None:
            problem = same_geometry(query, info)
            if problem:
                raise InputError(f"{flag} {path} is not on the query's grid: {problem}; it must be a labelmap "
                                 "SynPo wrote for this query (--labelmap), with your corrections")
    axis = int(r.axis)
    n = support.shape[axis]
    for s in support_slices:
        if not 0 <= s < n:
            raise InputError(f"--support-slice {s} is outside the support volume: 0..{n - 1} along axis {axis}")
    n_query = query.shape[axis]
    slices = None
    rng = parse_range(r.slice_range)
    if rng is not None:
        start = 0 if rng[0] is None else rng[0]
        stop = n_query if rng[1] is None else rng[1]
        if start < 0 or stop < 0:
            raise InputError(f"--range {r.slice_range}: slice indices start at 0 (the query has 0..{n_query - 1} "
                             f"along axis {axis})")
        if not start < stop:
            raise InputError(f"--range {r.slice_range} is empty: START must be below STOP (half-open, "
                             f"e.g. --range {min(start, stop)}:{max(start, stop) + 1})")
        if stop > n_query:
            raise InputError(f"--range {r.slice_range} reaches past the query's last slice: it has {n_query} "
                             f"slices along axis {axis}, so STOP <= {n_query}")
        slices = range(start, stop)
    corrected_slices = tuple(sorted(set(int(c) for c in (r.corrected_slices or ()))))
    for c in corrected_slices:
        if not 0 <= c < n_query:
            raise InputError(f"--corrected-slices {c} is outside the query: 0..{n_query - 1} along axis {axis}")
    return CheckedRequest(request=r, query=query, support=support, support_mask=mask, reference=reference,
                          config=config, slices=slices, support_slices=support_slices,
                          labels=requested_labels(r.label), corrected=corrected, previous=previous,
                          corrected_slices=corrected_slices)


# --------------------------------------------------------------------------- voxels

def _label_values(array: np.ndarray, flag: str, path: str) -> List:
    """The distinct non-zero values of a labelmap, refused when they are not labels."""
    if array.dtype.kind == "f":
        finite = np.isfinite(array)
        if not finite.all():
            raise InputError(f"{flag} {path} holds {int((~finite).sum())} NaN/Inf voxels: a labelmap holds whole-"
                             "number labels; fix or re-export it")
    values = np.unique(array)
    if array.dtype.kind == "f":
        fractional = [float(v) for v in values if not float(v).is_integer()]
        if fractional:
            shown = ", ".join(f"{v:g}" for v in fractional[:5])
            raise InputError(f"{flag} {path} holds values that are not whole numbers ({shown}): a labelmap holds "
                             "whole-number labels; threshold or re-export it as a labelmap")
    return [v for v in values if v != 0]


def select_structure(array: np.ndarray, label: Optional[int], flag: str, path: str,
                     label_flag: str = "--label") -> np.ndarray:
    """The voxels of ``label`` (or of the one non-zero label when none is given)."""
    nonzero = _label_values(array, flag, path)
    labels = [int(v) for v in nonzero]
    shown = ", ".join(str(v) for v in labels[:12]) + (" ..." if len(labels) > 12 else "")
    if not labels:
        raise InputError(f"{flag} {path} is empty: it has no non-zero voxel; label the structure first")
    if label is None:
        if len(labels) > 1:
            raise InputError(f"{flag} {path} holds several labels ({shown}): choose one with {label_flag}")
        label = labels[0]
    if label not in labels:
        raise InputError(f"{label_flag} {label} is absent from {flag} {path} (labels present: {shown})")
    return array == label


def check_loaded(checked: CheckedRequest, query: Volume, support: Volume, mask: Volume,
                 reference: Optional[Volume] = None, corrected_vol: Optional[Volume] = None,
                 previous_vol: Optional[Volume] = None) -> LoadedInputs:
    """What only the voxels tell, on the arrays the run reads anyway."""
    r = checked.request
    windows = []
    for flag, volume in (("--query", query), ("--support", support)):
        if volume.array.dtype.kind == "f" and not np.isfinite(volume.array).any():
            raise InputError(f"{flag} {volume.path}: no voxel holds a finite value (all NaN or Inf): "
                             "there is no image to segment")
        if windows and volume is query:
            windows.append(windows[0])
            continue
        try:  # the run's own window, computed once here: a constant volume is refused before the model loads
            windows.append(window_bounds(volume.array, checked.config.window))
        except InputError as exc:
            raise InputError(f"{flag} {volume.path}: {exc}") from None
    axis = int(r.axis)
    labels = _structure_labels(checked, mask)
    masks = {}
    for label in labels:
        structure = select_structure(mask.array, label, "--support-mask", r.support_mask)
        drawn_on = [s for s in checked.support_slices if np.take(structure, s, axis=axis).any()]
        if not drawn_on or (not checked.several and len(drawn_on) < len(checked.support_slices)):
            s = next(s for s in checked.support_slices if s not in drawn_on)
            drawn = np.flatnonzero(structure.any(axis=tuple(a for a in range(3) if a != axis)))
            near = drawn[np.argsort(np.abs(drawn - s))[:3]] if len(drawn) else []
            what = f"label {label}" if checked.several else "the structure"
            raise InputError(f"--support-slice {s}: {what} is absent from support slice {s} (axis {axis}); "
                             f"pick a slice where it is labelled (nearest: {', '.join(str(int(v)) for v in near)})")
        masks[label] = structure
    structure = masks[labels[0]]
    truth, truths = None, {}
    if reference is not None:
        if checked.several:
            present = set(int(v) for v in _label_values(reference.array, "--reference", r.reference))
            truths = {label: reference.array == label for label in labels if label in present}
            missing = [label for label in labels if label not in present]
            if missing:
                raise InputError(f"--reference {r.reference} lacks label(s) {', '.join(map(str, missing))}: with "
                                 "several --label values it must hold the same labels as --support-mask")
        else:
            ref_label = r.reference_label if r.reference_label is not None else labels[0]
            truth = select_structure(reference.array, ref_label, "--reference", r.reference,
                                     "--reference-label" if r.reference_label is not None else
                                     "--reference-label/--label")
    current, corrected, earlier = _corrections(checked, labels, corrected_vol, previous_vol)
    return LoadedInputs(mask=structure, reference=truth, query_window=windows[0], support_window=windows[1],
                        masks=masks if checked.several else {}, references=truths, current=current,
                        corrected=corrected, earlier=earlier)


def _structure_labels(checked: CheckedRequest, mask: Volume) -> List[Optional[int]]:
    """The labels segmented, in order: the one asked for (or None: the mask's only one),
    the ones asked for, or every label drawn on a support slice (``all``)."""
    r = checked.request
    if checked.labels is None:
        return [None]
    if checked.labels != ALL:
        return list(checked.labels)
    axis = int(r.axis)
    values = set()
    for s in checked.support_slices:
        plane = np.take(mask.array, s, axis=axis)
        values |= set(int(v) for v in _label_values(plane, "--support-mask", r.support_mask))
    if not values:
        raise InputError(f"--label all: no label is drawn on support slice(s) "
                         f"{', '.join(map(str, checked.support_slices))} of --support-mask {r.support_mask}")
    return sorted(values)


def _corrections(checked: CheckedRequest, labels: List[Optional[int]], corrected_vol: Optional[Volume],
                 previous_vol: Optional[Volume]):
    """A run again: each structure in --corrected, and which slices the user corrected."""
    r = checked.request
    if corrected_vol is None:
        return {}, {}, {}
    axis = int(r.axis)
    other = tuple(a for a in range(3) if a != axis)
    _label_values(corrected_vol.array, "--corrected", r.corrected)  # refuses NaN and fractions
    if previous_vol is not None:
        _label_values(previous_vol.array, "--previous", r.previous)
    current, corrected, earlier = {}, {}, {}
    given = set(checked.corrected_slices)
    for label in labels:
        key = 0 if label is None else label
        # one structure: the labelmap SynPo wrote holds 1; several: each its label value
        now = corrected_vol.array != 0 if not checked.several else corrected_vol.array == label
        current[key] = now
        if previous_vol is None:
            new = set(given)
        else:
            before = previous_vol.array != 0 if not checked.several else previous_vol.array == label
            new = set(int(q) for q in np.flatnonzero((now != before).any(axis=other)))
        corrected[key] = tuple(sorted(new))
        earlier[key] = tuple(sorted(given - new))
    if not any(corrected.values()):
        raise InputError(f"--corrected {r.corrected} does not differ from --previous {r.previous} on any slice: "
                         "correct the slices that are wrong first (or list them with --corrected-slices)")
    return current, corrected, earlier


__all__ = ["ALL", "CheckedRequest", "INPUT_FLAGS", "LoadedInputs", "OUTPUT_FLAGS", "OUTPUT_SUFFIXES", "check_config",
           "check_loaded", "check_outputs", "check_request", "check_values", "requested_labels", "select_structure"]
