"""Figures of a run: Dice per structure, Dice against distance from the support, the alpha
sweep, and a montage of the worst slices with their prompts (drawn by SynPoLib.overlay).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..figures import pyplot, save_figure
from ..io import Volume, atomic_path
from ..overlay import display_orientation, save_montage
from ..preprocess import apply_window, in_plane_spacing, take_slice, window_bounds
from .methods import Method
from .protocols import Case
from .report import Results, aggregate, structure_means
from .store import ResultStore

_COLOURS = {"synpo": "#1b9e77", "ablation-1-sam": "#a6cee3", "ablation-2-dino": "#1f78b4",
            "ablation-3-psm": "#b2df8a", "ablation-4-nrm": "#33a02c", "persam-points": "#e7298a",
            "persam-box": "#d95f02", "copy": "#7f7f7f", "propagate": "#7570b3",
            "synpo+auto-stop": "#66a61e", "propagate+auto-stop": "#a6761d"}


def _save(fig, path: os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        save_figure(fig, tmp, dpi=100, format="png")
    return Path(path)


def dice_per_structure(results: Results, protocol: str, methods: Sequence[str], path: os.PathLike) -> Path:
    """Grouped bars: pooled Dice per structure, one bar per method."""
    plt = pyplot()
    structures = results.structures(protocol)
    methods = [m for m in methods if m not in results.unavailable and structure_means(results, protocol, m)]
    fig, ax = plt.subplots(figsize=(max(8.0, 0.75 * len(structures) + 3), 4.2))
    width = 0.8 / max(len(methods), 1)
    x = np.arange(len(structures))
    for i, m in enumerate(methods):
        table = structure_means(results, protocol, m)
        values = [table.get(s, (np.nan,))[0] for s in structures]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=m, color=_COLOURS.get(m))
    ax.set_xticks(x)
    ax.set_xticklabels(structures, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("pooled Dice")
    ax.set_ylim(0, 1)
    ax.set_title(f"{protocol}: Dice per structure")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.32))
    fig.tight_layout()
    return _save(fig, path)


def dice_against_distance(results: Results, protocol: str, methods: Sequence[str], path: os.PathLike) -> Path:
    """Mean slice Dice against the distance from the serving support slice.

    Within one volume the distance is |offset| in mm; across volumes it is the offset in
    relative position along the structure (0 = level with the support, 1 = its length).
    """
    plt = pyplot()
    rows = [r for r in results.slices if r["protocol"] == protocol]
    same = all(r["offset_mm"] is not None for r in rows)
    fig, ax = plt.subplots(figsize=(7, 4))
    for m in methods:
        sel = [r for r in rows if r["method"] == m]
        if not sel:
            continue
        if same:
            d = np.array([abs(r["offset_mm"]) for r in sel], float)
            edges = np.unique(np.concatenate([[0.0], np.quantile(d, np.linspace(0, 1, 11))]))
        else:
            d = np.array([abs(r["relative_offset"]) for r in sel], float)
            edges = np.linspace(0, max(d.max(), 1e-6), 11)
        dice = np.array([r["dice"] for r in sel], float)
        centres, means = [], []
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = (d >= lo) & ((d < hi) if hi < edges[-1] else (d <= hi))
            if inside.any():
                centres.append(float(d[inside].mean()))
                means.append(float(dice[inside].mean()))
        ax.plot(centres, means, marker="o", ms=3, label=m, color=_COLOURS.get(m))
    ax.set_xlabel("|distance from the support slice| (mm)" if same else
                  "|offset from the support| (fraction of the structure's extent)")
    ax.set_ylabel("mean slice Dice")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.set_title(f"{protocol}: Dice against distance from the support")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _save(fig, path)


def alpha_sweep(results: Results, methods: Sequence[Method], path: os.PathLike) -> Optional[Path]:
    """Mean Dice against alpha (beta = alpha - 1.5), one line per protocol (paper Fig. 4)."""
    sweep = [m for m in methods if m.name.startswith("alpha=")]
    if not sweep:
        return None
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for protocol in results.protocols():
        xs, ys = [], []
        for m in sweep:
            agg = aggregate(results, protocol, m.name)
            if agg is not None:
                xs.append(m.config.points.alpha)
                ys.append(agg.mean)
        if xs:
            ax.plot(xs, ys, marker="o", label=protocol)
    ax.set_xlabel("alpha (negatives in [mu - alpha s, mu - (alpha - 1.5) s])")
    ax.set_ylabel("mean Dice over structures")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("negative interval sweep")
    fig.tight_layout()
    return _save(fig, path)


@dataclass
class _Panel:
    points: np.ndarray
    labels: np.ndarray
    box: Optional[np.ndarray]


def worst_slices(results: Results, protocol: str, method: str, count: int) -> List[dict]:
    """The ``count`` slice rows with the lowest Dice (ties: larger reference first)."""
    rows = [r for r in results.slices if r["protocol"] == protocol and r["method"] == method]
    rows.sort(key=lambda r: (r["dice"], -r["ref_pixels"]))
    return rows[:count]


def worst_montage(results: Results, protocol: str, method: str, cases: Sequence[Case], store: ResultStore,
                  load: Callable[[str], Tuple[Volume, np.ndarray]], path: os.PathLike, count: int = 12,
                  window_of: Optional[Callable[[Volume], Tuple[float, float]]] = None) -> Optional[Path]:
    """The worst slices of a method, each cropped around its structure, prompts drawn.

    Each panel is windowed with its own volume's window and turned to the radiological
    view, then the panels are stacked and drawn by :func:`SynPoLib.overlay.save_montage`
    (green: prediction, dashed yellow: reference, + / x: positive / negative points,
    cyan: box prompt).
    """
    rows = worst_slices(results, protocol, method, count)
    if not rows:
        return None
    by_key = {c.key: c for c in cases}
    crops = []
    for row in rows:
        case_key, fingerprint = row["_entry"]
        case = by_key[case_key]
        image, labels = load(case.query_id)
        axis = case.axis
        n = case.scored.index(row["slice"])
        pred = store.masks(case_key, fingerprint)[n]
        ref = np.asarray(take_slice(labels, row["slice"], axis)) == case.query_label
        window = window_of(image) if window_of else window_bounds(image.array)
        grey = apply_window(take_slice(image.array, row["slice"], axis), window)
        entry = store.get(case_key, fingerprint)
        rec = next(s for s in entry["slices"] if s["slice"] == row["slice"])
        view = display_orientation(image.direction, axis)
        native = grey.shape
        points = np.asarray(rec.get("points") or np.zeros((0, 2)), float).reshape(-1, 2)
        box = rec.get("box")
        crops.append({"grey": view.image(grey), "pred": view.image(pred), "ref": view.image(ref),
                      "points": view.points(points, native) if len(points) else points,
                      "labels": np.asarray(rec.get("labels") or [], int),
                      "box": None if box is None else view.points(np.asarray(box).reshape(2, 2), native).reshape(4),
                      "title": f"{case.structure} sl {row['slice']} D={row['dice']:.2f}",
                      "spacing": in_plane_spacing(image.spacing, axis), "transpose": view.transpose})
    # One square panel size for all, centred on each slice's prediction + reference.
    halves = []
    for c in crops:
        union = c["pred"] | c["ref"]
        rr, cc = np.nonzero(union)
        extent = max(int(np.ptp(rr)), int(np.ptp(cc))) if rr.size else 32
        halves.append(max(32, extent // 2 + 12))
    half = int(max(halves))
    size = 2 * half + 1
    n = len(crops)
    grey = np.zeros((n, size, size), np.uint8)
    pred = np.zeros((n, size, size), bool)
    ref = np.zeros((n, size, size), bool)
    records, titles = {}, {}
    for i, c in enumerate(crops):
        union = c["pred"] | c["ref"]
        rr, cc = np.nonzero(union)
        cr, ccol = ((rr.min() + rr.max()) // 2, (cc.min() + cc.max()) // 2) if rr.size else \
            (c["grey"].shape[0] // 2, c["grey"].shape[1] // 2)
        r0, c0 = cr - half, ccol - half
        src_r = slice(max(r0, 0), min(r0 + size, c["grey"].shape[0]))
        src_c = slice(max(c0, 0), min(c0 + size, c["grey"].shape[1]))
        dst_r = slice(src_r.start - r0, src_r.stop - r0)
        dst_c = slice(src_c.start - c0, src_c.stop - c0)
        grey[i][dst_r, dst_c] = c["grey"][src_r, src_c]
        pred[i][dst_r, dst_c] = c["pred"][src_r, src_c]
        ref[i][dst_r, dst_c] = c["ref"][src_r, src_c]
        shift = np.array([c0, r0], float)
        box = None if c["box"] is None else (c["box"].reshape(2, 2) - shift).reshape(4)
        records[i] = _Panel(points=c["points"] - shift if len(c["points"]) else c["points"], labels=c["labels"],
                            box=box)
        titles[i] = c["title"]
    row_sp, col_sp = crops[0]["spacing"]
    aspect = (col_sp / row_sp) if crops[0]["transpose"] else (row_sp / col_sp)
    with atomic_path(path) as tmp:
        save_montage(tmp, grey, pred, 0, list(range(n)), (0.0, 255.0), reference=ref, records=records,
                     titles=titles, aspect=aspect,
                     title=f"{protocol}: worst {n} slices of {method} (green: {method}, yellow: reference)")
    return Path(path)


__all__ = ["alpha_sweep", "dice_against_distance", "dice_per_structure", "worst_montage", "worst_slices"]
