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
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

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
    #: one label value, several (one run, one segment each), or "all" (every label drawn
    #: on the support slices); None: the support mask's only label
    label: Union[None, int, str, Sequence[Union[int, str]]] = None
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
    #: a run again after corrections: the last result's labelmap with the user's
    #: corrections, the slices corrected (this round and earlier ones), and the result
    #: before the corrections (the slices that differ are this round's)
    corrected: Optional[str] = None
    corrected_slices: Sequence[int] = ()
    previous: Optional[str] = None

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
    result: object  # SynPoLib.volume.VolumeResult (the first structure's, with several)
    config: object  # SynPoLib.config.SynPoConfig
    #: what ran: the backend's own description
    backend: str
    #: Dice against the reference over the query slices, when a reference was given
    dice: Optional[float]
    #: slice index -> why a person should look at it (SynPoLib.volume.qc.review_flags)
    flags: Dict[int, str]
    seconds: float
    #: several structures, or a run again: every structure's result (a
    #: SynPoLib.volume.StructuresResult, a CorrectedResult after corrections), with
    #: per-structure Dice and flags (keyed by structure name)
    structures: Optional[object] = None
    dices: Dict[str, float] = dataclasses.field(default_factory=dict)
    structure_flags: Dict[str, Dict[int, str]] = dataclasses.field(default_factory=dict)

    @property
    def mode(self) -> str:
        """The mode that ran (SynPoLib.config.Mode value)."""
        return self.config.propagation.mode.value

    def report_lines(self) -> List[str]:
        """What the run did, for a person: counts, time, auto-stop, flagged slices, Dice."""
        if self.structures is not None:
            return self._structures_lines()
        r, records = self.request, self.result.records
        queried = [rec for rec in records if rec.support_index >= 0]
        segmented = [rec for rec in queried if np.isfinite(rec.score)]
        painted = [rec for rec in queried if rec.pixels > 0]
        lines = [f"segmented {len(segmented)} of {len(queried)} query slices along axis {r.axis} in "
                 f"{self.seconds:.1f} s ({self.seconds / max(len(segmented), 1):.2f} s/slice) with {self.backend}, "
                 f"{self.mode} mode; {len(painted)} painted"]
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

    def _structures_lines(self) -> List[str]:
        r, result = self.request, self.structures
        plans = getattr(result, "plans", None)
        total = sum(1 for res in result.results.values() for rec in res.records
                    if rec.support_index >= 0 and np.isfinite(rec.score))
        head = "ran again after corrections" if plans is not None else "segmented"
        lines = [f"{head}: {len(result.results)} structure(s) along axis {r.axis}, {total} structure-slices in "
                 f"{self.seconds:.1f} s with {self.backend} (encoder passes shared)"]
        for name, res in result.results.items():
            queried = [rec for rec in res.records if rec.support_index >= 0]
            painted = sum(1 for rec in queried if rec.pixels > 0)
            parts = [f"{painted} slices painted"]
            if plans is not None:
                plan = plans[name]
                changed = result.changed.get(name, [])
                shown = ", ".join(map(str, changed[:12])) + (" ..." if len(changed) > 12 else "")
                parts.append(f"corrected {', '.join(map(str, plan.corrected)) or 'none'}; recomputed "
                             f"{len(plan.recompute)} slices, emptied {len(plan.emptied)}; the correction changed "
                             f"{len(changed)}: {shown}")
            flags = self.structure_flags.get(name, {})
            review = [i for i in sorted(flags) if "auto-stop" not in flags[i]]
            if review:
                parts.append(f"review {', '.join(str(i) for i in review[:6])}{' ...' if len(review) > 6 else ''}")
            if result.given_up.get(name):
                parts.append(f"{result.given_up[name]} pixels given to a structure with a stronger claim")
            if name in self.dices:
                parts.append(f"Dice {self.dices[name]:.4f}")
            lines.append(f"{name}: " + "; ".join(parts))
        if result.overlapping:
            lines.append("left overlapping (drawn overlapping on a support slice): "
                         + ", ".join(f"{a} / {b}" for a, b in result.overlapping))
        lines.append("wrote " + ", ".join(r.outputs))
        return lines


