"""``synpo demo``: SynPo on real data, from one labelled slice, in one command.

Colin27 (a real T1 MRI, Debian's ``mricron-data``) and the AAL atlas on the same grid:
the left thalamus is labelled on its middle axial slice only, SynPo segments it on all
its other slices, and the result is compared with the atlas and with the trivial
baseline of copying the support mask to every slice.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np

from ..config import Mode
from ..errors import InputError
from ..files import SegmentRequest, check_request, segment_files
from ..paths import check_output_file
from ..presets import PRESETS
from .common import ProgressBar, add_backend_arguments

HELP = "segment a brain structure in a real MRI from one slice, with Dice"

TEMPLATES = Path("/usr/share/mricron/templates")
T1 = TEMPLATES / "ch2.nii.gz"
ATLAS = TEMPLATES / "aal.nii.gz"
#: AAL label values of structures the demo knows by name
STRUCTURES = {"thalamus_l": 77, "thalamus_r": 78, "caudate_l": 71, "caudate_r": 72, "putamen_l": 73,
              "putamen_r": 74, "pallidum_l": 75, "pallidum_r": 76, "hippocampus_l": 37,
              "hippocampus_r": 38, "amygdala_l": 41, "amygdala_r": 42}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="demo-output", help="folder for the outputs (default: demo-output)")
    p.add_argument("--structure", default="thalamus_l", choices=sorted(STRUCTURES),
                   help="AAL structure to segment (default: thalamus_l)")
    p.add_argument("--axis", type=int, default=0, choices=(0, 1, 2), help="slice axis (default: 0, axial)")
    add_backend_arguments(p)
    p.add_argument("--mode", choices=tuple(m.value for m in Mode), default=None,
                   help="how slices are segmented (default: the backend preset's; lite: registration)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="the configuration to start from (default: the backend's; paper: the paper's method)")
    p.add_argument("--whole-volume", action="store_true",
                   help="segment every slice of the volume, not only the structure's: shows auto-stop")
    p.add_argument("--no-auto-stop", dest="auto_stop", action="store_false",
                   help="paint every slice of the range, even past the structure's end")
    p.add_argument("--quiet", action="store_true")


def run(args: argparse.Namespace) -> int:
    import SimpleITK as sitk

    from ..evaluation.protocols import structure_slices
    from ..metrics import dice
    from ..preprocess import take_slice
    from ..volume.types import set_slice

    for path in (T1, ATLAS):
        if not path.is_file():
            raise InputError(f"demo data missing: {path}; install it with: apt-get install mricron-data")
    label = STRUCTURES[args.structure]
    out = Path(args.out)
    name = args.structure
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file: the demo writes several files into a folder; give a folder")
    check_output_file(out / f"{name}.seg.nrrd", "--out")  # the folder can be made and written
    request = SegmentRequest(
        query=str(T1), support_mask=str(ATLAS), support_slice=[0], axis=args.axis, label=label,
        backend=args.backend, device=args.device, mode=args.mode, preset=args.preset,
        no_auto_stop=not args.auto_stop,
        out=str(out / f"{name}.seg.nrrd"), labelmap=str(out / f"{name}.nii.gz"), png=str(out / f"{name}.png"),
        confidence_png=str(out / f"{name}.confidence.png"), records=str(out / f"{name}.records.json"),
        reference=str(ATLAS), name=f"{name} (SynPo)", quiet=args.quiet)
    check_request(request)  # the outputs, the mode, the backend: before the atlas is read
    atlas = sitk.GetArrayFromImage(sitk.ReadImage(str(ATLAS)))
    slices = structure_slices(atlas, label, args.axis)
    middle = slices[len(slices) // 2]
    print(f"demo: {args.structure} (AAL label {label}) in Colin27 T1, axis {args.axis}: "
          f"support = slice {middle}, query = its other {len(slices) - 1} slices {slices[0]}..{slices[-1]}")
    request = dataclasses.replace(request, support_slice=[middle],
                                  slice_range=None if args.whole_volume else f"{slices[0]}:{slices[-1] + 1}")
    bar = ProgressBar(enabled=not args.quiet)
    try:
        outcome = segment_files(request, progress=bar, on_written=lambda paths: setattr(args, "written", paths))
    finally:
        bar.close()
    for line in outcome.report_lines():
        print(line)
    mask = atlas == label
    query = [s for s in slices if s != middle]
    copy = np.zeros_like(mask)
    for s in query:
        set_slice(copy, s, args.axis, take_slice(mask, middle, args.axis))
    sel = [slice(None)] * 3
    sel[args.axis] = query
    copied = dice(copy[tuple(sel)], mask[tuple(sel)])
    print(f"baseline (copy the support mask to every slice): Dice {copied:.4f}")
    ours = dice(outcome.result.mask[tuple(sel)] > 0, mask[tuple(sel)])
    print(f"Dice on the structure's {len(query)} other slices: SynPo, {outcome.mode} mode {ours:.4f} | "
          f"copy the labelled slice {copied:.4f}")
    print(f"open {out / (args.structure + '.png')} to see the slices; load "
          f"{out / (args.structure + '.seg.nrrd')} on {T1} in 3D Slicer")
    return 0


__all__ = ["ATLAS", "HELP", "STRUCTURES", "T1", "add_arguments", "run"]
