"""Segmentation metrics: Dice, HD95 and ASSD in millimetres, per slice and per volume.

Definitions (the ones the few-shot medical segmentation literature's code uses):

- Dice = 2 |P & R| / (|P| + |R|). A volume's Dice is *pooled* over its scored slices:
  true/false positives and negatives are summed over the slices first, as the SSL-ALPNet
  and ADNet evaluation code does, not averaged slice by slice.
- Surface distances follow MedPy: a mask's surface is the mask minus its erosion by the
  face-connected structuring element; the distance of each surface voxel of one mask to
  the nearest surface voxel of the other is measured in millimetres with the voxel
  spacing (anisotropic spacing counts).
- HD95 = the 95th percentile (numpy's linear interpolation) of both directed distance
  sets pooled together; ASSD = the mean of the two directed mean distances.

Empty masks (documented conventions, tested):

==================  ======  =============  =====================================
case                Dice    HD95 / ASSD    why
==================  ======  =============  =====================================
both empty          1.0     0.0            nothing to find and nothing found
one of them empty   0.0     inf            no surface to measure a distance to
==================  ======  =============  =====================================

``inf`` is deliberate: it sorts last and it survives a mean, so a method that misses a
structure entirely cannot hide behind the slices it did find.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np


@dataclass(frozen=True)
class Overlap:
    """Voxel counts of one prediction against one reference."""

    tp: int
    fp: int
    fn: int

    def __add__(self, other: "Overlap") -> "Overlap":
        return Overlap(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def dice(self) -> float:
        total = 2 * self.tp + self.fp + self.fn
        return 1.0 if total == 0 else 2.0 * self.tp / total

    @property
    def precision(self) -> float:
        return float("nan") if self.tp + self.fp == 0 else self.tp / (self.tp + self.fp)

    @property
    def recall(self) -> float:
        return float("nan") if self.tp + self.fn == 0 else self.tp / (self.tp + self.fn)


def _pair(pred: np.ndarray, ref: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(pred) > 0, np.asarray(ref) > 0
    if pred.shape != ref.shape:
        raise ValueError(f"prediction {pred.shape} and reference {ref.shape} differ in shape")
    return pred, ref


def overlap(pred: np.ndarray, ref: np.ndarray) -> Overlap:
    """TP / FP / FN voxel counts (any non-zero value is foreground)."""
    pred, ref = _pair(pred, ref)
    tp = int(np.count_nonzero(pred & ref))
    return Overlap(tp=tp, fp=int(np.count_nonzero(pred)) - tp, fn=int(np.count_nonzero(ref)) - tp)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """Dice of two masks of any dimension; 1.0 when both are empty."""
    return overlap(pred, ref).dice


def pooled_dice(pairs: Sequence[Tuple[np.ndarray, np.ndarray]]) -> float:
    """Dice of counts summed over (prediction, reference) slice pairs (FSMIS pooling)."""
    total = Overlap(0, 0, 0)
    for pred, ref in pairs:
        total = total + overlap(pred, ref)
    return total.dice


def surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels: the mask minus its erosion by the face-connected element (MedPy)."""
    mask = np.asarray(mask) > 0
    if not mask.any():
        return mask
    from scipy import ndimage  # here, not at import: dice needs only numpy (the Slicer self-test)

    structure = ndimage.generate_binary_structure(mask.ndim, 1)
    return mask & ~ndimage.binary_erosion(mask, structure=structure, iterations=1, border_value=0)


def _spacing(spacing: Optional[Sequence[float]], ndim: int) -> Tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != ndim:
        raise ValueError(f"spacing {spacing} has {len(spacing)} values for a {ndim}-D mask")
    if any(not s > 0 for s in spacing):
        raise ValueError(f"spacing must be positive, got {spacing}")
    return spacing


def _crop_to_union(pred: np.ndarray, ref: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Both masks cut to their union's box plus one voxel.

    Surface distances only involve voxels inside the union, and the one-voxel ring keeps
    the erosion identical to the one on the full array, so the result is exact; the
    distance transform then runs on a few thousand voxels instead of millions.
    """
    union = pred | ref
    where = []
    for axis in range(union.ndim):
        other = tuple(a for a in range(union.ndim) if a != axis)
        idx = np.flatnonzero(union.any(axis=other))
        where.append(slice(max(int(idx[0]) - 1, 0), int(idx[-1]) + 2))
    return pred[tuple(where)], ref[tuple(where)]


def surface_distances(pred: np.ndarray, ref: np.ndarray,
                      spacing: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Directed surface distances in mm: (pred surface -> ref surface, ref -> pred).

    Raises ``ValueError`` if either mask is empty (the callers apply the conventions).
    """
    pred, ref = _pair(pred, ref)
    sampling = _spacing(spacing, pred.ndim)
    if not pred.any() or not ref.any():
        raise ValueError("surface distances need two non-empty masks")
    pred, ref = _crop_to_union(pred, ref)
    pred_surface, ref_surface = surface(pred), surface(ref)
    from scipy import ndimage

    to_ref = ndimage.distance_transform_edt(~ref_surface, sampling=sampling)
    to_pred = ndimage.distance_transform_edt(~pred_surface, sampling=sampling)
    return to_ref[pred_surface], to_pred[ref_surface]


def _empty_case(pred: np.ndarray, ref: np.ndarray) -> Optional[float]:
    has_pred, has_ref = bool(np.any(pred)), bool(np.any(ref))
    if has_pred and has_ref:
        return None
    return 0.0 if not has_pred and not has_ref else float("inf")


def hd95(pred: np.ndarray, ref: np.ndarray, spacing: Optional[Sequence[float]] = None,
         percentile: float = 95.0) -> float:
    """95th-percentile symmetric Hausdorff distance in mm (0 if both empty, inf if one is)."""
    pred, ref = _pair(pred, ref)
    special = _empty_case(pred, ref)
    if special is not None:
        return special
    a, b = surface_distances(pred, ref, spacing)
    return float(np.percentile(np.concatenate([a, b]), percentile))


def assd(pred: np.ndarray, ref: np.ndarray, spacing: Optional[Sequence[float]] = None) -> float:
    """Average symmetric surface distance in mm (0 if both empty, inf if one is)."""
    pred, ref = _pair(pred, ref)
    special = _empty_case(pred, ref)
    if special is not None:
        return special
    a, b = surface_distances(pred, ref, spacing)
    return float((a.mean() + b.mean()) / 2.0)


@dataclass(frozen=True)
class Scores:
    """Dice, HD95 and ASSD of one prediction."""

    dice: float
    hd95: float
    assd: float
    pred_voxels: int
    ref_voxels: int


def score(pred: np.ndarray, ref: np.ndarray, spacing: Optional[Sequence[float]] = None) -> Scores:
    """All metrics at once (one distance computation for HD95 and ASSD)."""
    pred, ref = _pair(pred, ref)
    counts = overlap(pred, ref)
    special = _empty_case(pred, ref)
    if special is not None:
        hd = mean = special
    else:
        a, b = surface_distances(pred, ref, spacing)
        hd = float(np.percentile(np.concatenate([a, b]), 95.0))
        mean = float((a.mean() + b.mean()) / 2.0)
    return Scores(dice=counts.dice, hd95=hd, assd=mean, pred_voxels=counts.tp + counts.fp,
                  ref_voxels=counts.tp + counts.fn)


__all__ = ["Overlap", "Scores", "assd", "dice", "hd95", "overlap", "pooled_dice", "score", "surface",
           "surface_distances"]
