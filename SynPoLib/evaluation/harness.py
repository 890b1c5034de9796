"""One evaluation end to end: run (resumably), then write CSVs, plots and the summary."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence

from ..backends.base import Backend
from ..backends.cache import CachedBackend
from ..io import atomic_path
from ..preprocess import window_bounds
from ..config import SynPoConfig
from . import plots
from .corrections import CorrectionProtocol, collect_curves, curve_plot, curve_section, run_correction_cases
from .datasets import Subject
from .methods import SYNPO, Method
from .protocols import QC, Case
from .report import MAIN_METHODS, QC_METHODS, SLICE_COLUMNS, VOLUME_COLUMNS, Results, collect, markdown_summary, write_csv
from .runner import RunStats, VolumeCache, pending_slices, run_cases
from .store import ResultStore


#: methods drawn on the distance plot (all of them would be unreadable)
DISTANCE_METHODS = (SYNPO, "ablation-4-nrm", "persam-points", "persam-box", "copy", "registration")
#: methods whose worst slices are drawn
MONTAGE_METHODS = (SYNPO, "registration")


@dataclass
class Outputs:
    """Where a run wrote what."""

    slices_csv: Path
    volumes_csv: Path
    summary: Path
    plots: Dict[str, Path] = field(default_factory=dict)


class _Bar:
    """tqdm progress bar fed by the runner (or nothing when quiet)."""

    def __init__(self, total: int, enabled: bool) -> None:
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="slice", desc="synpo eval", file=sys.stdout, dynamic_ncols=True)

    def __call__(self, n: int, label: str) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix_str(label, refresh=False)

    def write(self, message: str, fallback: Callable[[str], None]) -> None:
        """A log line that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stdout)
        else:
            fallback(message)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def evaluate(cases: Sequence[Case], methods: Sequence[Method], backend: Backend, subjects: Mapping[str, Subject],
             *, out: Path, work: Path, base_config: SynPoConfig, title: str, command: str, data: str,
             summary: Optional[Path] = None, notes: Optional[str] = None, preamble: Optional[str] = None,
             montage_methods: Sequence[str] = MONTAGE_METHODS, montage_count: int = 12, cache_size: int = 160,
             progress: bool = True, log: Callable[[str], None] = lambda msg: None,
             correction_cases: Sequence[Case] = (), correction_methods: Sequence[Method] = (),
             correction_protocol: CorrectionProtocol = CorrectionProtocol()) -> "tuple[Results, RunStats, Outputs]":
    """Run every (case, method) not yet in ``work``'s store, then write the reports to ``out``.

    ``correction_cases`` x ``correction_methods``: the correction protocol
    (:mod:`SynPoLib.evaluation.corrections`), stored and reported alongside.
    """
    out, work = Path(out), Path(work)
    out.mkdir(parents=True, exist_ok=True)
    store = ResultStore(work)
    cached = backend if isinstance(backend, CachedBackend) else CachedBackend(backend, max_items=cache_size)
    bar = _Bar(pending_slices(cases, methods, cached, store), progress)
    try:
        stats = run_cases(cases, methods, cached, subjects, store, progress=bar,
                          log=lambda message: bar.write(message, log))
        if correction_cases and correction_methods:
            started = time.perf_counter()
            computed, skipped = run_correction_cases(correction_cases, correction_methods, cached, subjects, store,
                                                     correction_protocol, progress=bar,
                                                     log=lambda message: bar.write(message, log))
            stats.computed += computed
            stats.skipped += skipped
            stats.seconds += time.perf_counter() - started
    finally:
        bar.close()
    results = collect(cases, methods, cached, store)
    curves = collect_curves(correction_cases, correction_methods, cached, store, correction_protocol) \
        if correction_cases else ([], [])
    outputs = write_reports(results, cases, store, subjects, out=out, base_config=base_config, title=title,
                            command=command, backend=cached.describe(), data=data, summary=summary, notes=notes,
                            preamble=preamble, montage_methods=montage_methods, montage_count=montage_count,
                            curves=curves, correction_protocol=correction_protocol)
    return results, stats, outputs


def write_reports(results: Results, cases: Sequence[Case], store: ResultStore, subjects: Mapping[str, Subject], *,
                  out: Path, base_config: SynPoConfig, title: str, command: str, backend: str, data: str,
                  summary: Optional[Path] = None, notes: Optional[str] = None, preamble: Optional[str] = None,
                  montage_methods: Sequence[str] = MONTAGE_METHODS, montage_count: int = 12,
                  curves=([], []), correction_protocol: CorrectionProtocol = CorrectionProtocol()) -> Outputs:
    """CSV of every slice and volume, the plots, and the Markdown summary (with the
    correction curve when ``curves``, :func:`~.corrections.collect_curves`' answer, has rows)."""
    out = Path(out)
    summary = Path(summary) if summary else out / "summary.md"
    slices_csv = write_csv(out / "slices.csv", results.slices, SLICE_COLUMNS)
    volumes_csv = write_csv(out / "volumes.csv", results.volumes, VOLUME_COLUMNS)
    names = results.method_names()
    main = [m for m in MAIN_METHODS if m in names]
    figures: Dict[str, Path] = {}
    volumes = VolumeCache(subjects, max_items=2)
    for protocol in results.protocols():
        # The QC protocol exists to compare auto-stop on and off; its queried slices past
        # the structure score Dice 1 only when left empty, so its plots show those methods.
        per_structure = [m for m in QC_METHODS if m in names] if protocol == QC else main
        by_distance = [m for m in (QC_METHODS if protocol == QC else DISTANCE_METHODS) if m in names]
        figures[f"{protocol}: Dice per structure"] = plots.dice_per_structure(
            results, protocol, per_structure, out / f"dice_{protocol}.png")
        figures[f"{protocol}: Dice against distance from the support slice"] = plots.dice_against_distance(
            results, protocol, by_distance, out / f"distance_{protocol}.png")
        for method in montage_methods:
            if method not in names or method in results.unavailable:
                continue
            path = plots.worst_montage(results, protocol, method, cases, store, volumes.get,
                                       out / f"worst_{protocol}_{method}.png", count=montage_count,
                                       window_of=lambda image: window_bounds(image.array, base_config.window))
            if path is not None:
                figures[f"{protocol}: the {montage_count} worst slices of {method}"] = path
    sweep = plots.alpha_sweep(results, results.methods, out / "alpha_sweep.png")
    if sweep is not None:
        figures["negative interval sweep"] = sweep
    curve_rows, per_case = curves
    sections = curve_section(curve_rows, correction_protocol)
    if curve_rows:
        write_csv(out / "corrections.csv", per_case, list(per_case[0]))
        figures["the correction curve: mean Dice against corrected slices"] = curve_plot(
            curve_rows, out / "corrections.png", correction_protocol)
    text = markdown_summary(results, title=title, command=command, backend=backend, data=data, plots=figures,
                            base=summary.parent, notes=notes, preamble=preamble, sections=sections)
    summary.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(summary) as tmp:
        tmp.write_text(text)
    return Outputs(slices_csv=slices_csv, volumes_csv=volumes_csv, summary=summary, plots=figures)


__all__ = ["Outputs", "evaluate", "write_reports"]
