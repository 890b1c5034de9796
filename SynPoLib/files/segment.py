"""One run from files to files: read the volumes, check everything, segment, write.

``synpo segment`` and ``synpo demo`` are thin faces over :func:`segment_files`; a
script can call it with a :class:`SegmentRequest` (the command line's options, by
their argument names). Errors a user can fix raise :class:`~SynPoLib.errors.InputError`
with one line saying what to fix; nothing is written then. Outputs are written only
once everything has succeeded, each atomically.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DeviceMemoryError, InputError
from .inputs import backend_options, open_backend, parse_range, select_label


@dataclass
class SegmentRequest:
    """One ``synpo segment`` run: the command line's options, by their argument names.

    Other commands (``synpo demo``) build one directly; :meth:`from_args` reads the
    parsed command line.
    """

    query: str
    support_mask: str
    support_slice: Sequence[int]
    out: str
    support: Optional[str] = None
    axis: int = 0
    label: Optional[int] = None
    backend: str = "lite"
    device: Optional[str] = None
    sam2_size: Optional[str] = None
    dino_model: Optional[str] = None
    sam2_checkpoint: Optional[str] = None
    dino_checkpoint: Optional[str] = None
    precision: str = "auto"
    weights_dir: Optional[str] = None
    offline: bool = False
    slice_range: Optional[str] = None
    labelmap: Optional[str] = None
    png: Optional[str] = None
    records: Optional[str] = None
    reference: Optional[str] = None
    reference_label: Optional[int] = None
    name: Optional[str] = None
    color: Optional[Sequence[float]] = None
    window: Optional[Sequence[float]] = None
    config: Optional[str] = None
    set: Sequence[str] = ()
    #: None: the backend's preset (SynPoLib.presets)
    preset: Optional[str] = None
    mode: Optional[str] = None
    no_auto_stop: bool = False
    largest_component: bool = False
    confidence_png: Optional[str] = None
    batch_size: Optional[int] = None
    quiet: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> "SegmentRequest":
        return cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(cls)})

    @property
    def outputs(self) -> Tuple[str, ...]:
        """Every file the run writes, ``out`` first."""
        return tuple(p for p in (self.out, self.labelmap, self.png, self.confidence_png, self.records) if p)


@dataclass
class SegmentOutcome:
    """What a finished run produced (its files are written)."""

    request: SegmentRequest
    result: object  # SynPoLib.volume.VolumeResult
    config: object  # SynPoLib.config.SynPoConfig
    #: what ran: the backend's own description
    backend: str
    #: Dice against the reference over the query slices, when a reference was given
    dice: Optional[float]
    #: slice index -> why a person should look at it (SynPoLib.volume.qc.review_flags)
    flags: Dict[int, str]
    seconds: float

    @property
    def mode(self) -> str:
        """The mode that ran (SynPoLib.config.Mode value)."""
        return self.config.propagation.mode.value

    def report_lines(self) -> List[str]:
        """What the run did, for a person: counts, time, auto-stop, flagged slices, Dice."""
        r, records = self.request, self.result.records
        queried = [rec for rec in records if rec.support_index >= 0]
        segmented = [rec for rec in queried if np.isfinite(rec.score)]
        painted = [rec for rec in queried if rec.pixels > 0]
        lines = [f"segmented {len(segmented)} of {len(queried)} query slices along axis {r.axis} in "
                 f"{self.seconds:.1f} s ({self.seconds / max(len(segmented), 1):.2f} s/slice) with {self.backend}, "
                 f"{self.mode} mode; {len(painted)} painted"]
        stopped = [rec.index for rec in queried if "auto-stop" in " ".join(rec.notes)]
        if stopped:
            lines.append(f"auto-stop: {len(stopped)} slices past the structure's end left unpainted "
                         "(--no-auto-stop paints them)")
        review = [i for i in sorted(self.flags) if "auto-stop" not in self.flags[i]]
        if review:
            lines.append(f"review: {len(review)} slices flagged: "
                         + ", ".join(f"{i} ({self.flags[i]})" for i in review[:8]) + (" ..." if len(review) > 8 else ""))
        if self.dice is not None:
            lines.append(f"Dice against the reference over the {len(queried)} query slices: {self.dice:.4f}")
        lines.append("wrote " + ", ".join(r.outputs))
        return lines


def segment_files(request: SegmentRequest, progress: Optional[Callable] = None) -> SegmentOutcome:
    """Read the inputs, check them, segment, and write every requested output.

    ``progress`` is called after each slice with a :class:`~SynPoLib.volume.ProgressEvent`.
    """
    from ..config import Mode, WindowConfig
    from ..io import read_volume, same_geometry
    from ..metrics import dice
    from ..presets import build_config
    from ..volume import Support, resolve_slices, segment_volume

    r = request
    if not str(r.out).endswith((".seg.nrrd", ".nrrd")):
        raise InputError(f"--out must end in .seg.nrrd, got {r.out}")
    options = backend_options(r)
    query = read_volume(r.query)
    support_vol = read_volume(r.support) if r.support else query
    mask_vol = read_volume(r.support_mask)
    problem = same_geometry(support_vol, mask_vol)
    if problem:
        raise InputError(f"support mask {r.support_mask} is not on the support volume's grid: {problem}")
    mask = select_label(mask_vol.array, r.label, r.support_mask)
    n = support_vol.array.shape[r.axis]
    for s in r.support_slice:
        if not 0 <= s < n:
            raise InputError(f"support slice {s} is outside the support volume: 0..{n - 1} along axis {r.axis}")
        if not np.take(mask, s, axis=r.axis).any():
            raise InputError(f"the structure is absent from support slice {s} (axis {r.axis}): "
                             "pick a slice where it is labelled")
    reference = None
    if r.reference:
        ref_vol = read_volume(r.reference)
        problem = same_geometry(query, ref_vol)
        if problem:
            raise InputError(f"reference {r.reference} is not on the query's grid: {problem}")
        ref_label = r.reference_label if r.reference_label is not None else r.label
        reference = select_label(ref_vol.array, ref_label, r.reference)
    rng = parse_range(r.slice_range)
    n_query = query.array.shape[r.axis]
    slices = None
    if rng is not None:
        start = 0 if rng[0] is None else rng[0]
        stop = n_query if rng[1] is None else rng[1]
        if not (0 <= start < stop <= n_query):
            raise InputError(f"--range {r.slice_range} is outside the query: 0..{n_query} along axis {r.axis}")
        slices = range(start, stop)
    slices = resolve_slices(slices, n_query)

    backend = open_backend(r.backend, options=options)
    batch_size = r.batch_size
    if batch_size is None:
        suggest = getattr(backend, "suggested_batch_size", None)
        batch_size = suggest() if suggest is not None else 1
    cfg = build_config(r.preset or backend.preset, r.config, r.set)
    if r.window:
        cfg = cfg.replace(window=WindowConfig(window=tuple(r.window)))
    if r.mode:
        cfg = cfg.updated(**{"propagation.mode": Mode(r.mode)})
    if r.no_auto_stop:
        cfg = cfg.updated(**{"quality.auto_stop": False})
    if r.largest_component:
        cfg = cfg.updated(**{"quality.largest_component": True})

    same = r.support is None or Path(r.support).resolve() == Path(r.query).resolve()
    support = Support(volume=support_vol.array, mask=mask, slices=r.support_slice, axis=r.axis,
                      spacing=support_vol.spacing, origin=support_vol.origin, direction=support_vol.direction)
    started = time.perf_counter()
    try:
        result = segment_volume(backend, query.array, support, config=cfg, slices=slices,
                                query_spacing=query.spacing, same_volume=same,
                                batch_size=batch_size, progress=progress,
                                query_origin=query.origin, query_direction=query.direction)
    except DeviceMemoryError as exc:
        raise InputError(str(exc)) from None
    elapsed = time.perf_counter() - started

    name = r.name or (f"SynPo label {r.label}" if r.label is not None else "SynPo")
    flags = _write_outputs(r, query, result, reference, name, tuple(r.color) if r.color else None, cfg)

    score = None
    if reference is not None:
        scored = [rec.index for rec in result.records if rec.support_index >= 0]
        sel = [slice(None)] * 3
        sel[r.axis] = scored
        score = dice(result.mask[tuple(sel)] > 0, reference[tuple(sel)])
    return SegmentOutcome(request=r, result=result, config=cfg, backend=backend.describe(), dice=score,
                          flags=flags, seconds=elapsed)


def _write_outputs(r: SegmentRequest, query, result, reference, name, color, cfg) -> dict:
    """Write every requested output, or none of them; returns the review flags."""
    import slicerio

    from ..config import DEFAULT_COLOR
    from ..io import atomic_path, segmentation_dict, write_labelmap
    from ..overlay import display_orientation, pick_slices, save_montage
    from ..preprocess import in_plane_spacing
    from ..volume.qc import review_flags, save_confidence_plot

    seg = segmentation_dict(result.mask, query, name=name, color=color or DEFAULT_COLOR)
    with ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(r.out))
        slicerio.write_segmentation(str(tmp), seg)
        if r.labelmap:
            tmp_lm = stack.enter_context(atomic_path(r.labelmap))
            write_labelmap(tmp_lm, result.mask, query)
        flags = review_flags(result.records, cfg.mode_quality())
        if r.png:
            tmp_png = stack.enter_context(atomic_path(r.png))
            # slices that were segmented (auto-stop leaves the far ones untouched)
            seen = [rec.index for rec in result.records if rec.support_index < 0 or np.isfinite(rec.score)]
            shown = pick_slices(seen or [rec.index for rec in result.records], 18)
            records = {rec.index: rec for rec in result.records}
            titles = {i: _title(records[i], flags.get(i)) for i in shown}
            row_sp, col_sp = in_plane_spacing(query.spacing, r.axis)
            save_montage(tmp_png, query.array, result.mask, r.axis, shown, result.window,
                         reference=reference, records=records, titles=titles, aspect=row_sp / col_sp,
                         title=f"{name}: green = SynPo, dashed yellow = reference, + / x = prompts",
                         orientation=display_orientation(query.direction, r.axis))
        if r.confidence_png:
            tmp_conf = stack.enter_context(atomic_path(r.confidence_png))
            save_confidence_plot(tmp_conf, result.records, cfg.mode_quality(), title=f"{name}: per-slice confidence")
        if r.records:
            tmp_rec = stack.enter_context(atomic_path(r.records))
            tmp_rec.write_text(json.dumps({
                "axis": result.axis, "window": list(result.window), "config": cfg.to_dict(),
                "flags": {str(k): v for k, v in sorted(flags.items())},
                "records": [rec.to_dict() for rec in result.records]}, indent=1))
    return flags


def _title(record, flag: Optional[str] = None) -> str:
    if record.support_index < 0:
        return f"slice {record.index} (support)"
    text = f"slice {record.index}  c={record.confidence:.2f}"
    if flag:
        text += " [" + flag.split(":")[0].split(" (")[0] + "]"
    return text


__all__ = ["SegmentOutcome", "SegmentRequest", "segment_files"]
