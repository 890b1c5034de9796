"""The ``synpo`` command: segment, demo, and the subcommands other modules register.

Errors a user can fix end the run with exit code 2 and one line saying what to fix;
nothing is written then. Outputs are written only once everything has succeeded.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from .io import InputError

#: (name, help, add_arguments(parser), run(args) -> exit code); extended by other modules
Subcommand = Tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
SUBCOMMANDS: List[Subcommand] = []


def register_subcommand(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None],
                        run: Callable[[argparse.Namespace], int]) -> None:
    """Add a ``synpo NAME`` subcommand: ``arguments`` fills its parser, ``run`` executes it."""
    SUBCOMMANDS.append((name, help, arguments, run))


# --------------------------------------------------------------------------- helpers

def parse_range(text: Optional[str]) -> Optional[Tuple[Optional[int], Optional[int]]]:
    """'a:b' (half-open, like Python), 'a:' or ':b' -> (a, b) with None for open ends."""
    if text is None:
        return None
    if ":" not in text:
        raise InputError(f"--range must look like START:STOP (half-open), got {text!r}")
    start, _, stop = text.partition(":")
    try:
        return (int(start) if start.strip() else None, int(stop) if stop.strip() else None)
    except ValueError:
        raise InputError(f"--range must hold integers, got {text!r}") from None


def parse_assignments(items: Sequence[str]) -> dict:
    """``--set section.field=value`` items to a dict (values parsed as JSON when possible)."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise InputError(f"--set expects section.field=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def build_config(backend_preset: str, config_file: Optional[str], assignments: Sequence[str]):
    """Preset of the backend, then a JSON config file, then ``--set`` overrides."""
    import dataclasses

    from .config import SynPoConfig, _coerce
    from .presets import preset

    cfg = preset(backend_preset)
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise InputError(f"config file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"config file {path} is not valid JSON: {exc}") from None
        merged = cfg.to_dict()
        for section, values in data.items():
            if section not in merged:
                raise InputError(f"config file {path}: unknown section {section!r}")
            merged[section].update(values)
        cfg = SynPoConfig.from_dict(merged)
    for key, value in parse_assignments(assignments).items():
        section, _, name = key.partition(".")
        if not hasattr(cfg, section) or name not in {f.name for f in dataclasses.fields(getattr(cfg, section))}:
            raise InputError(f"--set: unknown parameter {key!r}")
        try:
            cfg = cfg.updated(**{key: _coerce(type(getattr(cfg, section)), name, value)})
        except (TypeError, ValueError) as exc:
            raise InputError(f"--set {key}: {exc}") from None
    return cfg


def select_label(mask_array: np.ndarray, label: Optional[int], path: str) -> np.ndarray:
    """Binary mask of ``label`` (or of the one non-zero label when not given)."""
    values = np.unique(mask_array)
    nonzero = [int(v) for v in values if v != 0]
    if not nonzero:
        raise InputError(f"support mask {path} is empty: it has no non-zero voxel")
    if label is None:
        if len(nonzero) > 1:
            shown = ", ".join(str(v) for v in nonzero[:12]) + (" ..." if len(nonzero) > 12 else "")
            raise InputError(f"support mask {path} holds several labels ({shown}): choose one with --label")
        label = nonzero[0]
    if label not in nonzero:
        raise InputError(f"label {label} is absent from {path} (labels present: "
                         f"{', '.join(str(v) for v in nonzero[:12])})")
    return mask_array == label


class _ProgressBar:
    """A one-line progress bar on stdout (tqdm), fed by the driver's progress events."""

    def __init__(self, enabled: bool) -> None:
        self.bar = None
        self.enabled = enabled

    def __call__(self, event) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, file=sys.stdout, unit="slice", desc="SynPo", leave=True,
                            dynamic_ncols=True)
        self.bar.update(1)
        rec = event.record
        if np.isfinite(rec.score):
            self.bar.set_postfix(slice=rec.index, score=f"{rec.score:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary arrays; 1.0 when both are empty."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


# --------------------------------------------------------------------------- segment

def _segment_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--query", required=True, help="volume to segment (NIfTI, NRRD, MHA)")
    p.add_argument("--support", help="volume the support slice lies in (default: the query)")
    p.add_argument("--support-mask", required=True, help="labelmap on the support volume's grid")
    p.add_argument("--support-slice", required=True, type=int, nargs="+",
                   help="index of the labelled slice(s) along --axis (k-shot: several)")
    p.add_argument("--axis", type=int, default=0, choices=(0, 1, 2),
                   help="array axis of the slices, in (k, j, i) order: 0 = k (default), 1 = j, 2 = i")
    p.add_argument("--label", type=int, help="label value of the structure in --support-mask")
    p.add_argument("--backend", default="lite", help="model family (default: lite)")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: automatic)")
    p.add_argument("--range", dest="slice_range", help="query slices START:STOP, half-open (default: all)")
    p.add_argument("--out", required=True, help="output segmentation (.seg.nrrd)")
    p.add_argument("--labelmap", help="also write the mask as a labelmap image (e.g. .nii.gz)")
    p.add_argument("--png", help="write a PNG montage of slices with mask and prompt points")
    p.add_argument("--records", help="write per-slice records (points, score, timing) as JSON")
    p.add_argument("--reference", help="reference labelmap on the query grid: print Dice against it")
    p.add_argument("--reference-label", type=int, help="label in --reference (default: --label)")
    p.add_argument("--name", default=None, help="segment name (default: SynPo or the label)")
    p.add_argument("--color", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                   help="segment colour, 0..1 each")
    p.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="intensity window for both volumes (default: CT [-125, 275] HU or MRI 0.5-99.5%%)")
    p.add_argument("--config", help="JSON file of configuration sections (see SynPoLib.config)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one parameter, e.g. --set points.n_negative=2 (repeatable)")
    p.add_argument("--batch-size", type=int, default=1, help="query slices per encoder batch")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _open_backend(name: str, device: Optional[str]):
    from .backends import BACKENDS, create_backend

    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose from {', '.join(sorted(BACKENDS))}")
    options = {} if device is None else {"device": device}
    return create_backend(name, **options)


