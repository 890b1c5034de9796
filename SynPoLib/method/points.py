"""Point Selection Module (PSM), paper §2.3.

Positives: the top gamma1*Kp pixels of the synergy map, clustered into Kp centres.
Negatives: pixels whose synergy score lies in the Gaussian interval fitted to the
support background, [mu - alpha*sigma, mu - beta*sigma]: "not least but less similar"
points, which land inside the anatomy rather than in the empty background (the paper's
point). Both are clustered with K-means (k-means++, fixed seed).

Coordinates are (x = column, y = row) on the R x R map; a flattened map is indexed
``row * R + col``. Each K-means centre is snapped to the nearest candidate of its
cluster [G]: a centroid of a crescent-shaped region can fall outside the region, and a
prompt outside the confident area is exactly what the method tries to avoid.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Optional, Tuple

import numpy as np
from sklearn.cluster import KMeans

from ..config import PointConfig


@dataclass(frozen=True)
class PointPrompts:
    """Points on the R x R map with SAM labels (1 positive, 0 negative)."""

    coords: np.ndarray  # (N, 2) float32, (x, y)
    labels: np.ndarray  # (N,) int32
    #: the interval the negatives were drawn from, after any widening
    negative_interval: Tuple[float, float] = (float("nan"), float("nan"))
    #: how many 0.25-sigma steps the interval had to be widened
    widen_steps: int = 0
    #: why there are fewer points than asked, if so
    notes: Tuple[str, ...] = field(default_factory=tuple)

    @property
    def positives(self) -> np.ndarray:
        return self.coords[self.labels == 1]

    @property
    def negatives(self) -> np.ndarray:
        return self.coords[self.labels == 0]


def _cluster(candidates_xy: np.ndarray, k: int, seed: int) -> np.ndarray:
    """K-means centres of (n, 2) candidates, each snapped to its nearest member."""
    unique = np.unique(candidates_xy, axis=0)
    k = min(k, len(unique))
    if k == 0:
        return np.zeros((0, 2), dtype=np.float32)
    if k == len(unique):  # as many clusters as distinct candidates: each is a centre
        return unique.astype(np.float32)
    with warnings.catch_warnings():
        # Duplicate candidates can make k-means++ report fewer distinct clusters; we
        # snap every centre to a real candidate below, so that is harmless.
        warnings.simplefilter("ignore")
        km = KMeans(n_clusters=k, init="k-means++", n_init=1, random_state=seed).fit(
            candidates_xy.astype(np.float64))
    snapped = np.empty((k, 2), dtype=np.float32)
    for c in range(k):
        members = candidates_xy[km.labels_ == c]
        if len(members) == 0:  # empty cluster: snap among all candidates
            members = candidates_xy
        d = ((members - km.cluster_centers_[c]) ** 2).sum(axis=1)
        snapped[c] = members[int(np.argmin(d))]
    return snapped


def _xy_of(flat_indices: np.ndarray, width: int) -> np.ndarray:
    rows, cols = np.divmod(flat_indices, width)
    return np.stack([cols, rows], axis=1)


def _check_map(syn: np.ndarray, valid: Optional[np.ndarray]) -> np.ndarray:
    if syn.ndim != 2:
        raise ValueError(f"synergy map must be 2-D, got shape {syn.shape}")
    if valid is None:
        return np.ones(syn.shape, dtype=bool)
    valid = np.asarray(valid, dtype=bool)
    if valid.shape != syn.shape:
        raise ValueError(f"valid mask {valid.shape} does not match map {syn.shape}")
    if not valid.any():
        raise ValueError("the valid region of the map is empty")
    return valid


def select_positive_points(syn: np.ndarray, cfg: PointConfig,
                           valid: Optional[np.ndarray] = None) -> np.ndarray:
    """Kp positive points (x, y): K-means of the top gamma1*Kp pixels of ``syn``."""
    valid = _check_map(syn, valid)
    flat = syn.reshape(-1)
    candidates = np.flatnonzero(valid.reshape(-1))
    n_top = min(cfg.gamma1 * cfg.n_positive, candidates.size)
    # Stable order: equal scores are taken in raster order, so the result is reproducible.
    order = np.argsort(-flat[candidates], kind="stable")[:n_top]
    top_xy = _xy_of(candidates[order], syn.shape[1])
    return _cluster(top_xy, cfg.n_positive, cfg.seed)


def select_negative_points(syn: np.ndarray, mu: float, sigma: float, cfg: PointConfig,
                           positives: Optional[np.ndarray] = None,
                           valid: Optional[np.ndarray] = None
                           ) -> Tuple[np.ndarray, Tuple[float, float], int]:
    """Kn negative points (x, y) from the Gaussian interval; returns (points, interval, steps).

    An empty interval is widened by ``widen_step`` sigma on both sides, at most
    ``widen_max_steps`` times; after that the result is empty and the caller goes on
    with positives only.
    """
    valid = _check_map(syn, valid)
    if cfg.n_negative == 0:
        return np.zeros((0, 2), dtype=np.float32), (float("nan"), float("nan")), 0
    flat = syn.reshape(-1)
    allowed = valid.reshape(-1).copy()
    if cfg.exclude_near_positives and positives is not None and len(positives) > 0:
        allowed &= ~_near_positives(positives, syn.shape)
    rng = np.random.default_rng(cfg.seed)
    for step in range(cfg.widen_max_steps + 1):
        widen = step * cfg.widen_step
        lo = mu - (cfg.alpha + widen) * sigma
        hi = mu - (cfg.beta - widen) * sigma
        candidates = np.flatnonzero(allowed & (flat >= lo) & (flat <= hi))
        if candidates.size:
            break
    else:
        return np.zeros((0, 2), dtype=np.float32), (lo, hi), cfg.widen_max_steps
    limit = cfg.gamma2 * cfg.n_negative
    if candidates.size > limit:
        candidates = np.sort(rng.choice(candidates, size=limit, replace=False))
    points = _cluster(_xy_of(candidates, syn.shape[1]), cfg.n_negative, cfg.seed)
    return points, (float(lo), float(hi)), step


def _near_positives(positives: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Flat mask of pixels closer to a positive centre than the positives' spread [A]."""
    if len(positives) < 2:
        return np.zeros(shape[0] * shape[1], dtype=bool)
    diffs = positives[:, None, :] - positives[None, :, :]
    radius = float(np.sqrt((diffs ** 2).sum(-1)).max())
    rows, cols = np.mgrid[0:shape[0], 0:shape[1]]
    xy = np.stack([cols.ravel(), rows.ravel()], axis=1).astype(np.float32)
    d2 = ((xy[:, None, :] - positives[None, :, :]) ** 2).sum(-1).min(axis=1)
    return d2 < radius ** 2


