"""Support augmentation and dynamic matching for the video mode (the SAM 2 video FSMIS work's
augmentative prompting and dynamic matching).

The cited training-free SAM2 work ("volumes as video") augments the one labelled
support slice (affine + intensity jitter) and, for every query frame, prompts SAM 2
with the augmented support that looks most like that frame. Here:

- :func:`augment_support` draws N augmented copies of a support ROI image and its mask
  (the same affine moves both), seeded, so a run is reproducible; copy 0 is always
  the support itself.
- :func:`descriptor` / :func:`best_match` are the matching. The paper compares images
  with LPIPS; we compare features the backend has already computed for every slice
  (no extra network): the SAM 2.1 stride-16 map (the "sam" grid of the synergy map),
  average-pooled to a coarse ``grid x grid`` layout, flattened and L2-normalised; the
  match is the highest cosine similarity. Pooling to a coarse grid keeps where things
  are (an affine copy differs from the original mainly in layout, which a global
  average would erase) while ignoring texture-level noise.

Augmentation works on the R x R ROI image, and only inside the rectangle that shows
the slice (the rest is SAM's zero padding and stays zero): the ROI's pixels are
physically square (the geometry keeps the aspect ratio), so a rotation there is a
rigid rotation of the anatomy, which it would not be on anisotropic native pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np
from scipy import ndimage

_EPS = 1e-8


@dataclass(frozen=True)
class AugmentConfig:
    """Support augmentation and matching. ``n = 0`` turns both off."""

    #: augmented copies per support slice, besides the slice itself    [P] 2, the cited work's
    n: int = 2
    #: rotation drawn uniformly from +- this many degrees              [G] small: slices of
    #: one structure differ by shape more than by orientation
    rotation_deg: float = 10.0
    #: isotropic scale drawn uniformly from this range                 [G] organ size changes
    #: along the axis by roughly this much over a few slices
    scale: Tuple[float, float] = (0.9, 1.1)
    #: shift drawn uniformly from +- this fraction of the slice's side  [G]
    translate: float = 0.05
    #: contrast factor drawn uniformly from 1 +- this                   [G]
    contrast: float = 0.1
    #: brightness shift drawn uniformly from +- this fraction of 255    [G]
    brightness: float = 0.05
    #: gamma drawn log-uniformly from exp(+- this)                      [G]
    gamma: float = 0.1
    #: base seed; each support slice draws from (seed, slice index)     [G]
    seed: int = 0
    #: side of the pooled feature layout the matching compares         [G] see module doc
    match_grid: int = 8
    #: redraws of a copy whose mask the affine pushed out of the slice  [G]
    max_tries: int = 10

    def __post_init__(self) -> None:
        if self.n < 0:
            raise ValueError(f"augment n must be >= 0, got {self.n}")
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ValueError(f"augment scale range must be positive and ordered, got {self.scale}")
        for name in ("rotation_deg", "translate", "contrast", "brightness", "gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"augment {name} must be >= 0")
        if self.contrast >= 1:
            raise ValueError("augment contrast must be < 1 (the factor 1 - contrast must stay positive)")
        if self.match_grid < 1:
            raise ValueError("match_grid must be >= 1")
        if self.max_tries < 1:
            raise ValueError("max_tries must be >= 1")


@dataclass(frozen=True)
class Jitter:
    """One draw: the affine (about the slice's centre) and the intensity change."""

    rotation_deg: float = 0.0
    scale: float = 1.0
    #: shift in ROI pixels (rows, cols)
    shift: Tuple[float, float] = (0.0, 0.0)
    contrast: float = 1.0
    brightness: float = 0.0
    gamma: float = 1.0

    @property
    def is_identity(self) -> bool:
        return self == Jitter()


@dataclass(frozen=True)
class AugmentedSupport:
    """A support ROI image (R, R, 3) uint8 and its mask (R, R) bool, with the draw."""

    image: np.ndarray
    mask: np.ndarray
    jitter: Jitter


def draw_jitter(rng: np.random.Generator, cfg: AugmentConfig, side: Tuple[int, int]) -> Jitter:
    """One random draw of ``cfg``'s ranges for a slice of ``side`` (rows, cols) ROI pixels."""
    t = cfg.translate
    return Jitter(
        rotation_deg=float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)),
        scale=float(rng.uniform(*cfg.scale)),
        shift=(float(rng.uniform(-t, t) * side[0]), float(rng.uniform(-t, t) * side[1])),
        contrast=float(rng.uniform(1 - cfg.contrast, 1 + cfg.contrast)),
        brightness=float(rng.uniform(-cfg.brightness, cfg.brightness)),
        gamma=float(np.exp(rng.uniform(-cfg.gamma, cfg.gamma))))


