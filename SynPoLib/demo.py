"""``synpo demo``: SynPo on real data, from one labelled slice, in one command.

Colin27 (a real T1 MRI, Debian's ``mricron-data``) and the AAL atlas on the same grid:
the left thalamus is labelled on its middle axial slice only, SynPo segments it on all
its other slices, and the result is compared with the atlas and with the trivial
baseline of copying the support mask to every slice.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from .cli import InputError, _segment_arguments, dice, register_subcommand, run_segment

TEMPLATES = Path("/usr/share/mricron/templates")
T1 = TEMPLATES / "ch2.nii.gz"
ATLAS = TEMPLATES / "aal.nii.gz"
#: AAL label values of structures the demo knows by name
STRUCTURES = {"thalamus_l": 77, "thalamus_r": 78, "caudate_l": 71, "caudate_r": 72, "putamen_l": 73,
              "putamen_r": 74, "pallidum_l": 75, "pallidum_r": 76, "hippocampus_l": 37,
              "hippocampus_r": 38, "amygdala_l": 41, "amygdala_r": 42}


def structure_slices(labels: np.ndarray, label: int, axis: int):
    """Slice indices along ``axis`` that hold ``label``, and the middle one."""
    other = tuple(i for i in range(3) if i != axis)
    idx = np.flatnonzero((labels == label).any(axis=other))
    return idx, int(idx[len(idx) // 2])


def _arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo-output", help="folder for the outputs (default: demo-output)")
    p.add_argument("--structure", default="thalamus_l", choices=sorted(STRUCTURES),
                   help="AAL structure to segment (default: thalamus_l)")
    p.add_argument("--axis", type=int, default=0, choices=(0, 1, 2), help="slice axis (default: 0, axial)")
    p.add_argument("--backend", default="lite")
    p.add_argument("--device", default=None)
    p.add_argument("--mode", choices=("slices", "propagate", "video", "hybrid"), default=None,
                   help="how slices are segmented (default: the backend preset's, slice by slice)")
    p.add_argument("--whole-volume", action="store_true",
                   help="segment every slice of the volume, not only the structure's: shows auto-stop")
    p.add_argument("--no-auto-stop", dest="auto_stop", action="store_false",
                   help="paint every slice of the range, even past the structure's end")
    p.add_argument("--quiet", action="store_true")


def run_demo(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    for path in (T1, ATLAS):
        if not path.is_file():
            raise InputError(f"demo data missing: {path}; install it with: apt-get install mricron-data")
    label = STRUCTURES[args.structure]
    atlas = sitk.GetArrayFromImage(sitk.ReadImage(str(ATLAS)))
    slices, middle = structure_slices(atlas, label, args.axis)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"demo: {args.structure} (AAL label {label}) in Colin27 T1, axis {args.axis}: "
          f"support = slice {middle}, query = its other {len(slices) - 1} slices {slices[0]}..{slices[-1]}")
    name = args.structure
    argv = ["--query", str(T1), "--support-mask", str(ATLAS), "--support-slice", str(middle),
            "--axis", str(args.axis), "--label", str(label), "--backend", args.backend,
            "--out", str(out / f"{name}.seg.nrrd"), "--labelmap", str(out / f"{name}.nii.gz"),
            "--png", str(out / f"{name}.png"), "--confidence-png", str(out / f"{name}.confidence.png"),
            "--records", str(out / f"{name}.records.json"), "--reference", str(ATLAS),
            "--name", f"{name} (SynPo)"]
    if not args.whole_volume:
        argv += ["--range", f"{slices[0]}:{slices[-1] + 1}"]
    for flag, value in (("--device", args.device), ("--mode", args.mode)):
        if value:
            argv += [flag, value]
    if not args.auto_stop:
        argv.append("--no-auto-stop")
    if args.quiet:
        argv.append("--quiet")
    # the demo is `synpo segment` with these arguments, parsed by the same parser
    parser = argparse.ArgumentParser(prog="synpo segment")
    _segment_arguments(parser)
    seg_args = parser.parse_args(argv)
    code = run_segment(seg_args)
    mask = atlas == label
    query = [int(s) for s in slices if s != middle]
    copy = np.zeros_like(mask)
    for s in query:
        where = [slice(None)] * 3
        where[args.axis] = s
        support_where = [slice(None)] * 3
        support_where[args.axis] = middle
        copy[tuple(where)] = mask[tuple(support_where)]
    sel = [slice(None)] * 3
    sel[args.axis] = query
    print(f"baseline (copy the support mask to every slice): Dice {dice(copy[tuple(sel)], mask[tuple(sel)]):.4f}")
    print(f"open {out / (args.structure + '.png')} to see the slices; load "
          f"{out / (args.structure + '.seg.nrrd')} on {T1} in 3D Slicer")
    return code


register_subcommand("demo", "segment a brain structure in a real MRI from one slice, with Dice", _arguments,
                    run_demo)