def run_segment(args: argparse.Namespace) -> int:
    from .config import WindowConfig
    from .io import read_volume, same_geometry
    from .volume import Support, resolve_slices, segment_volume

    for flag, value in (("--out", args.out),):
        if not str(value).endswith((".seg.nrrd", ".nrrd")):
            raise InputError(f"{flag} must end in .seg.nrrd, got {value}")
    query = read_volume(args.query)
    support_vol = read_volume(args.support) if args.support else query
    mask_vol = read_volume(args.support_mask)
    problem = same_geometry(support_vol, mask_vol)
    if problem:
        raise InputError(f"support mask {args.support_mask} is not on the support volume's grid: {problem}")
    mask = select_label(mask_vol.array, args.label, args.support_mask)
    n = support_vol.array.shape[args.axis]
    for s in args.support_slice:
        if not 0 <= s < n:
            raise InputError(f"support slice {s} is outside the support volume: 0..{n - 1} along axis {args.axis}")
        if not np.take(mask, s, axis=args.axis).any():
            raise InputError(f"the structure is absent from support slice {s} (axis {args.axis}): "
                             "pick a slice where it is labelled")
    reference = None
    if args.reference:
        ref_vol = read_volume(args.reference)
        problem = same_geometry(query, ref_vol)
        if problem:
            raise InputError(f"reference {args.reference} is not on the query's grid: {problem}")
        ref_label = args.reference_label if args.reference_label is not None else args.label
        reference = select_label(ref_vol.array, ref_label, args.reference)
    rng = parse_range(args.slice_range)
    n_query = query.array.shape[args.axis]
    slices = None
    if rng is not None:
        start = 0 if rng[0] is None else rng[0]
        stop = n_query if rng[1] is None else rng[1]
        if not (0 <= start < stop <= n_query):
            raise InputError(f"--range {args.slice_range} is outside the query: 0..{n_query} along axis {args.axis}")
        slices = range(start, stop)
    slices = resolve_slices(slices, n_query)

    backend = _open_backend(args.backend, args.device)
    cfg = build_config(backend.preset, args.config, args.set)
    if args.window:
        cfg = cfg.replace(window=WindowConfig(window=tuple(args.window)))

    same = args.support is None or Path(args.support).resolve() == Path(args.query).resolve()
    support = Support(volume=support_vol.array, mask=mask, slices=args.support_slice, axis=args.axis,
                      spacing=support_vol.spacing)
    bar = _ProgressBar(enabled=not args.quiet)
    started = time.perf_counter()
    try:
        result = segment_volume(backend, query.array, support, config=cfg, slices=slices,
                                query_spacing=query.spacing, same_volume=same,
                                batch_size=args.batch_size, progress=bar)
    finally:
        bar.close()
    elapsed = time.perf_counter() - started

    name = args.name or (f"SynPo label {args.label}" if args.label is not None else "SynPo")
    color = tuple(args.color) if args.color else None
    _write_outputs(args, query, result, reference, name, color)

    segmented = [r for r in result.records if r.support_index >= 0]
    print(f"segmented {len(segmented)} slices along axis {args.axis} in {elapsed:.1f} s "
          f"({elapsed / max(len(segmented), 1):.2f} s/slice) with {backend.describe()}")
    if reference is not None:
        scored = [r.index for r in segmented]
        sel = [slice(None)] * 3
        sel[args.axis] = scored
        d = dice(result.mask[tuple(sel)] > 0, reference[tuple(sel)])
        print(f"Dice against the reference over the {len(scored)} segmented slices: {d:.4f}")
    print(f"wrote {args.out}" + "".join(f", {p}" for p in (args.labelmap, args.png, args.records) if p))
    return 0