def apply_jitter(image: np.ndarray, mask: np.ndarray, jitter: Jitter) -> Tuple[np.ndarray, np.ndarray]:
    """Apply one draw to a grey (rows, cols) uint8 image and its bool mask.

    The image is resampled bilinearly with edge replication (no black wedges for the
    model to find), the mask by nearest neighbour with nothing outside.
    """
    rows, cols = image.shape
    centre = np.array([(rows - 1) / 2.0, (cols - 1) / 2.0])
    theta = np.deg2rad(jitter.rotation_deg)
    # forward map: out = s * Rot(theta) @ (in - c) + c + shift; affine_transform wants
    # the inverse: in = matrix @ out + offset
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    matrix = rot.T / jitter.scale
    offset = centre - matrix @ (centre + np.asarray(jitter.shift, dtype=float))
    moved = ndimage.affine_transform(image.astype(np.float32), matrix, offset=offset, order=1, mode="nearest")
    moved_mask = ndimage.affine_transform(mask.astype(np.uint8), matrix, offset=offset, order=0,
                                          mode="constant", cval=0).astype(bool)
    x = np.clip(moved / 255.0, 0.0, 1.0) ** jitter.gamma
    x = (x - 0.5) * jitter.contrast + 0.5 + jitter.brightness
    return np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8), moved_mask


def augment_support(image_roi: np.ndarray, mask_roi: np.ndarray, shown: Tuple[int, int],
                    cfg: AugmentConfig, key: int = 0) -> List[AugmentedSupport]:
    """The support itself, then ``cfg.n`` augmented copies (seeded by ``cfg.seed`` and ``key``).

    ``image_roi`` is (R, R, 3) uint8 grey, ``mask_roi`` (R, R) bool; ``shown`` is the
    (rows, cols) rectangle at the top-left that shows the slice (``SliceGeometry.scaled``).
    """
    image_roi = np.asarray(image_roi)
    mask_roi = np.asarray(mask_roi, dtype=bool)
    if image_roi.ndim != 3 or image_roi.shape[2] != 3 or image_roi.dtype != np.uint8:
        raise ValueError(f"expected an (R, R, 3) uint8 ROI image, got {image_roi.shape} {image_roi.dtype}")
    if mask_roi.shape != image_roi.shape[:2]:
        raise ValueError(f"mask {mask_roi.shape} does not match image {image_roi.shape[:2]}")
    if not mask_roi.any():
        raise ValueError("support mask is empty on the ROI")
    rows, cols = int(shown[0]), int(shown[1])
    grey, mask = image_roi[:rows, :cols, 0], mask_roi[:rows, :cols]
    out = [AugmentedSupport(image=image_roi, mask=mask_roi, jitter=Jitter())]
    rng = np.random.default_rng([int(cfg.seed), int(key)])
    for _ in range(cfg.n):
        for _ in range(cfg.max_tries):
            jitter = draw_jitter(rng, cfg, (rows, cols))
            new_grey, new_mask = apply_jitter(grey, mask, jitter)
            if new_mask.any():
                break
        else:
            raise ValueError(f"the support mask left the slice in {cfg.max_tries} augmentation draws: "
                             "lower translate/scale or turn augmentation off (n=0)")
        image = np.zeros_like(image_roi)
        image[:rows, :cols] = new_grey[:, :, None]
        full_mask = np.zeros_like(mask_roi)
        full_mask[:rows, :cols] = new_mask
        out.append(AugmentedSupport(image=image, mask=full_mask, jitter=jitter))
    return out


def descriptor(features: np.ndarray, grid: int) -> np.ndarray:
    """(C, h, w) features -> unit vector of their ``grid x grid`` average-pooled layout."""
    import torch
    import torch.nn.functional as F

    feats = np.asarray(features, dtype=np.float32)
    if feats.ndim != 3:
        raise ValueError(f"features must be (C, h, w), got shape {feats.shape}")
    pooled = F.adaptive_avg_pool2d(torch.from_numpy(feats)[None], grid)[0].reshape(-1).numpy()
    return (pooled / max(float(np.linalg.norm(pooled)), _EPS)).astype(np.float32)


def best_match(query: np.ndarray, bank: Sequence[np.ndarray]) -> Tuple[int, np.ndarray]:
    """Index of the bank descriptor most similar (cosine) to ``query``, and all similarities.

    Ties go to the lower index, so the unaugmented support wins an exact tie.
    """
    if len(bank) == 0:
        raise ValueError("the support bank is empty")
    sims = np.stack([np.asarray(b, dtype=np.float32) for b in bank]) @ np.asarray(query, dtype=np.float32)
    return int(np.argmax(sims)), sims


__all__ = ["AugmentConfig", "AugmentedSupport", "Jitter", "apply_jitter", "augment_support", "best_match",
           "descriptor", "draw_jitter"]
