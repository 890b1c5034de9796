"""Pictures: a montage of query slices with the mask, the reference and the prompts.

Green filled contour: SynPo's mask. Yellow line: the reference (when given). Green +:
positive points; red x: negative points; cyan rectangle: a box prompt. Slices are shown
in native pixels with the volume's own intensity window, never re-windowed per slice.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Dict, Optional, Sequence

import numpy as np

from .preprocess import apply_window, take_slice


@dataclass(frozen=True)
class DisplayOrientation:
    """How a native slice is turned for display: transpose first, then flips."""

    transpose: bool = False
    flip_rows: bool = False
    flip_cols: bool = False

    def image(self, array: np.ndarray) -> np.ndarray:
        out = array.T if self.transpose else array
        if self.flip_rows:
            out = out[::-1]
        if self.flip_cols:
            out = out[:, ::-1]
        return out

    def points(self, xy: np.ndarray, native_shape: Sequence[int]) -> np.ndarray:
        """Native (col, row) points to displayed (x, y)."""
        pts = np.asarray(xy, dtype=float).reshape(-1, 2).copy()
        rows, cols = native_shape
        if self.transpose:
            pts = pts[:, ::-1]
            rows, cols = cols, rows
        if self.flip_rows:
            pts[:, 1] = rows - 1 - pts[:, 1]
        if self.flip_cols:
            pts[:, 0] = cols - 1 - pts[:, 0]
        return pts


def display_orientation(direction: Sequence[float], axis: int) -> DisplayOrientation:
    """The radiological view of a slice along array ``axis`` of a (k, j, i) volume.

    ``direction`` is the row-major 3x3 LPS direction matrix (SimpleITK's). Axial slices
    show anterior up and the patient's right on the left of the screen, coronal ones
    superior up and right on the left, sagittal ones superior up and anterior on the
    left (as 3D Slicer's views do).
    """
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    # LPS direction of each array axis: array axis 0 is k, the third column.
    axis_dir = {0: d[:, 2], 1: d[:, 1], 2: d[:, 0]}
    row_axis, col_axis = [a for a in range(3) if a != axis]
    normal = int(np.argmax(np.abs(axis_dir[axis])))  # 0: L-R, 1: A-P, 2: S-I
    left, posterior, inferior = np.eye(3)[0], np.eye(3)[1], -np.eye(3)[2]
    screen_right, screen_down = {2: (left, posterior), 1: (left, inferior), 0: (posterior, inferior)}[normal]
    row_dir, col_dir = axis_dir[row_axis], axis_dir[col_axis]
    transpose = abs(row_dir @ screen_right) > abs(col_dir @ screen_right)
    if transpose:
        row_dir, col_dir = col_dir, row_dir
    return DisplayOrientation(transpose=bool(transpose), flip_rows=bool(row_dir @ screen_down < 0),
                              flip_cols=bool(col_dir @ screen_right < 0))


def pick_slices(indices: Sequence[int], max_panels: int) -> list:
    """Up to ``max_panels`` indices spread evenly over ``indices`` (ends included)."""
    indices = list(indices)
    if len(indices) <= max_panels:
        return indices
    picks = np.linspace(0, len(indices) - 1, max_panels).round().astype(int)
    return [indices[i] for i in sorted(set(picks))]


def save_montage(path: os.PathLike, volume: np.ndarray, mask: np.ndarray, axis: int,
                 indices: Sequence[int], window: Sequence[float],
                 reference: Optional[np.ndarray] = None, records: Optional[Dict[int, object]] = None,
                 titles: Optional[Dict[int, str]] = None, columns: int = 6, crop_margin: int = 12,
                 aspect: float = 1.0, title: Optional[str] = None,
                 orientation: DisplayOrientation = DisplayOrientation()) -> str:
    """Write a PNG montage of ``indices`` along ``axis``; returns the path.

    ``records`` maps slice index to an object with ``points``, ``labels`` and ``box``
    in native (col, row) pixels (a :class:`SynPoLib.volume.SliceRecord`). The view is
    cropped to the union of mask and reference over the shown slices, plus a margin.
    ``aspect`` is row spacing / column spacing of the native slice, so anisotropic
    pixels look right; ``orientation`` turns slices for display (:func:`display_orientation`).
    """
    from matplotlib.patches import Rectangle

    from .figures import pyplot, save_figure

    plt = pyplot()

    indices = list(indices)
    if not indices:
        raise ValueError("no slices to show")
    native_shape = [n for i, n in enumerate(volume.shape) if i != axis]
    view = orientation

    def plane(array, index):
        return view.image(take_slice(array, index, axis))

    if view.transpose:
        aspect = 1.0 / aspect
    crop = _crop_box(mask, reference, axis, indices, crop_margin, view)
    rows = int(np.ceil(len(indices) / columns))
    cols = min(columns, len(indices))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows + (0.4 if title else 0)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index in zip(axes.ravel(), indices):
        image = apply_window(plane(volume, index), window)
        r0, r1, c0, c1 = crop
        ax.imshow(image[r0:r1, c0:c1], cmap="gray", vmin=0, vmax=255, interpolation="nearest",
                  aspect=aspect)
        pred = plane(mask, index)[r0:r1, c0:c1] > 0
        if pred.any():
            overlay = np.zeros(pred.shape + (4,), dtype=float)
            overlay[pred] = (0.1, 0.9, 0.2, 0.35)
            ax.imshow(overlay, interpolation="nearest", aspect=aspect)
            ax.contour(pred.astype(float), levels=[0.5], colors=["#19e62f"], linewidths=1.0)
        if reference is not None:
            ref = plane(reference, index)[r0:r1, c0:c1] > 0
            if ref.any():
                ax.contour(ref.astype(float), levels=[0.5], colors=["#ffd400"], linewidths=1.0,
                           linestyles="dashed")
        rec = (records or {}).get(index)
        if rec is not None and len(getattr(rec, "points", ())):
            pts = view.points(rec.points, native_shape) - np.array([c0, r0])
            labels = np.asarray(rec.labels)
            pos, neg = pts[labels == 1], pts[labels == 0]
            ax.scatter(pos[:, 0], pos[:, 1], marker="+", s=70, c="#19e62f", linewidths=2)
            ax.scatter(neg[:, 0], neg[:, 1], marker="x", s=50, c="#ff3030", linewidths=2)
        box = getattr(rec, "box", None) if rec is not None else None
        if box is not None:
            corners = view.points(np.asarray(box).reshape(2, 2), native_shape) - np.array([c0, r0])
            (x0, y0), (x1, y1) = corners.min(axis=0), corners.max(axis=0)
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#00e5ff",
                                   linewidth=1.0))
        ax.set_xlim(-0.5, c1 - c0 - 0.5)
        ax.set_ylim(r1 - r0 - 0.5, -0.5)
        ax.set_title((titles or {}).get(index, f"slice {index}"), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    return str(path)


def _crop_box(mask: np.ndarray, reference: Optional[np.ndarray], axis: int, indices: Sequence[int],
              margin: int, view: DisplayOrientation):
    union = None
    for index in indices:
        plane = view.image(take_slice(mask, index, axis)) > 0
        if reference is not None:
            plane = plane | (view.image(take_slice(reference, index, axis)) > 0)
        union = plane if union is None else union | plane
    shape = union.shape
    if not union.any():
        return 0, shape[0], 0, shape[1]
    rows = np.flatnonzero(union.any(axis=1))
    cols = np.flatnonzero(union.any(axis=0))
    # A square-ish view: at least 64 pixels, so context around small structures shows.
    half = max(32, (rows[-1] - rows[0]) // 2 + margin, (cols[-1] - cols[0]) // 2 + margin)
    rc, cc = (rows[0] + rows[-1]) // 2, (cols[0] + cols[-1]) // 2
    r0, r1 = max(0, rc - half), min(shape[0], rc + half + 1)
    c0, c1 = max(0, cc - half), min(shape[1], cc + half + 1)
    return int(r0), int(r1), int(c0), int(c1)
