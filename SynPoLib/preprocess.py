"""From a volume's native slices to the method's R x R images, and back.

Two rules the Slicer extensions we studied break, and we keep:

- one intensity window for the whole volume, never per slice (per-slice min-max makes
  the same tissue a different grey on every slice, which breaks support/query matching);
- the input volume is never modified: every function here returns new arrays.

NaN and Inf voxels (a failed reconstruction, a masked export) carry no intensity:
the window is computed from the finite voxels only, and :func:`apply_window` shows
a non-finite voxel as background (0, the window's low end), +Inf included. The
volume driver never paints them (SynPoLib.volume.types.Job).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .config import GeometryConfig, WindowConfig
from .errors import InputError
from .resize import resize_bilinear, resize_nearest

#: values below this in a volume mean air in Hounsfield units: the volume is CT [G]
_CT_AIR_THRESHOLD = -500.0


def window_bounds(volume: np.ndarray, cfg: WindowConfig = WindowConfig()) -> Tuple[float, float]:
    """The (low, high) intensity window for a whole volume."""
    if cfg.window is not None:
        low, high = (float(v) for v in cfg.window)
        if not low < high:  # nan fails too
            raise InputError(f"the intensity window ({low:g}, {high:g}) is empty: LOW must be below HIGH")
        return low, high
    values = finite_values(volume)
    if values.size == 0:
        raise InputError("the volume has no finite voxel (all NaN or Inf): there is no image to segment")
    modality = cfg.modality
    if modality == "auto":
        modality = "ct" if float(np.min(values)) < _CT_AIR_THRESHOLD else "mri"
    if modality == "ct":
        low, high = (float(v) for v in cfg.ct_window)
    elif modality == "mri":
        low, high = (float(v) for v in np.percentile(values, cfg.mri_percentiles))
    else:
        raise InputError(f"unknown modality {cfg.modality!r}: use 'auto', 'ct' or 'mri'")
    if not high > low:
        raise InputError(
            f"intensity window is empty ({low:g} .. {high:g}): the volume is constant over its "
            f"{cfg.mri_percentiles[0]:g}-{cfg.mri_percentiles[1]:g} percentiles; give an explicit window "
            "(--window LOW HIGH, or the config's window.window)")
    return low, high


def nonfinite_count(volume: np.ndarray) -> int:
    """How many voxels are NaN or +-Inf (0 for integer volumes, without a pass over them)."""
    volume = np.asarray(volume)
    if volume.dtype.kind not in "fc":
        return 0
    return int(volume.size - np.count_nonzero(np.isfinite(volume)))


def finite_values(volume: np.ndarray) -> np.ndarray:
    """The volume's finite voxels (the volume itself when all are finite)."""
    volume = np.asarray(volume)
    if volume.dtype.kind not in "fc":
        return volume
    finite = np.isfinite(volume)
    return volume if finite.all() else volume[finite]


def apply_window(image: np.ndarray, bounds: Tuple[float, float]) -> np.ndarray:
    """Map intensities linearly to [0, 255] (clipped), as uint8; NaN and +-Inf become 0 (background)."""
    low, high = bounds
    image = np.asarray(image)
    scaled = (image.astype(np.float32) - low) * (255.0 / (high - low))
    if image.dtype.kind in "fc" and not np.isfinite(scaled).all():
        scaled = np.where(np.isfinite(image), np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0), 0.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def take_slice(volume: np.ndarray, index: int, axis: int) -> np.ndarray:
    """The 2-D slice ``index`` along array ``axis`` (a view, never a copy to write into)."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    if not 0 <= index < volume.shape[axis]:
        raise IndexError(f"slice {index} is outside the volume's {volume.shape[axis]} slices "
                         f"along axis {axis}")
    return np.take(volume, index, axis=axis)


def labelled_slices(mask: np.ndarray, axis: int) -> List[int]:
    """Indices along ``axis`` of the slices where ``mask`` has a non-zero voxel, ascending."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
    other = tuple(a for a in range(3) if a != axis)
    return [int(i) for i in np.flatnonzero(np.asarray(mask).any(axis=other))]


def in_plane_spacing(spacing: Optional[Sequence[float]], axis: int) -> Tuple[float, float]:
    """(row, column) spacing of a slice along ``axis`` from array-order spacing."""
    if spacing is None:
        return 1.0, 1.0
    rest = [float(s) for i, s in enumerate(spacing) if i != axis]
    return rest[0], rest[1]