#: segment colours of a multi-structure result, in order (then repeated): Slicer's
#: first generic anatomy colours, which tell neighbours apart                       [G]
STRUCTURE_COLORS = ((0.5, 0.68, 0.5), (0.95, 0.5, 0.2), (0.2, 0.6, 0.95), (0.9, 0.85, 0.2), (0.75, 0.35, 0.85),
                    (0.2, 0.85, 0.8), (0.95, 0.35, 0.45), (0.55, 0.4, 0.25))


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
    corrected_vol = read_volume(r.corrected, "--corrected") if r.corrected else None
    previous_vol = read_volume(r.previous, "--previous") if r.previous else None
    loaded = check_loaded(checked, query, support_vol, mask_vol, ref_vol, corrected_vol, previous_vol)
    slices = resolve_slices(checked.slices, query.array.shape[r.axis])

    backend = open_backend(r.backend, options=options)
    batch_size = r.batch_size
    if batch_size is None:
        suggest = getattr(backend, "suggested_batch_size", None)
        batch_size = suggest() if suggest is not None else 1
    cfg = checked.config

    same = r.support is None or same_file(r.support, r.query)
    if checked.several or r.corrected:
        return _segment_structures(r, checked, loaded, backend, query, support_vol, slices, batch_size, same,
                                   progress, on_written)
    support = Support(volume=support_vol.array, mask=loaded.mask, slices=list(checked.support_slices), axis=r.axis,
                      spacing=support_vol.spacing, window=loaded.support_window, origin=support_vol.origin,
                      direction=support_vol.direction)
    started = time.perf_counter()
    try:
        result = segment_volume(backend, query.array, support, config=cfg, slices=slices,
                                query_spacing=query.spacing, query_window=loaded.query_window, same_volume=same,
                                batch_size=batch_size, progress=progress, query_origin=query.origin,
                                query_direction=query.direction)
    except DeviceMemoryError as exc:
        raise InputError(str(exc)) from None
    elapsed = time.perf_counter() - started

    label = checked.labels[0] if checked.labels else None
    name = r.name or (f"SynPo label {label}" if label is not None else "SynPo")
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


def _segment_structures(r: SegmentRequest, checked, loaded, backend, query, support_vol, slices, batch_size: int,
                        same: bool, progress, on_written) -> SegmentOutcome:
    """Several structures in one run, or a run again after corrections (one or several)."""
    from ..metrics import dice
    from ..volume import Structure, Support, segment_structures
    from ..volume.corrections import Correction, rerun
    from ..volume.qc import review_flags

    cfg = checked.config
    masks = loaded.masks or {checked.labels[0] if checked.labels else 0: loaded.mask}
    names = {label: (f"label {label}" if label else (r.name or "SynPo")) for label in masks}
    supports = {}
    for label, structure in masks.items():
        drawn = [s for s in checked.support_slices if np.take(structure, s, axis=r.axis).any()]
        supports[label] = Support(volume=support_vol.array, mask=structure, slices=drawn, axis=r.axis,
                                  spacing=support_vol.spacing, window=loaded.support_window,
                                  origin=support_vol.origin, direction=support_vol.direction)
    started = time.perf_counter()
    try:
        if r.corrected:
            corrections = [Correction(names[label], supports[label], loaded.current[label or 0],
                                      corrected=loaded.corrected[label or 0], earlier=loaded.earlier[label or 0],
                                      label=label or 1, slices=slices, same_volume=same) for label in masks]
            result = rerun(backend, query.array, corrections, config=cfg, query_spacing=query.spacing,
                           query_window=loaded.query_window, batch_size=batch_size, progress=progress,
                           query_origin=query.origin, query_direction=query.direction)
        else:
            structures = [Structure(names[label], supports[label], label, same_volume=same) for label in masks]
            result = segment_structures(backend, query.array, structures, config=cfg, slices=slices,
                                        query_spacing=query.spacing, query_window=loaded.query_window,
                                        batch_size=batch_size, progress=progress, query_origin=query.origin,
                                        query_direction=query.direction)
    except DeviceMemoryError as exc:
        raise InputError(str(exc)) from None
    elapsed = time.perf_counter() - started
    flags = {name: review_flags(res.records, cfg.mode_quality()) for name, res in result.results.items()}
    references = loaded.references or ({names[label]: loaded.reference for label in masks}
                                       if loaded.reference is not None else {})
    references = {names.get(k, k) if isinstance(k, int) else k: v for k, v in references.items()}
    _write_structures(r, query, result, references, cfg, flags, on_written)
    dices = {}
    for name, truth in references.items():
        res = result.results[name]
        scored = [rec.index for rec in res.records if rec.support_index >= 0] or list(slices)
        sel = [slice(None)] * 3
        sel[r.axis] = scored
        dices[name] = dice(res.mask[tuple(sel)] > 0, truth[tuple(sel)])
    first = next(iter(result.results))
    return SegmentOutcome(request=r, result=result.results[first], config=cfg, backend=backend.describe(),
                          dice=dices.get(first) if len(result.results) == 1 else None, flags=flags[first],
                          seconds=elapsed, structures=result, dices=dices, structure_flags=flags)


