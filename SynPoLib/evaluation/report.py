"""From stored results to tables: CSV of every slice and volume, and a Markdown summary.

Aggregation follows the FSMIS literature: a volume's Dice is pooled over its scored
slices; a structure's (class's) Dice is the mean over its query volumes (std over them
alongside); a method's Dice is the mean over structures. With several folds the spread
shown next to a method's mean is the std over folds of the fold's class-mean (the
papers' "± std over 5 folds"); with one fold it is the std over structures.
"""

from __future__ import annotations

import csv
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ..backends.base import Backend
from ..io import atomic_path
from .methods import COPY, SYNPO, Method
from .protocols import QC, Case
from .store import ResultStore

#: the registration mode's row (SynPoLib.volume.registration)
REGISTRATION = "registration"
#: methods of the main table, in order (those absent from a run are left out)
MAIN_METHODS = ("synpo", "ablation-1-sam", "ablation-2-dino", "ablation-3-psm", "ablation-4-nrm",
                "persam-points", "persam-box", COPY, "propagate", REGISTRATION)
#: methods of the quality-control table, in order
QC_METHODS = ("synpo", "synpo+auto-stop", "propagate", "propagate+auto-stop", REGISTRATION,
              "registration+auto-stop")
#: the registration mode's ablation, in order: each row adds one part
REGISTRATION_METHODS = ("registration-alone", REGISTRATION, "registration+fusion")
#: methods of the left / right table
HEMISPHERE_METHODS = ("synpo", "persam-box", COPY, "propagate") + REGISTRATION_METHODS
ABLATION_METHODS = ("ablation-1-sam", "ablation-2-dino", "ablation-3-psm", "ablation-4-nrm")
BASELINES = ("persam-points", "persam-box", COPY)
#: an encode share below this is a cache hit (hashing the image), not an encoder pass
ENCODE_HIT_SECONDS = 0.05

SLICE_COLUMNS = ("protocol", "dataset", "fold", "structure", "support_id", "query_id", "method", "slice",
                 "support_slice", "offset", "offset_mm", "relative_offset", "dice", "hd95_mm", "assd_mm",
                 "pred_pixels", "ref_pixels", "score", "iou", "n_positive", "n_negative", "seconds", "encode_seconds",
                 "notes")
VOLUME_COLUMNS = ("protocol", "dataset", "fold", "structure", "support_id", "query_id", "method", "fingerprint",
                  "n_slices", "dice", "hd95_mm", "assd_mm", "pred_voxels", "ref_voxels", "seconds")


@dataclass
class Results:
    """Every row of a run, joined with its cases and methods."""

    slices: List[dict]
    volumes: List[dict]
    methods: List[Method]
    unavailable: Dict[str, str]
    #: (case key, method name) pairs the store does not hold yet
    missing: List[Tuple[str, str]] = field(default_factory=list)
    #: compute seconds of the distinct stored episodes of these cases
    compute_seconds: float = 0.0

    def method_names(self) -> List[str]:
        return [m.name for m in self.methods]

    def protocols(self) -> List[str]:
        return list(dict.fromkeys(r["protocol"] for r in self.volumes))

    def structures(self, protocol: str) -> List[str]:
        return list(dict.fromkeys(r["structure"] for r in self.volumes if r["protocol"] == protocol))


