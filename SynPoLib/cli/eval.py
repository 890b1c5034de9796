"""``synpo eval``: measure SynPo and its baselines the way the literature does.

::

    synpo eval colin  [--structures ...] [--protocols fsmis within]      # Colin27 + AAL (the scoreboard)
    synpo eval fsmis  --dataset synapse|chaos --data DIR [--folds 0 1 2 3 4]
    synpo eval pair   --support IMG --support-labels LAB --label N --query IMG LAB [--query IMG LAB ...]

Every form writes ``slices.csv`` (one row per slice and method), ``volumes.csv`` (one
row per query volume, structure and method), a Markdown summary and PNG plots to
``--out``, and keeps its raw results in ``--work`` (default ``<out>/work``): a re-run
with the same arguments skips every finished (case, configuration) and only rewrites
the reports.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Dict, Optional

from ..config import WindowConfig
from ..errors import InputError, ProtocolError
from ..evaluation.datasets import (DATASETS, SCOREBOARD_STRUCTURES, Subject, aal_labels, colin_subject, find_scans,
                                   fsmis_cases, resolve_structures)
from ..evaluation.harness import evaluate
from ..evaluation.methods import DEFAULT_ALPHAS, select_methods, standard_methods
from ..evaluation.corrections import CORRECTION, CORRECTION_METHODS, CorrectionProtocol, correction_case
from ..evaluation.protocols import FSMIS, QC, WITHIN, fsmis_case, pairing_case, qc_case, within_volume_case
from ..evaluation.report import headline
from ..presets import build_config
from ..files.inputs import open_backend

HELP = "measure SynPo and its baselines (FSMIS protocol, within-volume, free pairing)"

COLIN_PREAMBLE = """\
SynPo and its baselines on real labelled data: the Colin27 T1 MRI with the AAL atlas
(Debian `mricron-data`), axial slices, the LiteMedSAM backend (the one SAM-family model
with real weights available offline). Every method runs on the same backend and the
same encoder passes; no parameter is tuned per structure.

Protocol 1 is the FSMIS 1-shot protocol inside the one volume: the structure's slices
are cut in three equal chunks, the slices at 1/6, 1/2 and 5/6 of the list are the
supports of their chunk, every other structure slice is scored. Protocol 2 labels the
middle structure slice only and scores all the others. Dice is pooled over the scored
slices; HD95 and ASSD are in mm on the scored slices.

