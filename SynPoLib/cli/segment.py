"""``synpo segment``: a structure in a volume from labelled support slice(s), to files.

The options are :class:`SynPoLib.files.SegmentRequest`'s fields, by name; the work is
:func:`SynPoLib.files.segment_files`.
"""

from __future__ import annotations

import argparse

from ..files import SegmentRequest, segment_files
from .common import ProgressBar, add_backend_arguments, add_method_arguments, add_model_arguments

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
    add_model_arguments(p)
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
    add_method_arguments(p)
    p.add_argument("--confidence-png", help="write a plot of per-slice confidence with flagged slices")
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
