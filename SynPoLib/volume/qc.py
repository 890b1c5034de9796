"""3D quality control: per-slice confidence, auto-stop, review flags, 3D cleanup, a plot.

Confidence of a slice = the mean prototype similarity inside its mask (the score the
method already computes) divided by the same score of the support mask on the support
slice itself. 1.0 means "as similar to the support as the support is to itself";
the calibration is per support, so one threshold serves bright and dull structures,
MRI and CT. Measured on Colin27 + AAL with LiteMedSAM (README, "Quality control").

Auto-stop walks outward from each support slice: once ``stop_after`` consecutive
slices fall below ``stop_threshold`` (or come out empty), those slices are left
unpainted and the rest of that direction is not segmented. Single low slices inside
the structure are kept (and flagged), so no slice inside is skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..config import QualityConfig

#: robust z-score (median / 1.4826 MAD) below which a slice's score is an outlier   [G]
SCORE_OUTLIER_Z = 3.0


def relative_confidence(score: float, support_score: float) -> float:
    """A mask's score relative to the support's own (nan when either is undefined)."""
    if not np.isfinite(score):
        return float("-inf") if score == float("-inf") else float("nan")
    if not np.isfinite(support_score) or support_score <= 0:
        return float("nan")
    return float(score / support_score)


@dataclass
class ChainState:
    """Auto-stop bookkeeping for one direction away from one support slice."""

    cfg: QualityConfig
    #: slices held back while a run of low-confidence slices lasts: (index, payload)
    pending: List[Tuple[int, object]] = field(default_factory=list)
    stopped: bool = False
    last_pixels: Optional[int] = None

    def is_low(self, confidence: float, pixels: int) -> bool:
        return pixels == 0 or not (confidence >= self.cfg.stop_threshold)

    def push(self, index: int, confidence: float, pixels: int, payload) -> Tuple[list, list]:
        """Feed one slice; returns (slices to paint, slices to leave unpainted) now final.

        A low slice is held until the run either breaks (a confident slice follows:
        the held slices are painted) or reaches ``stop_after`` (they are not, and the
        direction stops). Without auto-stop every slice is final at once.
        """
        if not self.cfg.auto_stop:
            return [(index, payload)], []
        if self.is_low(confidence, pixels):
            self.pending.append((index, payload))
            if len(self.pending) >= self.cfg.stop_after:
                self.stopped = True
                dropped, self.pending = self.pending, []
                return [], dropped
            return [], []
        released, self.pending = self.pending + [(index, payload)], []
        return released, []

    def finish(self) -> list:
        """At the end of the direction: a run shorter than ``stop_after`` is painted."""
        released, self.pending = self.pending, []
        return released


def review_flags(records: Sequence, cfg: QualityConfig = QualityConfig()) -> Dict[int, str]:
    """slice index -> the reason a person should look at it (support slices never).

    Flagged: rejected or auto-stopped slices, empty masks, confidence below the stop
    threshold, scores far below the run's others (robust z < -3), and areas that jump
    by more than ``area_jump`` against both neighbours.
    """
    segmented = sorted((r for r in records if r.support_index >= 0), key=lambda r: r.index)
    flags: Dict[int, str] = {}
    scores = np.array([r.score for r in segmented if np.isfinite(r.score)], dtype=float)
    low = -np.inf
    if len(scores) >= 5:
        median = float(np.median(scores))
        mad = float(np.median(np.abs(scores - median))) * 1.4826
        if mad > 0:
            low = median - SCORE_OUTLIER_Z * mad
    for n, r in enumerate(segmented):
        confidence = getattr(r, "confidence", float("nan"))
        if "auto-stop" in " ".join(r.notes):
            flags[r.index] = "auto-stop: past the structure's end"
        elif not r.accepted:
            flags[r.index] = "rejected: score below the acceptance threshold"
        elif r.pixels == 0:
            flags[r.index] = "empty"
        elif np.isfinite(confidence) and confidence < cfg.stop_threshold:
            flags[r.index] = f"low confidence ({confidence:.2f})"
        elif np.isfinite(r.score) and r.score < low:
            flags[r.index] = f"low score ({r.score:.2f})"
        elif 0 < n < len(segmented) - 1:
            before, after = segmented[n - 1], segmented[n + 1]
            if before.pixels > 0 and after.pixels > 0 and before.index == r.index - 1 and after.index == r.index + 1:
                ratios = [r.pixels / before.pixels, r.pixels / after.pixels]
                if all(x > cfg.area_jump for x in ratios) or all(x < 1.0 / cfg.area_jump for x in ratios):
                    flags[r.index] = "area jumps against both neighbours"
    return flags


#: how strongly a review flag says "look here", by the start of its reason: a slice with
#: no (accepted) mask first, then low confidence, an outlier score, an area jump   [G]
FLAG_SEVERITY = (("auto-stop", 0), ("rejected", 0), ("empty", 0), ("low confidence", 1), ("low score", 2),
                 ("area jumps", 3))


def review_order(records: Sequence, cfg: QualityConfig = QualityConfig()) -> List[int]:
    """Segmented slices, the most doubtful first: what a person who sees only the review
    list (not the truth) would check and correct first.

    Flagged slices come before the others, by the severity of their flag
    (:data:`FLAG_SEVERITY`), then by confidence (lowest first), then by slice index.
    """
    flags = review_flags(records, cfg)

    def key(record):
        reason = flags.get(record.index)
        severity = len(FLAG_SEVERITY) + 1
        if reason is not None:
            severity = next((rank for prefix, rank in FLAG_SEVERITY if reason.startswith(prefix)), len(FLAG_SEVERITY))
        confidence = getattr(record, "confidence", float("nan"))
        confidence = -np.inf if record.pixels == 0 else (confidence if np.isfinite(confidence) else np.inf)
        return severity, confidence, record.index

    return [r.index for r in sorted((r for r in records if r.support_index >= 0), key=key)]


def keep_support_component(mask: np.ndarray, seeds: Optional[np.ndarray] = None) -> np.ndarray:
    """The 3D connected part of ``mask`` (26-connected) that overlaps ``seeds``.

    Without seeds (or when none overlap), the largest part. Returns a new array.
    """
    from scipy import ndimage  # on first use: the Slicer GUI imports this module without scipy

    binary = np.asarray(mask) > 0
    if not binary.any():
        return np.zeros_like(mask)
    labels, count = ndimage.label(binary, structure=np.ones((3, 3, 3), bool))
    keep = []
    if seeds is not None:
        keep = sorted(set(np.unique(labels[np.asarray(seeds) > 0]).tolist()) - {0})
    if not keep:
        sizes = np.bincount(labels.ravel())[1:]
        keep = [int(np.argmax(sizes)) + 1]
    return np.where(np.isin(labels, keep), mask, 0).astype(mask.dtype)


def save_confidence_plot(path: os.PathLike, records: Sequence, cfg: QualityConfig = QualityConfig(),
                         title: Optional[str] = None) -> str:
    """PNG of confidence per slice, with the stop threshold, support and flagged slices."""
    from ..figures import pyplot, save_figure

    plt = pyplot()
    recs = sorted(records, key=lambda r: r.index)
    flags = review_flags(recs, cfg)
    fig, ax = plt.subplots(figsize=(8, 3.2))
    seg = [r for r in recs if r.support_index >= 0 and np.isfinite(getattr(r, "confidence", np.nan))]
    ax.plot([r.index for r in seg], [r.confidence for r in seg], "-o", ms=3, lw=1, color="#2a7ab0",
            label="confidence (score / support's own)")
    ax.axhline(cfg.stop_threshold, color="#d62728", ls="--", lw=1, label=f"stop threshold {cfg.stop_threshold:g}")
    for r in recs:
        if r.support_index < 0:
            ax.axvline(r.index, color="#2ca02c", lw=2, alpha=0.6)
    flagged = [r for r in seg if r.index in flags]
    if flagged:
        ax.scatter([r.index for r in flagged], [r.confidence for r in flagged], s=40, facecolors="none",
                   edgecolors="#ff7f0e", linewidths=1.5, label="flagged for review", zorder=3)
    stopped = [r.index for r in recs if "auto-stop" in " ".join(r.notes)]
    for run in np.split(np.array(stopped), np.flatnonzero(np.diff(stopped) != 1) + 1) if stopped else []:
        ax.axvspan(run[0] - 0.5, run[-1] + 0.5, color="grey", alpha=0.15, lw=0)
    if stopped:
        ax.plot([], [], color="grey", alpha=0.3, lw=6, label="not painted (auto-stop)")
    ax.plot([], [], color="#2ca02c", lw=2, label="support slice")
    ax.set_xlabel("slice")
    ax.set_ylabel("confidence")
    ax.legend(fontsize=7, loc="lower center", ncol=2)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return str(path)


def save_structures_confidence_plot(path: os.PathLike, records: Dict[str, Sequence],
                                    cfg: QualityConfig = QualityConfig(), title: Optional[str] = None) -> str:
    """PNG of confidence per slice for several structures (one line each), with the stop
    threshold and each structure's flagged slices circled."""
    from ..figures import pyplot, save_figure

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.2))
    for n, (name, recs) in enumerate(records.items()):
        recs = sorted(recs, key=lambda r: r.index)
        flags = review_flags(recs, cfg)
        seg = [r for r in recs if r.support_index >= 0 and np.isfinite(getattr(r, "confidence", np.nan))]
        line, = ax.plot([r.index for r in seg], [r.confidence for r in seg], "-o", ms=3, lw=1, label=name)
        flagged = [r for r in seg if r.index in flags]
        if flagged:
            ax.scatter([r.index for r in flagged], [r.confidence for r in flagged], s=40, facecolors="none",
                       edgecolors=line.get_color(), linewidths=1.5, zorder=3)
    ax.axhline(cfg.stop_threshold, color="#d62728", ls="--", lw=1, label=f"stop threshold {cfg.stop_threshold:g}")
    ax.set_xlabel("slice")
    ax.set_ylabel("confidence")
    ax.legend(fontsize=7, loc="lower center", ncol=3)
    if title:
        ax.set_title(title + " (circled: flagged for review)", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return str(path)