Methods: `registration` = the lite preset, SynPo's default mode since issue 11: the
labelled slice's mask carried slice by slice by deformable registration (SimpleITK
Demons) and refined by a random walker (scikit-image), chains from neighbouring
supports blended; `registration-alone` / `registration+fusion` = without the random
walker / with LiteMedSAM's box mask averaged into the prior (weight 0.25);
`synpo` = the paper's mode (every slice on its own) with the lite preset's prompts;
`ablation-*` = the paper's Table 2 rows
(`ablation-2-dino` needs a DINOv2 backbone, absent from LiteMedSAM); `persam-points` =
one positive at the similarity maximum and one negative at its minimum as point prompts
(PerSAM-style); `persam-box` = the same maximum through the lite prompt (the support-sized
box); `copy` = the support slice's mask copied; `alpha=a` = the negative interval sweep
(beta = alpha - 1.5), prompted with box + negatives because the lite preset's box carries
no points; `propagate` = the propagate mode (each slice also prompted with the previous
slice's result). Every method of protocols 1 and 2 segments every structure
slice (auto-stop off), as the paper does. The quality-control protocol queries 10 slices
past each end of the structure and counts the slices painted where it is absent, with and
without auto-stop (`registration+auto-stop`: the registration mode stopping where SynPo's
prototype cosine falls). See `SynPoLib/evaluation/methods.py`."""


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--methods", nargs="+", default=["all"],
                   help="methods to run: all (default), alpha (the sweep), or names: registration, registration-alone, "
                        "registration+fusion, synpo, propagate, ablation-1-sam, ablation-2-dino, ablation-3-psm, "
                        "ablation-4-nrm, persam-points, persam-box, copy, alpha=A")
    p.add_argument("--alphas", type=float, nargs="+", default=list(DEFAULT_ALPHAS),
                   help=f"alpha values of the sweep (default: {' '.join(f'{a:g}' for a in DEFAULT_ALPHAS)})")
    p.add_argument("--backend", default="lite", help="model family (default: lite)")
    p.add_argument("--device", default=None, help="cpu, cuda, mps (default: automatic)")
    p.add_argument("--config", help="JSON file of configuration sections applied to the backend preset")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one parameter of the base configuration (repeatable)")
    p.add_argument("--out", required=True, help="folder for slices.csv, volumes.csv, the summary and the plots")
    p.add_argument("--work", help="folder of the resumable raw results (default: OUT/work)")
    p.add_argument("--summary", help="path of the Markdown summary (default: OUT/summary.md)")
    p.add_argument("--notes", help="Markdown file appended to the summary (e.g. an analysis of the results)")
    p.add_argument("--title", help="title of the summary")
    p.add_argument("--montage", type=int, default=12, help="worst slices shown per protocol (default: 12)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for torch and BLAS (default: the libraries' own); 1 is fastest on a busy machine")
    p.add_argument("--cache-size", type=int, default=160, help="encoded slices kept in memory (default: 160)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="source", metavar="SOURCE", required=True)
    colin = sub.add_parser("colin", help="Colin27 + AAL (the scoreboard's data)",
                           description="Evaluate on Colin27 T1 + the AAL atlas, within the one volume.")
    colin.add_argument("--structures", nargs="+",
                       help=f"AAL names (default: the scoreboard's {len(SCOREBOARD_STRUCTURES)})")
    colin.add_argument("--protocols", nargs="+", choices=(FSMIS, WITHIN, QC, CORRECTION),
                       default=[FSMIS, WITHIN, QC, CORRECTION],
                       help="fsmis, within, qc, and correction: a simulated user corrects the slice the review list "
                            "puts first and runs again (Dice after 0, 1, 2, 3, 5 corrections per mode)")
    colin.add_argument("--max-corrections", type=int, default=CorrectionProtocol().max_corrections,
                       help="corrections the simulated user makes at most (correction protocol; default: "
                            f"{CorrectionProtocol().max_corrections})")
    colin.add_argument("--qc-margin", type=int, default=10,
                       help="slices queried past each end of the structure in the qc protocol (default: 10)")
    colin.add_argument("--axis", type=int, choices=(0, 1, 2), default=0, help="slice axis (default: 0, axial)")
    _common(colin)

    fsmis = sub.add_parser("fsmis", help="the FSMIS 1-shot protocol on Synapse-CT or CHAOS-T2 (5 folds)",
                           description="Reproduce the FSMIS 1-shot protocol (SSL-ALPNet / ADNet) on the "
                                       "published preprocessed data.")
    fsmis.add_argument("--dataset", required=True, choices=sorted(DATASETS))
    fsmis.add_argument("--data", required=True,
                       help="folder holding image_<id>.nii.gz / label_<id>.nii.gz (or its parent with the "
                            "published sub-folder: sabs_CT_normalized, chaos_MR_T2_normalized)")
    fsmis.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    fsmis.add_argument("--structures", nargs="+", help="organs (default: all four)")
    _common(fsmis)

    pair = sub.add_parser("pair", help="any support (volume, labels, label) against labelled query volumes",
                          description="Free pairing: one support against any labelled query list.")
    pair.add_argument("--support", required=True, help="support volume")
    pair.add_argument("--support-labels", required=True, help="label map on the support volume's grid")
    pair.add_argument("--label", type=int, required=True, help="label value of the structure in the support")
    pair.add_argument("--support-slices", type=int, nargs="+", help="labelled support slices (default: the middle one)")
    pair.add_argument("--query", nargs=2, action="append", required=True, metavar=("IMAGE", "LABELS"),
                      help="a labelled query volume (repeatable)")
    pair.add_argument("--query-label", type=int, help="label value in the query label maps (default: --label)")
    pair.add_argument("--structure", default=None, help="name of the structure in the reports")
    pair.add_argument("--axis", type=int, choices=(0, 1, 2), default=0)
    _common(pair)


def _limit_threads(n: Optional[int]) -> None:
    if n is None:
        return
    if n < 1:
        raise InputError("--threads must be >= 1")
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)


def _colin_cases(args, subject: Subject):
    structures = resolve_structures(args.structures or list(SCOREBOARD_STRUCTURES), aal_labels())
    _, labels = subject.load()
    cases = []
    tags = (("dataset", "Colin27 + AAL"),)
    for name, label in structures.items():  # structure-major: a structure's encodings serve both protocols
        for protocol in args.protocols:
            try:
                if protocol == CORRECTION:
                    continue  # its own cases: colin_correction_cases
                if protocol == FSMIS:
                    cases.append(fsmis_case(name, subject.id, labels, subject.id, labels, label=label,
                                            axis=args.axis, tags=tags))
                elif protocol == QC:
                    cases.append(qc_case(name, subject.id, labels, label=label, axis=args.axis,
                                         margin=args.qc_margin, tags=tags))
                else:
                    cases.append(within_volume_case(name, subject.id, labels, label=label, axis=args.axis,
                                                    tags=tags))
            except ProtocolError as exc:
                raise InputError(str(exc)) from None
    return cases


def _colin_correction_cases(args, subject: Subject):
    if CORRECTION not in args.protocols:
        return []
    structures = resolve_structures(args.structures or list(SCOREBOARD_STRUCTURES), aal_labels())
    _, labels = subject.load()
    try:
        return [correction_case(name, subject.id, labels, label=label, axis=args.axis,
                                tags=(("dataset", "Colin27 + AAL"),)) for name, label in structures.items()]
    except ProtocolError as exc:
        raise InputError(str(exc)) from None


def run(args: argparse.Namespace) -> int:
    _limit_threads(args.threads)
    backend = open_backend(args.backend, args.device)
    base = build_config(backend.preset, args.config, args.set)
    subjects: Dict[str, Subject] = {}
    if args.source == "colin":
        subject = colin_subject()
        subjects[subject.id] = subject
        cases = _colin_cases(args, subject)
        correction_cases = _colin_correction_cases(args, subject)
        data = f"Colin27 T1 ({subject.image}) + AAL ({subject.labels}), axis {args.axis}"
        title = args.title or "SynPo scoreboard: Colin27 + AAL"
    elif args.source == "fsmis":
        dataset = DATASETS[args.dataset]
        if dataset.window is not None and base.window.window is None:
            base = base.replace(window=WindowConfig(window=dataset.window))
        scans = find_scans(Path(args.data), dataset)
        subjects = {s.id: s for s in scans}
        structures = resolve_structures(args.structures, dataset.structures)
        try:
            cases = fsmis_cases(dataset, scans, args.folds, structures, lambda s: s.load()[1])
        except ProtocolError as exc:
            raise InputError(str(exc)) from None
        data = f"{dataset.title} ({args.data}), folds {' '.join(map(str, args.folds))}"
        title = args.title or f"SynPo on {dataset.title}: FSMIS 1-shot"
    else:
        support = Subject(id=str(Path(args.support)), image=Path(args.support), labels=Path(args.support_labels))
        subjects[support.id] = support
        _, support_labels = support.load()
        name = args.structure or f"label {args.label}"
        cases = []
        for image, labels in args.query:
            query = support if (Path(image) == Path(args.support) and Path(labels) == Path(args.support_labels)) \
                else Subject(id=str(Path(image)), image=Path(image), labels=Path(labels))
            subjects[query.id] = query
            try:
                cases.append(pairing_case(name, support.id, support_labels, query.id, query.load()[1],
                                          label=args.label, query_label=args.query_label,
                                          support_slices=args.support_slices, axis=args.axis))
            except ProtocolError as exc:
                raise InputError(str(exc)) from None
        data = f"support {args.support} (label {args.label}); queries " + ", ".join(i for i, _ in args.query)
        title = args.title or f"SynPo: {name}, free pairing"

    try:
        methods = select_methods(standard_methods(base, args.alphas), args.methods)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if args.source != "colin":
        correction_cases = []
    correction_methods = [m for name in CORRECTION_METHODS for m in methods if m.name == name]
    max_corrections = getattr(args, "max_corrections", CorrectionProtocol().max_corrections)
    try:
        correction_protocol = CorrectionProtocol(max_corrections=max_corrections)
    except ValueError as exc:
        raise InputError(f"--max-corrections {max_corrections}: {exc}") from None
    notes = None
    if args.notes:
        path = Path(args.notes)
        if not path.is_file():
            raise InputError(f"notes file not found: {path}")
        notes = path.read_text()
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    command = "synpo " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["eval"] else "synpo eval " + args.source
    results, stats, outputs = evaluate(
        cases, methods, backend, subjects, out=out, work=work, base_config=base, title=title, command=command,
        data=data, summary=Path(args.summary) if args.summary else None, notes=notes,
        preamble=COLIN_PREAMBLE if args.source == "colin" else None, montage_count=args.montage,
        cache_size=args.cache_size, progress=not args.quiet, log=(lambda message: None) if args.quiet else print,
        correction_cases=correction_cases, correction_methods=correction_methods,
        correction_protocol=correction_protocol)
    print(f"{len(cases)} cases x {len(methods)} methods: computed {stats.computed} episodes in "
          f"{stats.seconds / 60:.1f} min, {stats.skipped} already stored or shared"
          + (f"; n/a: {', '.join(stats.unavailable)}" if stats.unavailable else ""))
    for line in headline(results):
        print(line)
    print(f"wrote {outputs.summary}, {outputs.slices_csv}, {outputs.volumes_csv} and {len(outputs.plots)} plots")
    return 0

