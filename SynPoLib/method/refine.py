"""Noise-aware Refine Module (NRM), paper §2.4 (the array parts).

Opening removes speckle, the connected component most similar to the support
prototype is kept, and SAM is re-prompted with the points plus that component as a
low-resolution mask prompt. The loop that calls the decoder lives in
:mod:`SynPoLib.segmenter`; here are the pure array steps.
"""

from __future__ import annotations

from typing import Optional, Tuple

import numpy as np
from scipy import ndimage

from ..config import RefineConfig
from ..resize import resize_nearest


def open_mask(mask: np.ndarray, size: int = 5, iterations: int = 1) -> np.ndarray:
    """Morphological opening (erode, then dilate) with a size x size square."""
    mask = np.asarray(mask, dtype=bool)
    if size <= 1 or not mask.any():
        return mask.copy()
    structure = np.ones((size, size), dtype=bool)
    return ndimage.binary_opening(mask, structure=structure, iterations=iterations)


def label_components(mask: np.ndarray, connectivity: int = 8) -> Tuple[np.ndarray, int]:
    """Connected components of a 2-D mask: (labels, count); label 0 is background."""
    structure = ndimage.generate_binary_structure(2, 2 if connectivity == 8 else 1)
    labels, count = ndimage.label(np.asarray(mask, dtype=bool), structure=structure)
    return labels, int(count)


def component_scores(labels: np.ndarray, count: int, score_map: np.ndarray) -> np.ndarray:
    """Mean of ``score_map`` over each component 1..count (paper eq. 14)."""
    if count == 0:
        return np.zeros(0, dtype=np.float64)
    index = np.arange(1, count + 1)
    return np.asarray(ndimage.mean(score_map, labels=labels, index=index), dtype=np.float64)


def best_component(mask: np.ndarray, score_map: np.ndarray, cfg: RefineConfig
                   ) -> Tuple[np.ndarray, Optional[float]]:
    """Open the mask and keep its best-scoring component; (component, score or None).

    When the opening erases everything (a structure thinner than the element), the
    unopened mask's components are scored instead [G]: an opening must clean a
    mask, not delete a small structure outright. An empty mask stays empty.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy(), None
    opened = open_mask(mask, cfg.opening_size, cfg.opening_iterations)
    if not opened.any():
        opened = mask
    labels, count = label_components(opened, cfg.connectivity)
    scores = component_scores(labels, count, score_map)
    best = int(np.argmax(scores))
    return labels == best + 1, float(scores[best])


def restrict_logits(low_res_logits: np.ndarray, component: np.ndarray,
                    outside_logit: float = -20.0) -> np.ndarray:
    """The previous low-res logits kept inside the component, ``outside_logit`` elsewhere.

    ``component`` lives on the R x R ROI; it is brought to the logits' grid (SAM's
    256 x 256 mask-prompt size) by nearest-neighbour resizing.
    """
    comp = component
    if comp.shape != low_res_logits.shape:
        comp = resize_nearest(comp.astype(np.uint8), low_res_logits.shape).astype(bool)
    return np.where(comp, low_res_logits, np.float32(outside_logit)).astype(np.float32)


def mask_score(mask: np.ndarray, score_map: np.ndarray) -> float:
    """Mean of a similarity map inside a mask (same grid); -inf for an empty mask."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return float("-inf")
    return float(score_map[mask].mean())