def collect(cases: Sequence[Case], methods: Sequence[Method], backend: Backend, store: ResultStore) -> Results:
    """Rows for every (case, method) the store holds; n/a methods recorded with their reason."""
    unavailable = {m.name: m.unavailable(backend) for m in methods if m.unavailable(backend)}
    slices, volumes, missing = [], [], []
    seconds, counted = 0.0, set()
    for case in cases:
        dataset = dict(case.tags).get("dataset", "")
        base = {"protocol": case.protocol, "dataset": dataset, "fold": case.fold, "structure": case.structure,
                "support_id": case.support_id, "query_id": case.query_id}
        for method in methods:
            if method.name in unavailable or not method.runs_on(case.protocol):
                continue
            fingerprint = method.fingerprint(backend)
            entry = store.get(case.key, fingerprint)
            if entry is None:
                missing.append((case.key, method.name))
                continue
            if (case.key, fingerprint) not in counted:
                counted.add((case.key, fingerprint))
                seconds += float(entry["seconds"])
            vol = entry["volume"]
            volumes.append({**base, "method": method.name, "fingerprint": fingerprint, "n_slices": vol["n_slices"],
                            "dice": vol["dice"], "hd95_mm": vol["hd95_mm"], "assd_mm": vol["assd_mm"],
                            "pred_voxels": vol["pred_voxels"], "ref_voxels": vol["ref_voxels"],
                            "seconds": entry["seconds"]})
            for row in entry["slices"]:
                labels = row.get("labels") or []
                slices.append({**base, "method": method.name, "slice": row["slice"],
                               "support_slice": row["support_slice"], "offset": row["offset"],
                               "offset_mm": row["offset_mm"], "relative_offset": row["relative_offset"],
                               "dice": row["dice"], "hd95_mm": row["hd95_mm"], "assd_mm": row["assd_mm"],
                               "pred_pixels": row["pred_pixels"], "ref_pixels": row["ref_pixels"],
                               "score": row.get("score"), "iou": row.get("iou"),
                               "n_positive": sum(1 for v in labels if v == 1) if labels else None,
                               "n_negative": sum(1 for v in labels if v == 0) if labels else None,
                               "seconds": row.get("seconds"), "encode_seconds": row.get("encode_seconds"),
                               "notes": "; ".join(row.get("notes") or []),
                               "_entry": (case.key, fingerprint)})
    return Results(slices=slices, volumes=volumes, methods=list(methods), unavailable=unavailable,
                   missing=missing, compute_seconds=seconds)


# --------------------------------------------------------------------------- CSV

def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        if math.isnan(value):
            return "nan"
        return f"{value:.6f}"
    return str(value)


def write_csv(path: os.PathLike, rows: Iterable[dict], columns: Sequence[str]) -> Path:
    """Write ``rows`` (only ``columns``) atomically."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(row.get(c)) for c in columns])
    return Path(path)


#: columns that hold text even when it looks like a number (a hex fingerprint can read as 1e99)
TEXT_COLUMNS = frozenset({"protocol", "dataset", "structure", "support_id", "query_id", "method", "fingerprint",
                          "notes"})


def read_csv(path: os.PathLike) -> List[dict]:
    """Rows of a CSV written by :func:`write_csv`, numbers parsed back (text columns kept)."""
    def parse(column: str, text: str):
        if text == "":
            return None
        if column in TEXT_COLUMNS:
            return text
        try:
            return int(text)
        except ValueError:
            pass
        try:
            return float(text)
        except ValueError:
            return text

    with open(path, newline="") as handle:
        return [{k: parse(k, v) for k, v in row.items()} for row in csv.DictReader(handle)]


# --------------------------------------------------------------------------- aggregation

@dataclass(frozen=True)
class Aggregate:
    """A method's mean over structures and its spread, on one protocol."""

    mean: float
    spread: float
    spread_kind: str
    n_structures: int


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def structure_means(results: Results, protocol: str, method: str, metric: str = "dice") -> Dict[str, Tuple[float, float, int]]:
    """Per structure: (mean, std, n) of a metric over the query volumes."""
    values: Dict[str, List[float]] = defaultdict(list)
    for row in results.volumes:
        if row["protocol"] == protocol and row["method"] == method:
            values[row["structure"]].append(float(row[metric]))
    return {s: (_mean(v), float(np.std(v)), len(v)) for s, v in values.items()}


def aggregate(results: Results, protocol: str, method: str, metric: str = "dice") -> Optional[Aggregate]:
    """Mean over structures of the per-structure means, with the spread described above."""
    per_structure = structure_means(results, protocol, method, metric)
    if not per_structure:
        return None
    means = [m for m, _, _ in per_structure.values()]
    folds = sorted({r["fold"] for r in results.volumes if r["protocol"] == protocol and r["fold"] is not None})
    if len(folds) > 1:
        fold_means = []
        for fold in folds:
            values: Dict[str, List[float]] = defaultdict(list)
            for row in results.volumes:
                if row["protocol"] == protocol and row["method"] == method and row["fold"] == fold:
                    values[row["structure"]].append(float(row[metric]))
            fold_means.append(_mean([_mean(v) for v in values.values()]))
        return Aggregate(_mean(means), float(np.std(fold_means)), "std over folds", len(means))
    return Aggregate(_mean(means), float(np.std(means)), "std over structures", len(means))