def _write_outputs(args, query, result, reference, name, color) -> None:
    """Write every requested output, or none of them."""
    from .io import DEFAULT_COLOR, atomic_path, segmentation_dict, write_labelmap
    from .overlay import display_orientation, pick_slices, save_montage
    from .preprocess import in_plane_spacing

    import slicerio

    seg = segmentation_dict(result.mask, query, name=name, color=color or DEFAULT_COLOR)
    with ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(args.out))
        slicerio.write_segmentation(str(tmp), seg)
        if args.labelmap:
            tmp_lm = stack.enter_context(atomic_path(args.labelmap))
            write_labelmap(tmp_lm, result.mask, query)
        if args.png:
            tmp_png = stack.enter_context(atomic_path(args.png))
            shown = pick_slices([r.index for r in result.records], 18)
            records = {r.index: r for r in result.records}
            titles = {i: _title(records[i]) for i in shown}
            row_sp, col_sp = in_plane_spacing(query.spacing, args.axis)
            save_montage(tmp_png, query.array, result.mask, args.axis, shown, result.window,
                         reference=reference, records=records, titles=titles, aspect=row_sp / col_sp,
                         title=f"{name}: green = SynPo, dashed yellow = reference, + / x = prompts",
                         orientation=display_orientation(query.direction, args.axis))
        if args.records:
            tmp_rec = stack.enter_context(atomic_path(args.records))
            tmp_rec.write_text(json.dumps({
                "axis": result.axis, "window": list(result.window),
                "records": [r.to_dict() for r in result.records]}, indent=1))


register_subcommand("segment", "segment a structure in a volume from labelled support slice(s)",
                    _segment_arguments, run_segment)


def _title(record) -> str:
    if record.support_index < 0:
        return f"slice {record.index} (support)"
    flag = "" if record.accepted else " rejected"
    return f"slice {record.index}  s={record.score:.2f}{flag}"


# --------------------------------------------------------------------------- main

def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    _load_extensions()
    parser = argparse.ArgumentParser(prog="synpo", description="SynPo: one-shot segmentation from one labelled slice.")
    parser.add_argument("--version", action="version", version=f"synpo {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text, arguments, run in SUBCOMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        arguments(p)
        p.set_defaults(run=run)
    return parser


def _load_extensions() -> None:
    """Import the modules that register further subcommands."""
    from . import demo  # noqa: F401  (registers "demo")
    from .evaluation import cli as _evaluation  # noqa: F401  (registers "eval")


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except InputError as exc:
        print(f"synpo: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # the library's input checks
        print(f"synpo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("synpo: cancelled; nothing was written", file=sys.stderr)
        return 130

