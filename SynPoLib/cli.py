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
    p.add_argument("--backend", default="lite",
                   help="model family: lite (LiteMedSAM, made for CPUs; default), synpo (SAM 2.1 + DINOv2, the "
                        "paper; wants a GPU), sam2 (SAM 2.1 alone)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, mps (default: auto = CUDA > MPS > CPU)")
    p.add_argument("--sam2-size", default=None, choices=("tiny", "small", "base_plus", "large"),
                   help="SAM 2.1 size for the synpo and sam2 backends (default: large, the paper's)")
    p.add_argument("--dino-model", default=None,
                   help="DINOv2 of the synpo backend: vits14, vitb14, vitl14, vitg14, each also -reg4, or sinder "
                        "(the paper's SINDER ViT-g/14) (default: vitl14-reg4)")
    p.add_argument("--sam2-checkpoint", default=None, help="local SAM 2.1 checkpoint (.pt) instead of the cached one")
    p.add_argument("--dino-checkpoint", default=None,
                   help="local DINOv2 checkpoint, timm or original DINOv2 format (e.g. SINDER's sinder.pth)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="GPU autocast precision (default: auto = bf16 where supported, else fp16; fp32 on CPU)")
    p.add_argument("--weights-dir", default=None, help="weights cache folder (default: $SYNPO_WEIGHTS_DIR or "
                                                       "~/.cache/synpo/weights)")
    p.add_argument("--offline", action="store_true", help="never download weights (also: SYNPO_OFFLINE=1)")
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
    p.add_argument("--mode", choices=("slices", "propagate", "video", "hybrid"), default=None,
                   help="slices: each slice from the support (the paper); propagate: also from the previous "
                        "slice's result; video / hybrid: SAM2's video predictor (sam2/synpo backends)")
    p.add_argument("--no-auto-stop", action="store_true",
                   help="paint every slice in the range, even past the structure's end")
    p.add_argument("--largest-component", action="store_true",
                   help="keep only the 3D part connected to the support (or the largest)")
    p.add_argument("--confidence-png", help="write a plot of per-slice confidence with flagged slices")
    p.add_argument("--batch-size", type=int, default=None,
                   help="query slices per encoder batch (default: 1 on CPU, 16 on a GPU; the GPU batch shrinks "
                        "to the free memory and halves on out-of-memory)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


#: backends built on SAM 2.1 (their options and weights come from SynPoLib.backends.sam2_dinov2)
_SAM2_BACKENDS = ("synpo", "sam2")


def _backend_options(args: argparse.Namespace) -> dict:
    """Options of the chosen backend; for SAM 2.1 backends the weights are resolved here,
    first, so a missing file fails before any other work."""
    from .backends import BACKENDS
    from .weights import WeightsError

    name = args.backend
    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose from {', '.join(sorted(BACKENDS))}")
    if name in _SAM2_BACKENDS:
        from .backends.sam2_dinov2 import options_from_args

        try:
            return options_from_args(args)
        except WeightsError as exc:
            raise InputError(str(exc)) from None
    given = [flag for flag, attr in (("--sam2-size", "sam2_size"), ("--dino-model", "dino_model"),
                                     ("--sam2-checkpoint", "sam2_checkpoint"), ("--dino-checkpoint", "dino_checkpoint"))
             if getattr(args, attr, None)]
    if given:
        raise InputError(f"{', '.join(given)} apply to the synpo and sam2 backends, not {name}")
    device = getattr(args, "device", None)
    if device is None:
        return {}
    from .device import resolve_device

    return {"device": str(resolve_device(device))}  # "auto" and absent devices handled in one place


def _open_backend(name: str, device: Optional[str] = None, options: Optional[dict] = None):
    from .backends import BACKENDS, create_backend
    from .weights import WeightsError

    if name not in BACKENDS:
        raise InputError(f"unknown backend {name!r}; choose from {', '.join(sorted(BACKENDS))}")
    if options is None:
        options = {} if device is None else {"device": device}
    try:
        return create_backend(name, **options)
    except WeightsError as exc:
        raise InputError(str(exc)) from None


def run_segment(args: argparse.Namespace) -> int:
    from .config import Mode, WindowConfig
    from .io import read_volume, same_geometry
    from .volume import Support, resolve_slices, segment_volume

    for flag, value in (("--out", args.out),):
        if not str(value).endswith((".seg.nrrd", ".nrrd")):
            raise InputError(f"{flag} must end in .seg.nrrd, got {value}")
    backend_options = _backend_options(args)
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

    backend = _open_backend(args.backend, options=backend_options)
    batch_size = args.batch_size
    if batch_size is None:
        suggest = getattr(backend, "suggested_batch_size", None)
        batch_size = suggest() if suggest is not None else 1
    cfg = build_config(backend.preset, args.config, args.set)
    if args.window:
        cfg = cfg.replace(window=WindowConfig(window=tuple(args.window)))
    if getattr(args, "mode", None):
        cfg = cfg.updated(**{"propagation.mode": Mode(args.mode)})
    if getattr(args, "no_auto_stop", False):
        cfg = cfg.updated(**{"quality.auto_stop": False})
    if getattr(args, "largest_component", False):
        cfg = cfg.updated(**{"quality.largest_component": True})

    same = args.support is None or Path(args.support).resolve() == Path(args.query).resolve()
    support = Support(volume=support_vol.array, mask=mask, slices=args.support_slice, axis=args.axis,
                      spacing=support_vol.spacing)
    bar = _ProgressBar(enabled=not args.quiet)
    started = time.perf_counter()
    from .device import DeviceMemoryError

    try:
        result = segment_volume(backend, query.array, support, config=cfg, slices=slices,
                                query_spacing=query.spacing, same_volume=same,
                                batch_size=batch_size, progress=bar)
    except DeviceMemoryError as exc:
        raise InputError(str(exc)) from None
    finally:
        bar.close()
    elapsed = time.perf_counter() - started

    name = args.name or (f"SynPo label {args.label}" if args.label is not None else "SynPo")
    color = tuple(args.color) if args.color else None
    flags = _write_outputs(args, query, result, reference, name, color, cfg)

    queried = [r for r in result.records if r.support_index >= 0]
    run = [r for r in queried if np.isfinite(r.score)]
    painted = [r for r in queried if r.pixels > 0]
    print(f"segmented {len(run)} of {len(queried)} query slices along axis {args.axis} in {elapsed:.1f} s "
          f"({elapsed / max(len(run), 1):.2f} s/slice) with {backend.describe()}; {len(painted)} painted")
    stopped = [r.index for r in queried if "auto-stop" in " ".join(r.notes)]
    if stopped:
        print(f"auto-stop: {len(stopped)} slices past the structure's end left unpainted "
              f"(--no-auto-stop paints them)")
    review = [i for i in sorted(flags) if "auto-stop" not in flags[i]]
    if review:
        print(f"review: {len(review)} slices flagged: " + ", ".join(f"{i} ({flags[i]})" for i in review[:8])
              + (" ..." if len(review) > 8 else ""))
    if reference is not None:
        scored = [r.index for r in queried]
        sel = [slice(None)] * 3
        sel[args.axis] = scored
        d = dice(result.mask[tuple(sel)] > 0, reference[tuple(sel)])
        print(f"Dice against the reference over the {len(scored)} query slices: {d:.4f}")
    outputs = (args.labelmap, args.png, getattr(args, "confidence_png", None), args.records)
    print(f"wrote {args.out}" + "".join(f", {p}" for p in outputs if p))
    return 0


def _write_outputs(args, query, result, reference, name, color, cfg) -> dict:
    """Write every requested output, or none of them; returns the review flags."""
    from .io import DEFAULT_COLOR, atomic_path, segmentation_dict, write_labelmap
    from .overlay import display_orientation, pick_slices, save_montage
    from .preprocess import in_plane_spacing
    from .qc import review_flags, save_confidence_plot

    import slicerio

    seg = segmentation_dict(result.mask, query, name=name, color=color or DEFAULT_COLOR)
    with ExitStack() as stack:
        tmp = stack.enter_context(atomic_path(args.out))
        slicerio.write_segmentation(str(tmp), seg)
        if args.labelmap:
            tmp_lm = stack.enter_context(atomic_path(args.labelmap))
            write_labelmap(tmp_lm, result.mask, query)
        flags = review_flags(result.records, cfg.quality)
        if args.png:
            tmp_png = stack.enter_context(atomic_path(args.png))
            # slices that were segmented (auto-stop leaves the far ones untouched)
            seen = [r.index for r in result.records if r.support_index < 0 or np.isfinite(r.score)]
            shown = pick_slices(seen or [r.index for r in result.records], 18)
            records = {r.index: r for r in result.records}
            titles = {i: _title(records[i], flags.get(i)) for i in shown}
            row_sp, col_sp = in_plane_spacing(query.spacing, args.axis)
            save_montage(tmp_png, query.array, result.mask, args.axis, shown, result.window,
                         reference=reference, records=records, titles=titles, aspect=row_sp / col_sp,
                         title=f"{name}: green = SynPo, dashed yellow = reference, + / x = prompts",
                         orientation=display_orientation(query.direction, args.axis))
        if getattr(args, "confidence_png", None):
            tmp_conf = stack.enter_context(atomic_path(args.confidence_png))
            save_confidence_plot(tmp_conf, result.records, cfg.quality, title=f"{name}: per-slice confidence")
        if args.records:
            tmp_rec = stack.enter_context(atomic_path(args.records))
            tmp_rec.write_text(json.dumps({
                "axis": result.axis, "window": list(result.window), "config": cfg.to_dict(),
                "flags": {str(k): v for k, v in sorted(flags.items())},
                "records": [r.to_dict() for r in result.records]}, indent=1))
    return flags


register_subcommand("segment", "segment a structure in a volume from labelled support slice(s)",
                    _segment_arguments, run_segment)


def _title(record, flag: Optional[str] = None) -> str:
    if record.support_index < 0:
        return f"slice {record.index} (support)"
    text = f"slice {record.index}  c={record.confidence:.2f}"
    if flag:
        text += " [" + flag.split(":")[0].split(" (")[0] + "]"
    return text


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
    from . import weights_cli  # noqa: F401  (registers "weights")
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

