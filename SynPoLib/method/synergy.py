"""Confidence Map Synergy Module (CMSM), paper §2.2.

Per backbone the support foreground tokens T_i define a confidence map over the query
features F_q. The paper averages n per-token cosine maps; since

    mean_i cos(a, T_i) = < a / |a| , mean_i (T_i / |T_i|) >,

the average is one matrix-vector product with a single prototype vector, and its cost
does not grow with the number of foreground tokens. Support background tokens are
scored the same way, giving the vector whose Gaussian fit places the negative prompts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Mapping, Optional, Tuple

import numpy as np

from ..backends.base import DINO, SAM
from ..config import PrototypeForm, SynergyConfig
from ..resize import area_fraction, resize_bilinear

_EPS = 1e-8


def unit_rows(features: np.ndarray) -> np.ndarray:
    """(C, h, w) features -> (h*w, C) rows of unit length (zero rows stay zero)."""
    if features.ndim != 3:
        raise ValueError(f"features must be (C, h, w), got shape {features.shape}")
    rows = features.reshape(features.shape[0], -1).T.astype(np.float32, copy=False)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return rows / np.maximum(norms, _EPS)


def mask_to_grid(mask: np.ndarray, grid: Tuple[int, int], threshold: float = 0.5) -> np.ndarray:
    """Support mask (H, W) to the feature grid: bilinear resize, then threshold [A].

    A structure smaller than a feature cell can vanish at the threshold; then the cells
    it covers most are kept instead, so a non-empty mask never yields no tokens [G].
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        raise ValueError("support mask is empty: label at least one pixel of the structure")
    grid_mask = resize_bilinear(mask.astype(np.float32), grid) > threshold
    if grid_mask.any():
        return grid_mask
    coverage = area_fraction(mask, grid)
    return coverage >= coverage.max() * (1 - 1e-6)


@dataclass(frozen=True)
class Prototype:
    """One backbone's support summary."""

    #: S(x) = <F(x)/|F(x)|, vector>
    vector: np.ndarray
    #: S computed on every support background token: the negative-score vector
    background_scores: np.ndarray
    #: number of support foreground tokens the vector summarises
    n_foreground: int


def build_prototype(features: np.ndarray, grid_mask: np.ndarray,
                    form: PrototypeForm = PrototypeForm.PAPER,
                    valid_grid: Optional[np.ndarray] = None) -> Prototype:
    """Summarise support features (C, h, w) under a feature-grid mask (h, w).

    ``valid_grid`` marks the tokens that show the slice: the background scores are
    taken on the valid tokens outside the mask only (None: every token)."""
    if features.shape[1:] != grid_mask.shape:
        raise ValueError(f"feature grid {features.shape[1:]} and mask grid {grid_mask.shape} differ")
    flat_mask = grid_mask.reshape(-1)
    flat_valid = np.ones_like(flat_mask) if valid_grid is None else np.asarray(valid_grid, bool).reshape(-1)
    if flat_valid.shape != flat_mask.shape:
        raise ValueError(f"valid grid {np.shape(valid_grid)} and mask grid {grid_mask.shape} differ")
    if not flat_mask.any():
        raise ValueError("no support foreground token on the feature grid")
    if form == PrototypeForm.PAPER:
        rows = unit_rows(features)
        vector = rows[flat_mask].mean(axis=0)
    elif form == PrototypeForm.AUTHOR:
        raw = features.reshape(features.shape[0], -1).T[flat_mask]
        mean = raw.mean(axis=0)
        vector = mean / max(float(np.linalg.norm(mean)), _EPS)
        rows = unit_rows(features)
    else:  # pragma: no cover - enum exhausts the cases
        raise ValueError(f"unknown prototype form {form!r}")
    vector = vector.astype(np.float32)
    background = rows[~flat_mask & flat_valid] @ vector
    return Prototype(vector=vector, background_scores=background.astype(np.float32),
                     n_foreground=int(flat_mask.sum()))


def similarity_map(features: np.ndarray, prototype: Prototype) -> np.ndarray:
    """Confidence map (h, w) of query features (C, h, w) against a prototype."""
    if features.shape[0] != prototype.vector.shape[0]:
        raise ValueError(
            f"query has {features.shape[0]} channels, prototype {prototype.vector.shape[0]}")
    return (unit_rows(features) @ prototype.vector).reshape(features.shape[1:])