def _write_structures(r: SegmentRequest, query, result, references: Dict[str, np.ndarray], cfg,
                      flags: Dict[str, Dict[int, str]], on_written) -> None:
    """Every requested output of a multi-structure run (or a run again), or none of them."""
    import slicerio

    from ..io import segments_dict, staged_outputs, write_label_image
    from ..overlay import display_orientation, pick_slices, save_montage
    from ..preprocess import in_plane_spacing
    from ..volume.qc import save_structures_confidence_plot

    colors = {name: (tuple(r.color) if (r.color and len(result.results) == 1) else
                     STRUCTURE_COLORS[n % len(STRUCTURE_COLORS)]) for n, name in enumerate(result.results)}
    seg = segments_dict([(name, res.mask, colors[name]) for name, res in result.results.items()], query)
    labels = result.labelmap() if len(result.results) > 1 else (next(iter(result.results.values())).mask > 0)
    fields = [f for f in OUTPUT_FLAGS if getattr(r, f)]
    done = (lambda: on_written(r.outputs)) if on_written is not None else None
    with staged_outputs([getattr(r, f) for f in fields], on_commit=done) as temps:
        tmp = dict(zip(fields, temps))
        slicerio.write_segmentation(str(tmp["out"]), seg)
        if r.labelmap:
            write_label_image(tmp["labelmap"], labels, query)
        if r.png:
            union = np.asarray(labels) > 0
            truth = None
            if references:
                truth = np.zeros(union.shape, bool)
                for t in references.values():
                    truth |= np.asarray(t, bool)
            seen = sorted({rec.index for res in result.results.values() for rec in res.records
                           if rec.support_index < 0 or np.isfinite(rec.score)})
            shown = pick_slices(seen or list(range(union.shape[r.axis])), 18)
            row_sp, col_sp = in_plane_spacing(query.spacing, r.axis)
            save_montage(tmp["png"], query.array, union.astype(np.uint8), r.axis, shown, result.window,
                         reference=truth, titles={i: f"slice {i}" for i in shown}, aspect=row_sp / col_sp,
                         title=f"{len(result.results)} structure(s): green = SynPo, dashed yellow = reference",
                         orientation=display_orientation(query.direction, r.axis))
        if r.confidence_png:
            by_name = {n: res.records for n, res in result.results.items()}
            save_structures_confidence_plot(tmp["confidence_png"], by_name, cfg.mode_quality(),
                                            title="per-slice confidence")
        if r.records:
            plans = getattr(result, "plans", None)
            structures = {}
            for name, res in result.results.items():
                entry = {"label": result.labels[name], "flags": {str(k): v for k, v in sorted(flags[name].items())},
                         "notes": list(res.notes), "records": [rec.to_dict() for rec in res.records]}
                if plans is not None:
                    plan = plans[name]
                    entry.update(corrected=list(plan.corrected), earlier=list(plan.earlier),
                                 barriers=list(plan.barriers), recomputed=sorted(plan.recompute),
                                 emptied=list(plan.emptied), changed=list(result.changed.get(name, [])))
                structures[name] = entry
            tmp["records"].write_text(json.dumps({
                "axis": result.axis, "window": list(result.window), "config": cfg.to_dict(),
                "conflict_rule": result.rule.value, "overlapping": [list(p) for p in result.overlapping],
                "given_up": result.given_up, "structures": structures}, indent=1))


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
    flags = review_flags(result.records, cfg.mode_quality())
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
            # the registration mode places no prompt: the legend says only what is drawn
            prompted = any(len(rec.points) for rec in result.records)
            legend = "green = SynPo, dashed yellow = reference" + (", + / x = prompts" if prompted else "")
            row_sp, col_sp = in_plane_spacing(query.spacing, r.axis)
            save_montage(tmp["png"], query.array, result.mask, r.axis, shown, result.window,
                         reference=reference, records=records, titles=titles, aspect=row_sp / col_sp,
                         title=f"{name}: {legend}",
                         orientation=display_orientation(query.direction, r.axis))
        if r.confidence_png:
            save_confidence_plot(tmp["confidence_png"], result.records, cfg.mode_quality(),
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
