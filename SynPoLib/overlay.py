"""Pictures: a montage of query slices with the mask, the reference and the prompts.

Green filled contour: SynPo's mask. Yellow line: the reference (when given). Green +:
positive points; red x: negative points; cyan rectangle: a box prompt. Slices are shown
in native pixels with the volume's own intensity window, never re-windowed per slice.
"""

from __future__ import annotations

import os
from typing import Dict, Optional, Sequence

import numpy as np

from .preprocess import apply_window, take_slice


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
                 aspect: float = 1.0, title: Optional[str] = None) -> str:
    """Write a PNG montage of ``indices`` along ``axis``; returns the path.

    ``records`` maps slice index to an object with ``points``, ``labels`` and ``box``
    in native (col, row) pixels (a :class:`SynPoLib.volume.SliceRecord`). The view is
    cropped to the union of mask and reference over the shown slices, plus a margin.
    ``aspect`` is row spacing / column spacing, so anisotropic pixels look right.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    indices = list(indices)
    if not indices:
        raise ValueError("no slices to show")
    crop = _crop_box(mask, reference, axis, indices, crop_margin)
    rows = int(np.ceil(len(indices) / columns))
    cols = min(columns, len(indices))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows + (0.4 if title else 0)),
                             squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, index in zip(axes.ravel(), indices):
        image = apply_window(take_slice(volume, index, axis), window)
        r0, r1, c0, c1 = crop
        ax.imshow(image[r0:r1, c0:c1], cmap="gray", vmin=0, vmax=255, interpolation="nearest",
                  aspect=aspect)
        pred = take_slice(mask, index, axis)[r0:r1, c0:c1] > 0
        if pred.any():
            overlay = np.zeros(pred.shape + (4,), dtype=float)
            overlay[pred] = (0.1, 0.9, 0.2, 0.35)
            ax.imshow(overlay, interpolation="nearest", aspect=aspect)
            ax.contour(pred.astype(float), levels=[0.5], colors=["#19e62f"], linewidths=1.0)
        if reference is not None:
            ref = take_slice(reference, index, axis)[r0:r1, c0:c1] > 0
            if ref.any():
                ax.contour(ref.astype(float), levels=[0.5], colors=["#ffd400"], linewidths=1.0,
                           linestyles="dashed")
        rec = (records or {}).get(index)
        if rec is not None and len(getattr(rec, "points", ())):
            pts = np.asarray(rec.points) - np.array([c0, r0])
            labels = np.asarray(rec.labels)
            pos, neg = pts[labels == 1], pts[labels == 0]
            ax.scatter(pos[:, 0], pos[:, 1], marker="+", s=70, c="#19e62f", linewidths=2)
            ax.scatter(neg[:, 0], neg[:, 1], marker="x", s=50, c="#ff3030", linewidths=2)
        box = getattr(rec, "box", None) if rec is not None else None
        if box is not None:
            x0, y0, x1, y1 = np.asarray(box) - np.array([c0, r0, c0, r0])
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="#00e5ff",
                                   linewidth=1.0))
        ax.set_xlim(-0.5, c1 - c0 - 0.5)
        ax.set_ylim(r1 - r0 - 0.5, -0.5)
        ax.set_title((titles or {}).get(index, f"slice {index}"), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = str(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _crop_box(mask: np.ndarray, reference: Optional[np.ndarray], axis: int, indices: Sequence[int],
              margin: int):
    shape = [n for i, n in enumerate(mask.shape) if i != axis]
    union = np.zeros(shape, dtype=bool)
    for index in indices:
        union |= take_slice(mask, index, axis) > 0
        if reference is not None:
            union |= take_slice(reference, index, axis) > 0
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