def losses(results: Results, protocol: str, method: str = SYNPO,
           against: Sequence[str] = BASELINES) -> Dict[str, List[Tuple[str, float, float]]]:
    """Structures where ``method`` scores below each baseline: {baseline: [(structure, ours, theirs)]}."""
    ours = structure_means(results, protocol, method)
    out = {}
    for baseline in against:
        theirs = structure_means(results, protocol, baseline)
        out[baseline] = [(s, ours[s][0], theirs[s][0]) for s in ours if s in theirs and ours[s][0] < theirs[s][0]]
    return out


@dataclass(frozen=True)
class QCRow:
    """A method's quality control on the qc protocol, means over structures."""

    false_positive_slices: float  # painted slices where the structure is absent
    missed_slices: float  # structure slices left empty
    outside_slices: float  # queried slices where the structure is absent
    inside_slices: float  # queried structure slices
    dice_range: float  # pooled Dice over every queried slice
    dice_inside: float  # pooled Dice over the structure's slices only
    n_structures: int


def qc_summary(results: Results, method: str, protocol: str = QC) -> Optional[QCRow]:
    """False-positive and missed slices, and Dice, of ``method`` on the qc protocol."""
    per: Dict[str, List[dict]] = defaultdict(list)
    for row in results.slices:
        if row["protocol"] == protocol and row["method"] == method:
            per[row["structure"]].append(row)
    if not per:
        return None
    fp, missed, outside, inside, d_range, d_inside = [], [], [], [], [], []
    for rows in per.values():
        out_rows = [r for r in rows if not r["ref_pixels"]]
        in_rows = [r for r in rows if r["ref_pixels"]]
        fp.append(sum(1 for r in out_rows if r["pred_pixels"]))
        missed.append(sum(1 for r in in_rows if not r["pred_pixels"]))
        outside.append(len(out_rows))
        inside.append(len(in_rows))

        def pooled(subset):
            total = sum(r["pred_pixels"] + r["ref_pixels"] for r in subset)
            return sum(r["dice"] * (r["pred_pixels"] + r["ref_pixels"]) for r in subset) / total if total else 1.0

        d_range.append(pooled(rows))
        d_inside.append(pooled(in_rows))
    return QCRow(_mean(fp), _mean(missed), _mean(outside), _mean(inside), _mean(d_range), _mean(d_inside), len(per))


# --------------------------------------------------------------------------- Markdown

LEFT, RIGHT = "_L", "_R"


def won_against_copy(results: Results, protocol: str, method: str) -> Tuple[int, int]:
    """(structures where ``method`` is strictly above copy, structures)."""
    ours = structure_means(results, protocol, method)
    copy = structure_means(results, protocol, COPY)
    return sum(1 for s in ours if s in copy and ours[s][0] > copy[s][0]), len(ours)


def hemisphere_mean(results: Results, protocol: str, method: str, suffix: str) -> Optional[Tuple[float, int, int]]:
    """(mean Dice, structures above copy, structures) over the structures named ``*suffix``."""
    ours = structure_means(results, protocol, method)
    copy = structure_means(results, protocol, COPY)
    chosen = [s for s in ours if s.endswith(suffix)]
    if not chosen:
        return None
    won = sum(1 for s in chosen if s in copy and ours[s][0] > copy[s][0])
    return _mean([ours[s][0] for s in chosen]), won, len(chosen)


def shared_configurations(results: Results) -> List[List[str]]:
    """Groups of rows computed once because they are one configuration (same fingerprint)."""
    groups: Dict[str, List[str]] = defaultdict(list)
    for row in results.volumes:
        if row["method"] not in groups[row["fingerprint"]]:
            groups[row["fingerprint"]].append(row["method"])
    order = {m: i for i, m in enumerate(results.method_names())}
    return sorted((sorted(g, key=lambda m: order.get(m, 0)) for g in groups.values() if len(g) > 1),
                  key=lambda g: order.get(g[0], 0))


