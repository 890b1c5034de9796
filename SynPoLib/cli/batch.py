"""``synpo batch``: every case of a manifest from one labelled example, resumable.

The work is :func:`SynPoLib.files.run_batch`; the options that every case shares are
``synpo segment``'s, by the same names. Ctrl-C stops at the next slice of each running
case with nothing half-written (exit 130); the same command resumes.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import Cancelled, Terminated
from ..files import BatchRequest, run_batch
from ..files.segment import SegmentRequest
from .common import add_backend_arguments, add_method_arguments, add_model_arguments

HELP = "segment every case of a manifest (CSV or JSON) from shared or per-case support, resumably"

#: options of this command that are not SegmentRequest fields
BATCH_OPTIONS = ("manifest", "out", "engine", "workers", "address", "cpus_per_worker", "gpus_per_worker", "retries",
                 "strict", "labelmaps", "quiet")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("manifest", help="CSV or JSON: one case per row (query, support, support_mask, support_slice, "
                                    "label, axis, range, reference, reference_label, output)")
    p.add_argument("--out", required=True, help="output folder: cases/<name>/, summary.csv, report.md")
    shared = p.add_argument_group("shared support (a manifest row's own value wins)")
    shared.add_argument("--support", help="volume the labelled slice lies in (default: each case's query)")
    shared.add_argument("--support-mask", help="labelmap on the support volume's grid")
    shared.add_argument("--support-slice", type=int, nargs="+", help="labelled slice(s) along --axis")
    shared.add_argument("--axis", type=int, choices=(0, 1, 2), help="array axis of the slices (default: 0)")
    shared.add_argument("--label", type=int, help="label value of the structure in the support mask")
    shared.add_argument("--range", dest="slice_range", help="query slices START:STOP, half-open (default: all)")
    shared.add_argument("--reference-label", type=int, help="label in each case's reference (default: --label)")
    model = p.add_argument_group("model and method (as for synpo segment)")
    add_backend_arguments(model)
    add_model_arguments(model)
    add_method_arguments(model)
    model.add_argument("--name", default=None, help="segment name in each result (default: SynPo or the label)")
    model.add_argument("--color", type=float, nargs=3, default=None, metavar=("R", "G", "B"),
                       help="segment colour, 0..1 each")
    run = p.add_argument_group("where the cases run")
    run.add_argument("--engine", choices=("local", "ray"), default="local",
                     help="local: this machine (default); ray: Ray actors, here or on --address")
    run.add_argument("--workers", type=int, default=None,
                     help="local: worker processes (default 1: in this process); ray: actors (default: one per "
                          "GPU, or one per --cpus-per-worker cores)")
    run.add_argument("--address", default=None,
                     help="ray: an existing cluster (auto, ray://HEAD:10001); default: start Ray on this machine")
    run.add_argument("--cpus-per-worker", type=float, default=None,
                     help="CPU cores (threads) per worker (default: local, the cores shared out; ray, 1)")
    run.add_argument("--gpus-per-worker", type=float, default=None,
                     help="ray: GPUs per actor, 0.5 puts two on a GPU (default: 1 when the cluster has GPUs)")
    run.add_argument("--retries", type=int, default=2,
                     help="times a case is sent again when its worker dies under it (default: 2)")
    p.add_argument("--strict", action="store_true",
                   help="refuse to start when any row is invalid (default: an invalid row fails alone)")
    p.add_argument("--labelmaps", action="store_true", help="also write each mask as <name>.labelmap.nii.gz")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def request_from_args(args: argparse.Namespace) -> BatchRequest:
    fields = {f for f in SegmentRequest.__dataclass_fields__}
    shared = {k: v for k, v in vars(args).items() if k in fields and k not in BATCH_OPTIONS
              and v is not None and v != [] and v is not False}
    return BatchRequest(manifest=args.manifest, out=args.out, shared=shared, engine=args.engine,
                        workers=args.workers, address=args.address, cpus_per_worker=args.cpus_per_worker,
                        gpus_per_worker=args.gpus_per_worker, retries=args.retries, strict=args.strict,
                        labelmaps=args.labelmaps)


class BatchBar:
    """Cases done / left and time left on stdout (tqdm)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.bar = None

    def __call__(self, event) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, file=sys.stdout, unit="case", desc="SynPo batch", leave=True,
                            dynamic_ncols=True)
        if event.record is not None:
            self.bar.update(1)
        self.bar.set_postfix(failed=event.failed, skipped=event.skipped, running=len(event.running))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run(args: argparse.Namespace) -> int:
    from . import EXIT_INTERRUPTED, EXIT_TERMINATED

    bar = BatchBar(enabled=not args.quiet)
    try:
        outcome = run_batch(request_from_args(args), progress=bar)
    except (KeyboardInterrupt, Cancelled) as exc:
        bar.close()
        why = "terminated" if isinstance(exc, Terminated) else "stopped"
        print(f"synpo: batch {why}; finished cases are kept in {args.out} and the same command resumes",
              file=sys.stderr)
        return EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED
    finally:
        bar.close()
    for line in outcome.report_lines():
        print(line)
    return 1 if outcome.failed else 0


__all__ = ["HELP", "add_arguments", "request_from_args", "run"]
