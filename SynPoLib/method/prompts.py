"""The prompt stage: from selected points and the synergy map to decoder prompts.

SAM2 takes the paper's points. LiteMedSAM was trained with boxes and ignores points,
so its prompts carry a box derived from the confidence map. Strategies are named in
:class:`SynPoLib.config.PromptStrategy`; which one a backend uses by default was
measured on real data (README, "Prompt strategies").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from ..config import PromptConfig, PromptStrategy
from .points import PointPrompts


@dataclass(frozen=True)
class DecoderPrompt:
    """What one decoder call receives (R x R ROI coordinates)."""

    points: Optional[np.ndarray] = None  # (N, 2) x, y
    labels: Optional[np.ndarray] = None  # (N,)
    box: Optional[np.ndarray] = None  # (4,) x0, y0, x1, y1


def mask_box(mask: np.ndarray) -> Optional[np.ndarray]:
    """Tight (x0, y0, x1, y1) box of a 2-D mask, pixel centres inclusive; None if empty."""
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float32)


def _clip_box(box: np.ndarray, valid: np.ndarray) -> np.ndarray:
    vb = mask_box(valid)
    return np.array([max(box[0], vb[0]), max(box[1], vb[1]), min(box[2], vb[2]), min(box[3], vb[3])],
                    dtype=np.float32)


def _centred_box(centre_xy: np.ndarray, size_wh: np.ndarray) -> np.ndarray:
    """A box of ``size_wh`` pixels centred on a point; corners are pixel centres (inclusive),
    the convention of :func:`mask_box` and of MedSAM's training boxes."""
    half = (np.maximum(np.asarray(size_wh, np.float32), 1.0) - 1.0) / 2.0
    c = np.asarray(centre_xy, np.float32)
    return np.array([c[0] - half[0], c[1] - half[1], c[0] + half[0], c[1] + half[1]], np.float32)


def confident_region(syn: np.ndarray, positives: np.ndarray, quantile: float,
                     valid: np.ndarray, single: bool = True) -> np.ndarray:
    """Pixels at or above the map's ``quantile`` that are connected to a positive point.

    With ``single`` only the component with the largest confidence mass (sum of the
    map over it) among those holding a positive is kept: positives can straddle two
    look-alike structures (left and right caudate), and a box over both is useless.
    When no positive lies inside the thresholded map (possible only with ties), the
    component nearest to the positives' mean is taken.
    """
    threshold = np.quantile(syn[valid], quantile)
    high = (syn >= threshold) & valid
    labels, count = ndimage.label(high, structure=np.ones((3, 3), bool))
    if count == 0:
        return high
    px = np.clip(np.rint(positives).astype(int), 0, np.array(syn.shape[::-1]) - 1)
    hit = {int(labels[y, x]) for x, y in px} - {0}
    if not hit:
        centre = positives.mean(axis=0)
        ys, xs = np.nonzero(high)
        nearest = int(np.argmin((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2))
        hit = {int(labels[ys[nearest], xs[nearest]])}
    hit = sorted(hit)
    if single and len(hit) > 1:
        mass = ndimage.sum(syn - threshold, labels=labels, index=hit)
        hit = [hit[int(np.argmax(mass))]]
    return np.isin(labels, hit)


def grow_box(box: np.ndarray, margin: float, valid: np.ndarray) -> np.ndarray:
    """A box grown by ``margin`` times its side on each side, clipped to the valid region."""
    size = (box[2:] - box[:2] + 1.0) * (1.0 + 2.0 * margin)
    return _clip_box(_centred_box((box[:2] + box[2:]) / 2.0, size), valid)


def derive_box(syn: np.ndarray, points: PointPrompts, support_box_wh: Optional[np.ndarray],
               cfg: PromptConfig, valid: np.ndarray, strategy: PromptStrategy) -> np.ndarray:
    """A box prompt for the box strategies.

    - ``SUPPORT_BOX``: the support mask's box size (grown by ``support_box_margin``),
      centred on the positive points.
    - ``BOX``/``BOX_POINTS``: the box of the confident region holding the positives,
      grown by ``box_margin`` and capped at ``box_max_scale`` times the support box.
    """
    positives = points.positives
    centre = positives.mean(axis=0)
    if strategy == PromptStrategy.SUPPORT_BOX:
        if support_box_wh is None:
            raise ValueError("support-box strategy needs the support mask's box size")
        size = np.asarray(support_box_wh, np.float32) * (1.0 + 2.0 * cfg.support_box_margin)
        return _clip_box(_centred_box(centre, size), valid)
    region = confident_region(syn, positives, cfg.box_quantile, valid, cfg.box_single_region)
    box = mask_box(region)
    if box is None:
        box = np.array([centre[0], centre[1], centre[0], centre[1]], np.float32)
    size = box[2:] - box[:2] + 1.0
    size = size * (1.0 + 2.0 * cfg.box_margin)
    if support_box_wh is not None:
        size = np.minimum(size, cfg.box_max_scale * np.asarray(support_box_wh, np.float32))
    box_centre = (box[:2] + box[2:]) / 2.0
    return _clip_box(_centred_box(box_centre, size), valid)


def build_prompt(strategy: PromptStrategy, syn: np.ndarray, points: PointPrompts,
                 support_box_wh: Optional[np.ndarray], cfg: PromptConfig,
                 valid: np.ndarray) -> DecoderPrompt:
    """The decoder prompt for a strategy."""
    if strategy == PromptStrategy.POINTS:
        return DecoderPrompt(points=points.coords, labels=points.labels)
    box = derive_box(syn, points, support_box_wh, cfg, valid, strategy)
    if strategy == PromptStrategy.BOX_POINTS:
        return DecoderPrompt(points=points.coords, labels=points.labels, box=box)
    if strategy == PromptStrategy.BOX_NEGATIVES and len(points.negatives):
        return DecoderPrompt(points=points.negatives, labels=np.zeros(len(points.negatives), np.int32),
                             box=box)
    return DecoderPrompt(box=box)


def support_box_size(mask_roi: np.ndarray) -> Tuple[float, float]:
    """(width, height) of the support mask's box on the ROI."""
    box = mask_box(mask_roi)
    if box is None:
        raise ValueError("support mask is empty")
    return float(box[2] - box[0] + 1), float(box[3] - box[1] + 1)