def select_points(syn: np.ndarray, mu: float, sigma: float, cfg: PointConfig,
                  valid: Optional[np.ndarray] = None,
                  positive_map: Optional[np.ndarray] = None) -> PointPrompts:
    """The full PSM: positives, then negatives, as one labelled point set.

    ``positive_map`` (default ``syn``) is the map the positives are ranked on, e.g.
    ``syn`` weighted by a location prior; negatives always use ``syn`` itself.
    """
    positives = select_positive_points(syn if positive_map is None else positive_map, cfg, valid)
    negatives, interval, steps = select_negative_points(syn, mu, sigma, cfg, positives, valid)
    notes = []
    if cfg.n_negative and len(negatives) == 0:
        notes.append(
            f"no negative candidate within {cfg.widen_max_steps} widening steps: positives only")
    elif steps:
        notes.append(f"negative interval widened by {steps * cfg.widen_step:g} sigma")
    coords = np.concatenate([positives, negatives]).astype(np.float32)
    labels = np.concatenate([np.ones(len(positives), np.int32), np.zeros(len(negatives), np.int32)])
    return PointPrompts(coords=coords, labels=labels, negative_interval=interval,
                        widen_steps=steps, notes=tuple(notes))


def extreme_points(syn: np.ndarray, valid: Optional[np.ndarray] = None,
                   positive_map: Optional[np.ndarray] = None) -> PointPrompts:
    """PerSAM-style prompts: one positive at the map's maximum, one negative at its minimum.

    The "naive negatives" baseline SynPo improves on (paper Table 3).
    """
    valid = _check_map(syn, valid)
    masked_hi = np.where(valid, syn if positive_map is None else positive_map, -np.inf)
    masked_lo = np.where(valid, syn, np.inf)
    width = syn.shape[1]
    pos = _xy_of(np.array([int(np.argmax(masked_hi))]), width)
    neg = _xy_of(np.array([int(np.argmin(masked_lo))]), width)
    return PointPrompts(coords=np.concatenate([pos, neg]).astype(np.float32),
                        labels=np.array([1, 0], dtype=np.int32))