def fuse(maps: Mapping[str, np.ndarray], cfg: SynergyConfig) -> np.ndarray:
    """Syn = d_sd * S_sam * S_dino + d_s * S_sam + d_d * S_dino; one backbone: its map [P].

    No min-max normalisation [A]: the Gaussian interval of the negatives is read on the
    same scale as the query map, so both must stay raw.
    """
    keys = set(maps)
    if keys == {SAM, DINO}:
        s, d = maps[SAM], maps[DINO]
        return cfg.delta_sd * s * d + cfg.delta_s * s + cfg.delta_d * d
    if len(keys) == 1:
        return np.asarray(next(iter(maps.values())))
    raise ValueError(f"cannot fuse backbones {sorted(keys)}: expected one of them or {{sam, dino}}")


def fit_gaussian(values: np.ndarray) -> Tuple[float, float]:
    """Maximum-likelihood Gaussian: mean and population std (ddof 0), as the paper's Gaussian fit."""
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    if values.size == 0:
        raise ValueError("the support slice has no background: the mask covers the whole slice")
    return float(values.mean()), float(values.std(ddof=0))


@dataclass(frozen=True)
class SupportSynergy:
    """Everything CMSM needs from one support slice, computed once."""

    prototypes: Dict[str, Prototype]
    #: fused background scores and their Gaussian
    background: np.ndarray
    mu: float
    sigma: float


def valid_to_grid(valid: np.ndarray, grid: Tuple[int, int]) -> np.ndarray:
    """The feature cells that mostly show the slice (more than half of their area is not
    the padding ``keep_aspect`` adds around it)."""
    return area_fraction(np.asarray(valid, bool), grid) > 0.5


def prepare_support(features: Mapping[str, np.ndarray], mask: np.ndarray,
                    cfg: SynergyConfig, valid: Optional[np.ndarray] = None) -> SupportSynergy:
    """Prototypes, fused background vector and its Gaussian for one support slice.

    ``mask`` is the support mask on the R x R ROI; each backbone's grid may differ.
    ``valid`` (R x R) marks the pixels that show the slice: with ``keep_aspect`` the
    slice is padded into the square, and padding tokens are no part of the support's
    background, whose Gaussian places the negatives (None: every pixel shows it).
    """
    prototypes = {}
    for name, feat in features.items():
        grid_mask = mask_to_grid(mask, feat.shape[1:], cfg.mask_threshold)
        valid_grid = None if valid is None else valid_to_grid(valid, feat.shape[1:])
        prototypes[name] = build_prototype(feat, grid_mask, cfg.prototype, valid_grid)
    grids = {features[name].shape[1:] for name in features}
    if len(grids) != 1:
        raise ValueError(f"backbones must share one feature grid to fuse, got {sorted(grids)}")
    background = fuse({k: p.background_scores for k, p in prototypes.items()}, cfg)
    mu, sigma = fit_gaussian(background)
    return SupportSynergy(prototypes=prototypes, background=background, mu=mu, sigma=sigma)


@dataclass(frozen=True)
class QuerySynergy:
    """The query's confidence maps."""

    #: per backbone, on the feature grid (h, w)
    maps: Dict[str, np.ndarray]
    #: fused map upsampled to the R x R ROI: what the points are picked from
    syn: np.ndarray
    #: the SAM map upsampled to R x R: what masks and components are scored with
    sam: np.ndarray


def query_synergy(features: Mapping[str, np.ndarray], support: SupportSynergy,
                  cfg: SynergyConfig, roi_size: int) -> QuerySynergy:
    """Confidence maps of one query slice (maps upsampled bilinearly, align_corners=False [A])."""
    missing = set(support.prototypes) - set(features)
    if missing:
        raise ValueError(f"query lacks features for {sorted(missing)}")
    maps = {name: similarity_map(features[name], support.prototypes[name]) for name in support.prototypes}
    size = (roi_size, roi_size)
    # Upsample each backbone's map, then fuse (the author's order [A]): the product of two
    # upsampled maps is not the upsampled product.
    upsampled = {name: resize_bilinear(m, size) for name, m in maps.items()}
    score_key = SAM if SAM in maps else next(iter(maps))
    return QuerySynergy(maps=maps, syn=fuse(upsampled, cfg), sam=upsampled[score_key])