def _registration_sections(results: Results, names: Sequence[str]) -> List[str]:
    """The registration mode's ablation, the left / right split, the shared configurations."""
    out: List[str] = []
    protocols = [p for p in results.protocols() if p != QC]
    rows = [m for m in REGISTRATION_METHODS if m in names]
    if rows and protocols:
        out += ["## Registration mode: ablation", "",
                "Mean Dice over structures (structures above copy); each row adds one part.", "",
                "| row | " + " | ".join(protocols) + " |", "|---|" + "---|" * len(protocols)]
        for m in rows:
            method = next(x for x in results.methods if x.name == m)
            cells = []
            for protocol in protocols:
                agg = aggregate(results, protocol, m)
                won = won_against_copy(results, protocol, m) if COPY in names else None
                cells.append("-" if agg is None else f"{_fmt(agg.mean)}" + (f" ({won[0]}/{won[1]})" if won else ""))
            out.append(f"| {m}: {method.description} | " + " | ".join(cells) + " |")
        out += [""]
    shown = [m for m in HEMISPHERE_METHODS if m in names and m not in results.unavailable]
    if shown and protocols:
        header = [f"{p} {side}" for p in protocols for side in ("left", "right")]
        out += ["## Left and right hemispheres", "",
                "Mean Dice over the 8 left (`_L`) and the 8 right (`_R`) structures (structures above copy). "
                "The registration mode's parameters were chosen on the left 8 only "
                "(docs/registration-study.md): the right 8 are untouched by any choice.", "",
                "| method | " + " | ".join(header) + " |", "|---|" + "---|" * len(header)]
        for m in shown:
            cells = []
            for p in protocols:
                for suffix in (LEFT, RIGHT):
                    h = hemisphere_mean(results, p, m, suffix)
                    cells.append("-" if h is None else f"{_fmt(h[0])}" + ("" if m == COPY else f" ({h[1]}/{h[2]})"))
            out.append(f"| {m} | " + " | ".join(cells) + " |")
        out += [""]
    groups = shared_configurations(results)
    if groups:
        out += ["## Rows that share a configuration", "",
                "These rows are one configuration on this backend (the same fingerprint), computed once and "
                "reported under each name; their numbers are identical by construction:", ""]
        out += [f"- {' = '.join(f'`{m}`' for m in g)}" for g in groups] + [""]
    return out

def _fmt(value: float, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}f}"


def _offset(k: float) -> str:
    """mu + k sigma, written without a double sign."""
    if k == 0:
        return "mu"
    return f"mu {'+' if k > 0 else '-'} {abs(k):g} s"


def _qc_section(results: Results, names: Sequence[str]) -> List[str]:
    """The quality-control table: slices painted outside the structure, missed inside it."""
    rows = [(m, qc_summary(results, m)) for m in QC_METHODS if m in names]
    rows = [(m, r) for m, r in rows if r is not None]
    if not rows:
        return ["(no result)", ""]
    first = rows[0][1]
    out = [f"Each structure's middle slice supports every slice of a range reaching past both of its ends "
           f"(mean over {first.n_structures} structures: {first.inside_slices:.1f} queried slices hold it, "
           f"{first.outside_slices:.1f} do not):", "",
           "| method | false-positive slices (outside, painted) | missed slices (inside, empty) "
           "| Dice over the range | Dice over the structure's slices |", "|---|---|---|---|---|"]
    for name, row in rows:
        out.append(f"| {name} | {row.false_positive_slices:.1f} | {row.missed_slices:.1f} | "
                   f"{_fmt(row.dice_range)} | {_fmt(row.dice_inside)} |")
    stopping = [m for m in results.methods if m.name in names and m.config is not None
                and m.config.quality.auto_stop]
    if stopping:
        out += [""]
        for m in stopping:
            q = m.config.mode_quality()
            signal = ("the prototype cosine under the slice's mask (1.0 on the support)"
                      if m.config.propagation.mode.value == REGISTRATION else "the support's own confidence")
            out.append(f"- `{m.name}` (SynPoLib.volume.qc): {q.stop_after} consecutive slices below "
                       f"{q.stop_threshold:g} of {signal} end a direction; those slices are left empty and the "
                       "rest of the direction is not segmented.")
        out += [""]
    return out


PROTOCOL_TITLES = {
    "fsmis": "Protocol 1: FSMIS 1-shot (supports at 1/6, 1/2, 5/6; query thirds)",
    "within": "Protocol 2: within-volume propagation (middle slice supports all others)",
    "pair": "Protocol 3: free pairing",
    "qc": "Quality control: false-positive slices past the structure, with and without auto-stop",
}


