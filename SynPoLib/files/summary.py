"""A batch's summary: ``summary.csv`` and ``report.md``, one row per case, worst first.

Worst first means: failed cases, then cases not finished, then finished cases by the
share of their slices flagged for review (SynPoLib.volume.qc.review_flags), then by
their mean confidence, lowest first. That order needs no reference, so it is the
order a person reviews a real cohort in; Dice is shown where a reference exists. Each
finished case brings its small montage (the flagged slices with the lowest confidence
first, then slices spread over the structure) into the report.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..io import atomic_path

COLUMNS = ("rank", "case", "status", "seconds", "slices", "painted", "flagged", "flagged_slices",
           "confidence_mean", "confidence_min", "dice", "error", "segmentation", "montage", "query", "row",
           "worker", "finished")
STATE_ORDER = {"failed": 0, "pending": 1, "done": 2}


def case_state(record: Optional[dict]) -> str:
    state = (record or {}).get("state")
    return state if state in ("done", "failed") else "pending"


def _number(value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return math.nan
    return number


def review_key(record: Optional[dict], name: str = "") -> tuple:
    """Sort key: smaller is worse (reviewed first)."""
    state = case_state(record)
    if state != "done":
        return (STATE_ORDER[state], 0.0, 0.0, name)
    flagged = len(record.get("flags") or {}) / max(int(record.get("slices") or 0), 1)
    confidence = _number(record.get("confidence_mean"))
    return (STATE_ORDER[state], -flagged, -math.inf if math.isnan(confidence) else confidence, name)


def rank_records(records: Sequence[dict]) -> List[dict]:
    """Status records, worst first."""
    return sorted(records, key=lambda r: review_key(r, str(r.get("case", ""))))


def summary_rows(cases: Sequence[Tuple[object, Optional[dict]]], out: os.PathLike) -> List[dict]:
    """One dict per case (the CSV's columns), worst first. ``cases``: (Case, record or None)."""
    out = Path(out)
    ranked = sorted(cases, key=lambda item: review_key(item[1], item[0].name))
    rows = []
    for rank, (case, record) in enumerate(ranked, start=1):
        record = record or {}
        state = case_state(record)
        folder = Path("cases") / case.name
        flags = record.get("flags") or {}
        done = state == "done"
        rows.append({
            "rank": rank, "case": case.name, "status": state,
            "seconds": (record.get("seconds") or {}).get("total", ""),
            "slices": record.get("slices", "") if done else "",
            "painted": record.get("painted", "") if done else "",
            "flagged": len(flags) if done else "",
            "flagged_slices": " ".join(sorted(flags, key=int)) if done else "",
            "confidence_mean": _blank(record.get("confidence_mean")) if done else "",
            "confidence_min": _blank(record.get("confidence_min")) if done else "",
            "dice": _blank(record.get("dice")) if done else "",
            "error": record.get("error") or "",
            "segmentation": str(folder / f"{case.name}.seg.nrrd") if done else "",
            "montage": str(folder / f"{case.name}.png") if done else "",
            "query": case.query, "row": case.row,
            "worker": (record.get("worker") or {}).get("name", ""),
            "finished": record.get("finished", "") if state != "pending" else "",
            "_flags": flags,
        })
    return rows


def _blank(value):
    return "" if value is None else value


def write_summary(out: os.PathLike, cases: Sequence[Tuple[object, Optional[dict]]],
                  title: str = "SynPo batch") -> Tuple[Path, Path]:
    """Write ``summary.csv`` and ``report.md`` into ``out`` (atomically); returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = summary_rows(cases, out)
    csv_path, md_path = out / "summary.csv", out / "report.md"
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buffer.getvalue())
    with atomic_path(md_path) as tmp:
        tmp.write_text(report_markdown(rows, title))
    return csv_path, md_path


def _cell(value) -> str:
    text = "" if value is None else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _fmt(value, digits: int = 3) -> str:
    number = _number(value)
    return "" if math.isnan(number) else f"{number:.{digits}f}"


def report_markdown(rows: Sequence[dict], title: str) -> str:
    counts = {s: sum(1 for r in rows if r["status"] == s) for s in ("done", "failed", "pending")}
    flagged = sum(1 for r in rows if r["status"] == "done" and r["flagged"])
    lines = [f"# {title}", "",
             f"{len(rows)} cases: {counts['done']} done ({flagged} with slices flagged for review), "
             f"{counts['failed']} failed, {counts['pending']} not finished. Worst first: failed, not finished, "
             "then the largest share of flagged slices, then the lowest mean confidence "
             "(a slice's score over the support's own; about 1 = as similar as the labelled slice).", "",
             "| # | case | status | time (s) | confidence mean / min | flagged slices | Dice | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        confidence = f"{_fmt(r['confidence_mean'], 2)} / {_fmt(r['confidence_min'], 2)}" \
            if r["status"] == "done" else ""
        shown_flags = r["flagged_slices"] if len(str(r["flagged_slices"])) < 40 else f"{r['flagged']} slices"
        lines.append(f"| {r['rank']} | [{_cell(r['case'])}](#{_anchor(r)}) | {r['status']} | {_fmt(r['seconds'], 1)} "
                     f"| {confidence} | {_cell(shown_flags)} | {_fmt(r['dice'])} | {_cell(r['error'])} |")
    lines.append("")
    for r in rows:
        lines.append(f"## {r['rank']}. {r['case']}")
        lines.append("")
        lines.append(f"<a id=\"{_anchor(r)}\"></a>{r['status']}; query `{r['query']}` (manifest row {r['row']})")
        lines.append("")
        if r["error"]:
            lines.extend([f"> {_cell(r['error'])}", ""])
        if r["status"] == "done":
            facts = [f"{r['painted']} of {r['slices']} slices painted",
                     f"confidence {_fmt(r['confidence_mean'], 2)} (lowest {_fmt(r['confidence_min'], 2)})"]
            if r["dice"] != "":
                facts.append(f"Dice {_fmt(r['dice'])}")
            lines.extend(["; ".join(facts), ""])
            if r["_flags"]:
                lines.append("Flagged: " + "; ".join(f"slice {i}: {reason}" for i, reason in
                                                     sorted(r["_flags"].items(), key=lambda kv: int(kv[0]))))
                lines.append("")
            lines.extend([f"![{r['case']}]({r['montage']})", ""])
    return "\n".join(lines)


def _anchor(row: dict) -> str:
    return f"case-{row['rank']}"


__all__ = ["COLUMNS", "case_state", "rank_records", "report_markdown", "review_key", "summary_rows",
           "write_summary"]
