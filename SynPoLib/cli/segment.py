"""``synpo segment``: a structure in a volume from labelled support slice(s), to files.

The options are :class:`SynPoLib.files.SegmentRequest`'s fields, by name; the work is
:func:`SynPoLib.files.segment_files`.
"""

from __future__ import annotations

import argparse

from ..config import Mode
from ..files import SegmentRequest, segment_files
from ..presets import PRESETS
from .common import ProgressBar, add_backend_arguments

#: --mode values: every mode of the volume driver
MODE_CHOICES = tuple(m.value for m in Mode)

HELP = "segment one or several structures in a volume from labelled support slice(s)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--query", required=True, help="volume to segment (NIfTI, NRRD, MHA)")
    p.add_argument("--support", help="volume the support slice lies in (default: the query)")
    p.add_argument("--support-mask", required=True, help="labelmap on the support volume's grid")
    p.add_argument("--support-slice", required=True, type=int, nargs="+",
                   help="index of the labelled slice(s) along --axis (k-shot: several)")
    p.add_argument("--axis", type=int, default=0, choices=(0, 1, 2),
                   help="array axis of the slices, in (k, j, i) order: 0 = k (default), 1 = j, 2 = i")
    p.add_argument("--label", action="append", default=None, metavar="L",
                   help="label value of the structure in --support-mask; repeat it for several structures in one run "
                        "(one segment each, encoder passes shared), or 'all' for every label drawn on the support "
                        "slice(s)")
    add_backend_arguments(p)
    p.add_argument("--sam2-size", default=None, choices=("tiny", "small", "base_plus", "large"),
                   help="SAM 2.1 size for the synpo and sam2 backends (default: large, the paper's)")
    p.add_argument("--dino-model", default=None,
                   help="DINOv2 of the synpo backend: vits14, vitb14, vitl14, vitg14, each also -reg4, or sinder "
                        "(the paper's SINDER ViT-g/14) (default: vitl14-reg4)")
    p.add_argument("--sam2-checkpoint", default=None, help="local SAM 2.1 checkpoint (.pt) instead of the cached one")
    p.add_argument("--dino-checkpoint", default=None,
                   help="local DINOv2 checkpoint, timm or original DINOv2 format (e.g. SINDER's sinder.pth)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="GPU autocast precision (default: auto = bf16 where the GPU supports it, else fp32)")
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
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="the configuration to start from (default: the backend's: lite for LiteMedSAM, which runs "
                        "the registration mode; paper for SAM 2.1): --preset paper runs the paper's method, "
                        "slice by slice")
    p.add_argument("--mode", choices=MODE_CHOICES, default=None,
                   help="how slices are segmented (default: the preset's). registration: the labelled mask carried "
                        "slice to slice by deformable registration, SynPo's similarity deciding where the "
                        "structure ends (the lite default); slices: each slice from the support (the paper); "
                        "propagate: also from the previous slice's result; video / hybrid: SAM2's video predictor "
                        "(sam2/synpo backends)")
    p.add_argument("--no-auto-stop", action="store_true",
                   help="paint every slice in the range, even past the structure's end")
    p.add_argument("--largest-component", action="store_true",
                   help="keep only the 3D part connected to the support (or the largest)")
    p.add_argument("--confidence-png", help="write a plot of per-slice confidence with flagged slices")
    p.add_argument("--batch-size", type=int, default=None,
                   help="query slices per encoder batch (default: 1 on CPU, 16 on a GPU; the GPU batch shrinks "
                        "to the free memory and halves on out-of-memory)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    fix = p.add_argument_group("run again after corrections",
                               "fix slices of a result's --labelmap, then run again with the same options: every "
                               "corrected slice is one more labelled slice, only the slices between a correction and "
                               "its neighbouring labelled slices are recomputed, corrected slices never change")
    fix.add_argument("--corrected", metavar="LABELMAP",
                     help="the last result's labelmap with your corrections (on the query's grid)")
    fix.add_argument("--corrected-slices", type=int, nargs="+", default=(), metavar="N",
                     help="the slices you corrected, this round and earlier ones")
    fix.add_argument("--previous", metavar="LABELMAP",
                     help="the result before your corrections: the slices that differ from --corrected are this "
                          "round's (the others of --corrected-slices stay labelled slices, nothing more)")


def run(args: argparse.Namespace) -> int:
    bar = ProgressBar(enabled=not args.quiet)
    try:
        outcome = segment_files(SegmentRequest.from_args(args), progress=bar,
                                on_written=lambda paths: setattr(args, "written", paths))
    finally:
        bar.close()
    for line in outcome.report_lines():
        print(line)
    return 0


__all__ = ["HELP", "add_arguments", "run"]