@dataclass(frozen=True)
class SliceGeometry:
    """Where a native (rows, cols) slice sits inside the R x R square.

    The slice is scaled into the square's top-left corner (as SAM pads) and the rest
    is zero padding; ``scaled`` is the (rows, cols) size it occupies.
    """

    native: Tuple[int, int]
    scaled: Tuple[int, int]
    roi_size: int

    @property
    def scale_xy(self) -> Tuple[float, float]:
        """ROI pixels per native pixel along x (columns) and y (rows)."""
        return self.scaled[1] / self.native[1], self.scaled[0] / self.native[0]

    def valid(self) -> np.ndarray:
        """(R, R) mask of the pixels that show the slice (not padding)."""
        out = np.zeros((self.roi_size, self.roi_size), dtype=bool)
        out[: self.scaled[0], : self.scaled[1]] = True
        return out

    def image_to_roi(self, image: np.ndarray) -> np.ndarray:
        """uint8 (rows, cols) slice to a (R, R, 3) uint8 image (grey tiled to 3 channels)."""
        self._check(image)
        antialias = self.scaled[0] < self.native[0] or self.scaled[1] < self.native[1]
        scaled = resize_bilinear(image.astype(np.float32), self.scaled, antialias=antialias)
        out = np.zeros((self.roi_size, self.roi_size), dtype=np.uint8)
        out[: self.scaled[0], : self.scaled[1]] = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
        return np.repeat(out[:, :, None], 3, axis=2)

    def mask_to_roi(self, mask: np.ndarray) -> np.ndarray:
        """Binary (rows, cols) mask to (R, R) bool, nearest neighbour."""
        self._check(mask)
        out = np.zeros((self.roi_size, self.roi_size), dtype=bool)
        out[: self.scaled[0], : self.scaled[1]] = resize_nearest(
            np.asarray(mask, dtype=np.uint8), self.scaled).astype(bool)
        return out

    def logits_to_native(self, logits: np.ndarray) -> np.ndarray:
        """(R, R) logits to the native grid, bilinear; threshold the result at 0."""
        crop = np.asarray(logits, dtype=np.float32)[: self.scaled[0], : self.scaled[1]]
        return resize_bilinear(crop, self.native)

    def mask_to_native(self, mask: np.ndarray) -> np.ndarray:
        """(R, R) bool mask to the native grid, nearest neighbour."""
        crop = np.asarray(mask, dtype=np.uint8)[: self.scaled[0], : self.scaled[1]]
        return resize_nearest(crop, self.native).astype(bool)

    def points_to_native(self, coords_xy: np.ndarray) -> np.ndarray:
        """ROI (x, y) points to native (col, row) pixel coordinates (continuous)."""
        sx, sy = self.scale_xy
        coords = np.asarray(coords_xy, dtype=np.float64).reshape(-1, 2)
        # Pixel centres: ROI pixel x covers native [(x)/sx, (x+1)/sx); centre maps to centre.
        return np.stack([(coords[:, 0] + 0.5) / sx - 0.5, (coords[:, 1] + 0.5) / sy - 0.5], axis=1)

    def _check(self, array: np.ndarray) -> None:
        if tuple(array.shape) != tuple(self.native):
            raise ValueError(f"slice has shape {array.shape}, geometry expects {self.native}")


def slice_geometry(shape: Tuple[int, int], pixel_spacing: Tuple[float, float] = (1.0, 1.0),
                   cfg: GeometryConfig = GeometryConfig()) -> SliceGeometry:
    """Geometry of a native slice of ``shape`` (rows, cols) with (row, col) spacing."""
    rows, cols = int(shape[0]), int(shape[1])
    if rows < 1 or cols < 1:
        raise ValueError(f"slice shape {shape} is empty")
    size = int(cfg.roi_size)
    if not cfg.keep_aspect:
        return SliceGeometry(native=(rows, cols), scaled=(size, size), roi_size=size)
    height, width = rows * float(pixel_spacing[0]), cols * float(pixel_spacing[1])
    scale = size / max(height, width)
    scaled = (max(1, min(size, int(round(height * scale)))), max(1, min(size, int(round(width * scale)))))
    return SliceGeometry(native=(rows, cols), scaled=scaled, roi_size=size)
