"""One run from files to files: check everything, read the volumes, segment, write.

``synpo segment`` and ``synpo demo`` are thin faces over :func:`segment_files`; a
script can call it with a :class:`SegmentRequest` (the command line's options, by
their argument names). Every check is made before any work, in
:mod:`SynPoLib.files.validate` (which a batch calls per case); errors a user can fix
raise :class:`~SynPoLib.errors.InputError` with one line saying what to fix, and
nothing is written then. Outputs are written only once everything has succeeded,
to temporary files renamed into place together (:func:`SynPoLib.io.staged_outputs`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import DeviceMemoryError, InputError
from .inputs import backend_options, open_backend
from .validate import OUTPUT_FLAGS, check_loaded, check_request


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
        return tuple(str(getattr(self, field)) for field in OUTPUT_FLAGS if getattr(self, field))


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

    def report_lines(self) -> List[str]:
        """What the run did, for a person: counts, time, auto-stop, flagged slices, Dice."""
        r, records = self.request, self.result.records
        queried = [rec for rec in records if rec.support_index >= 0]
        segmented = [rec for rec in queried if np.isfinite(rec.score)]
        painted = [rec for rec in queried if rec.pixels > 0]
        lines = [f"segmented {len(segmented)} of {len(queried)} query slices along axis {r.axis} in "
                 f"{self.seconds:.1f} s ({self.seconds / max(len(segmented), 1):.2f} s/slice) with {self.backend}; "
                 f"{len(painted)} painted"]
        lines.extend(self.result.notes)
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


def segment_files(request: SegmentRequest, progress: Optional[Callable] = None,
                  on_written: Optional[Callable[[Tuple[str, ...]], None]] = None) -> SegmentOutcome:
    """Check the whole request, read the inputs, segment, and write every requested output.

    ``progress`` is called after each slice with a :class:`~SynPoLib.volume.ProgressEvent`;
    ``on_written(paths)`` as soon as the outputs are in place (a Ctrl-C after that
    point finds them complete).
    """
    from ..io import read_volume
    from ..metrics import dice
    from ..paths import same_file
    from ..volume import Support, resolve_slices, segment_volume

    r = request
    checked = check_request(r)  # every check that needs no voxel: before any work
    options = backend_options(r)  # SAM 2.1 weights resolved (and fetched) before the volumes are read
    query = read_volume(r.query, "--query")
    support_vol = read_volume(r.support, "--support") if r.support else query
    mask_vol = read_volume(r.support_mask, "--support-mask")
    ref_vol = read_volume(r.reference, "--reference") if r.reference else None
    loaded = check_loaded(checked, query, support_vol, mask_vol, ref_vol)
    slices = resolve_slices(checked.slices, query.array.shape[r.axis])

    backend = open_backend(r.backend, options=options)
    batch_size = r.batch_size
    if batch_size is None:
        suggest = getattr(backend, "suggested_batch_size", None)
        batch_size = suggest() if suggest is not None else 1
    cfg = checked.config

    same = r.support is None or same_file(r.support, r.query)
    support = Support(volume=support_vol.array, mask=loaded.mask, slices=list(checked.support_slices), axis=r.axis,
                      spacing=support_vol.spacing, window=loaded.support_window)
    started = time.perf_counter()
    try:
        result = segment_volume(backend, query.array, support, config=cfg, slices=slices,
                                query_spacing=query.spacing, query_window=loaded.query_window, same_volume=same,
                                batch_size=batch_size, progress=progress)
    except DeviceMemoryError as exc:
        raise InputError(str(exc)) from None
    elapsed = time.perf_counter() - started

    name = r.name or (f"SynPo label {r.label}" if r.label is not None else "SynPo")
    flags = _write_outputs(r, query, result, loaded.reference, name, tuple(r.color) if r.color else None, cfg,
                           on_written)

    score = None
    if loaded.reference is not None:
        scored = [rec.index for rec in result.records if rec.support_index >= 0]
        sel = [slice(None)] * 3
        sel[r.axis] = scored
        score = dice(result.mask[tuple(sel)] > 0, loaded.reference[tuple(sel)])
    return SegmentOutcome(request=r, result=result, config=cfg, backend=backend.describe(), dice=score,
                          flags=flags, seconds=elapsed)


def _write_outputs(r: SegmentRequest, query, result, reference, name, color, cfg,
                   on_written: Optional[Callable[[Tuple[str, ...]], None]] = None) -> dict:
    """Write every requested output, or none of them; returns the review flags."""
    import slicerio

    from ..config import DEFAULT_COLOR
    from ..io import segmentation_dict, staged_outputs, write_labelmap
    from ..overlay import display_orientation, pick_slices, save_montage
    from ..preprocess import in_plane_spacing
    from ..volume.qc import review_flags, save_confidence_plot

    seg = segmentation_dict(result.mask, query, name=name, color=color or DEFAULT_COLOR)
    flags = review_flags(result.records, cfg.quality)
    fields = [field for field in OUTPUT_FLAGS if getattr(r, field)]
    done = (lambda: on_written(r.outputs)) if on_written is not None else None
    with staged_outputs([getattr(r, field) for field in fields], on_commit=done) as temps:
        tmp = dict(zip(fields, temps))
        slicerio.write_segmentation(str(tmp["out"]), seg)
        if r.labelmap:
            write_labelmap(tmp["labelmap"], result.mask, query)
        if r.png:
            # slices that were segmented (auto-stop leaves the far ones untouched)
            seen = [rec.index for rec in result.records if rec.support_index < 0 or np.isfinite(rec.score)]
            shown = pick_slices(seen or [rec.index for rec in result.records], 18)
            records = {rec.index: rec for rec in result.records}
            titles = {i: _title(records[i], flags.get(i)) for i in shown}
            row_sp, col_sp = in_plane_spacing(query.spacing, r.axis)
            save_montage(tmp["png"], query.array, result.mask, r.axis, shown, result.window,
                         reference=reference, records=records, titles=titles, aspect=row_sp / col_sp,
                         title=f"{name}: green = SynPo, dashed yellow = reference, + / x = prompts",
                         orientation=display_orientation(query.direction, r.axis))
        if r.confidence_png:
            save_confidence_plot(tmp["confidence_png"], result.records, cfg.quality,
                                 title=f"{name}: per-slice confidence")
        if r.records:
            tmp["records"].write_text(json.dumps({
                "axis": result.axis, "window": list(result.window), "config": cfg.to_dict(),
                "notes": list(result.notes), "flags": {str(k): v for k, v in sorted(flags.items())},
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