def headline(results: Results) -> List[str]:
    """One line per protocol: SynPo vs the PerSAM-style baselines vs copy, and where SynPo loses."""
    lines = []
    names = results.method_names()
    for protocol in results.protocols():
        if protocol == QC:
            rows = [(m, qc_summary(results, m)) for m in QC_METHODS if m in names]
            rows = [(m, r) for m, r in rows if r is not None]
            if rows:
                lines.append(f"- **qc** (per structure, {rows[0][1].outside_slices:.0f} queried slices lie outside "
                             "it): " + " | ".join(f"{m} {r.false_positive_slices:.1f} false-positive / "
                                                  f"{r.missed_slices:.1f} missed slices, Dice {_fmt(r.dice_range)}"
                                                  for m, r in rows))
            continue
        parts = []
        for name, title in ((REGISTRATION, "registration mode"), (SYNPO, "SynPo slice by slice"),
                            ("persam-points", "PerSAM-style points"), ("persam-box", "PerSAM-style box"),
                            (COPY, "copy")):
            agg = aggregate(results, protocol, name) if name in names else None
            if agg is not None:
                parts.append(f"{title} {_fmt(agg.mean)}")
        if not parts:
            continue
        n = len(results.structures(protocol))
        lines.append(f"- **{protocol}** (mean Dice over {n} structures): " + " | ".join(parts))
        if REGISTRATION in names and COPY in names:
            lost = losses(results, protocol, REGISTRATION, (COPY,))[COPY]
            won, _ = won_against_copy(results, protocol, REGISTRATION)
            shown = ", ".join(f"{s} ({a:.3f} vs {b:.3f})" for s, a, b in lost) or "none"
            lines.append(f"  - registration mode above copy on {won}/{n}; below it on {len(lost)}/{n}: {shown}")
        if SYNPO in names:
            for baseline, lost in losses(results, protocol).items():
                if baseline in names and lost:
                    shown = ", ".join(f"{s} ({a:.3f} vs {b:.3f})" for s, a, b in lost)
                    lines.append(f"  - SynPo below {baseline} on {len(lost)}/{n}: {shown}")
    return lines


def markdown_summary(results: Results, *, title: str, command: str, backend: str, data: str,
                     plots: Dict[str, Path], base: Path, notes: Optional[str] = None,
                     preamble: Optional[str] = None, sections: Sequence[str] = ()) -> str:
    """The Markdown summary; plot links are written relative to ``base`` (the file's folder).
    ``sections``: more Markdown lines, placed before the plots (the correction curve)."""
    names = results.method_names()
    main = [m for m in MAIN_METHODS if m in names]
    alphas = [m for m in results.methods if m.name.startswith("alpha=")]
    out = [f"# {title}", ""]
    if preamble:
        out += [preamble.strip(), ""]
    out += [f"- Command: `{command}`", f"- Backend: {backend}", f"- Data: {data}",
            f"- Compute time (sum over the stored episodes, so unchanged by resumed runs): "
            f"{results.compute_seconds / 60:.1f} min for {len(results.volumes)} volume results and "
            f"{len(results.slices)} slice results", ""]
    if results.missing:
        out += [f"**Incomplete**: {len(results.missing)} (case, method) results are missing; re-run the command.", ""]
    out += ["## Headline", ""] + headline(results) + [""]
    for protocol in results.protocols():
        out += [f"## {PROTOCOL_TITLES.get(protocol, protocol)}", ""]
        if protocol == QC:
            out += _qc_section(results, names)
            continue
        header = ["structure"] + main
        out += ["Pooled Dice per structure (mean over query volumes):", "",
                "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        tables = {m: structure_means(results, protocol, m) for m in main}
        for structure in results.structures(protocol):
            cells = [structure]
            for m in main:
                if m in results.unavailable:
                    cells.append("n/a")
                else:
                    value = tables[m].get(structure)
                    cells.append(_fmt(value[0]) if value else "-")
            best = max((tables[m][structure][0] for m in main if structure in tables.get(m, {})), default=None)
            cells = [f"**{c}**" if best is not None and c == _fmt(best) and i > 0 else c
                     for i, c in enumerate(cells)]
            out.append("| " + " | ".join(cells) + " |")
        row = ["**mean**"]
        for m in main:
            agg = None if m in results.unavailable else aggregate(results, protocol, m)
            row.append("n/a" if m in results.unavailable else
                       (f"{_fmt(agg.mean)} ± {_fmt(agg.spread)}" if agg else "-"))
        out.append("| " + " | ".join(row) + " |")
        kinds = {aggregate(results, protocol, m).spread_kind for m in main
                 if m not in results.unavailable and aggregate(results, protocol, m)}
        out += ["", f"± is the {', '.join(sorted(kinds))}. Bold: best in the row.", ""]

        # Surface distances and time
        out += ["HD95 and ASSD (mm, mean over structures) and time:", "",
                "| method | Dice | HD95 mm | ASSD mm | s / slice |", "|---|---|---|---|---|"]
        for m in [x for x in names if x not in results.unavailable]:
            dice = aggregate(results, protocol, m)
            if dice is None:
                continue
            hd = aggregate(results, protocol, m, "hd95_mm")
            asd = aggregate(results, protocol, m, "assd_mm")
            times = [r["seconds"] for r in results.slices
                     if r["protocol"] == protocol and r["method"] == m and r["seconds"] is not None]
            per_slice = f"{np.mean(times):.2f}" if times else "0"
            out.append(f"| {m} | {_fmt(dice.mean)} | {_fmt(hd.mean, 1)} | {_fmt(asd.mean, 2)} | {per_slice} |")
        encodes = [r["encode_seconds"] for r in results.slices
                   if r["protocol"] == protocol and (r["encode_seconds"] or 0) >= ENCODE_HIT_SECONDS]
        out += ["", "s / slice is the method's own work (decoder + SynPo's modules); the encoder pass is shared"
                + (f": {len(encodes)} slices encoded in this protocol, {np.mean(encodes):.2f} s each." if encodes
                   else " (every slice was already encoded)."), ""]

    out += _registration_sections(results, names)
    abl = [m for m in ABLATION_METHODS if m in names]
    if abl:
        out += ["## Ablation (paper Table 2 rows)", "", "| row | " + " | ".join(results.protocols()) + " |",
                "|---|" + "---|" * len(results.protocols())]
        for m in abl:
            method = next(x for x in results.methods if x.name == m)
            cells = []
            for protocol in results.protocols():
                if m in results.unavailable:
                    cells.append(results.unavailable[m])
                    continue
                agg = aggregate(results, protocol, m)
                cells.append(_fmt(agg.mean) if agg else "-")
            out.append(f"| {m}: {method.description} | " + " | ".join(cells) + " |")
        out += [""]
    if alphas:
        out += ["## Negative interval sweep (paper Fig. 4: beta = alpha - 1.5)", "",
                "| alpha | interval | " + " | ".join(results.protocols()) + " |",
                "|---|---|" + "---|" * len(results.protocols())]
        for m in alphas:
            alpha = m.config.points.alpha
            cells = []
            for protocol in results.protocols():
                agg = aggregate(results, protocol, m.name)
                cells.append(_fmt(agg.mean) if agg else "-")
            interval = f"[{_offset(-alpha)}, {_offset(1.5 - alpha)}]"
            out.append(f"| {alpha:g} | {interval} | " + " | ".join(cells) + " |")
        strategy = alphas[0].config.prompt.strategy.value
        out += ["", f"Prompt strategy of the sweep: `{strategy}` (it passes the negatives to the decoder).", ""]
    if results.unavailable:
        out += ["Not run: " + "; ".join(f"{k} ({v})" for k, v in results.unavailable.items()), ""]
    out += list(sections)
    if plots:
        out += ["## Plots", ""]
        for caption, path in plots.items():
            rel = os.path.relpath(path, base)
            out += [f"**{caption}**", "", f"![{caption}]({rel})", ""]
    if notes:
        out += [notes.strip(), ""]
    return "\n".join(out).rstrip() + "\n"


__all__ = ["ABLATION_METHODS", "Aggregate", "BASELINES", "HEMISPHERE_METHODS", "MAIN_METHODS", "QCRow", "QC_METHODS",
           "REGISTRATION_METHODS", "Results", "hemisphere_mean", "shared_configurations", "won_against_copy",
           "SLICE_COLUMNS",
           "VOLUME_COLUMNS", "aggregate", "collect", "headline", "losses", "markdown_summary", "read_csv",
           "qc_summary", "structure_means", "write_csv"]
