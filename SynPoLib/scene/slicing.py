"""Slices between voxel grids: which axis, which slices, and how two volumes line up.

Pure numpy (no ``slicer``): arrays are (k, j, i) like SimpleITK's and Slicer's, "axis"
is an axis of that array, and a voxel-to-RAS matrix maps (i, j, k, 1) to millimetres.
:mod:`SynPoLib.mrml` applies these to MRML nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from ..errors import MRMLInputError
from ..preprocess import labelled_slices

#: the query's slicing axis may differ in direction from the support's by at most this
#: angle; beyond it the query's slices cut the anatomy at another angle than the
#: labelled slice and the one-shot transfer has nothing to stand on                  [G]
AXIS_MATCH_DEGREES = 20.0


def spacing_kji(ijk_to_ras: np.ndarray) -> Tuple[float, float, float]:
    """Voxel spacing in array order (k, j, i) from a voxel-to-RAS matrix."""
    norms = np.linalg.norm(np.asarray(ijk_to_ras)[:3, :3], axis=0)
    return float(norms[2]), float(norms[1]), float(norms[0])


def lps_placement(ijk_to_ras: np.ndarray) -> Tuple[Tuple[float, float, float], Tuple[float, ...]]:
    """(origin, row-major 3x3 direction) in LPS, SimpleITK's conventions, from a
    voxel (i, j, k) to RAS matrix: where the registration mode places a volume."""
    matrix = np.asarray(ijk_to_ras, np.float64)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    columns = matrix[:3, :3] / np.linalg.norm(matrix[:3, :3], axis=0)
    direction = ras_to_lps @ columns
    origin = ras_to_lps @ matrix[:3, 3]
    return tuple(float(v) for v in origin), tuple(float(v) for v in direction.ravel())


def axis_direction_name(ijk_to_ras: np.ndarray, axis: int) -> str:
    """Anatomical name of array ``axis``'s direction, e.g. "I-S (axial slices)"."""
    d = np.asarray(ijk_to_ras)[:3, 2 - axis]
    k = int(np.argmax(np.abs(d)))
    ends = (("L", "R"), ("P", "A"), ("I", "S"))[k]
    towards = ends if d[k] > 0 else ends[::-1]
    view = ("sagittal", "coronal", "axial")[k]
    return f"{towards[0]}-{towards[1]} ({view} slices)"


def voxel_centers_ras(ijk_to_ras: np.ndarray, kji: np.ndarray) -> np.ndarray:
    """World RAS of voxel centres given as (N, 3) (k, j, i) indices."""
    kji = np.asarray(kji, dtype=float).reshape(-1, 3)
    ijk1 = np.concatenate([kji[:, ::-1], np.ones((len(kji), 1))], axis=1)
    return (np.asarray(ijk_to_ras) @ ijk1.T).T[:, :3]


def guess_axis(mask: np.ndarray) -> int:
    """The array axis along which the labelled voxels cover the fewest slices.

    One labelled slice covers one slice along its own axis and many along the others;
    ties (a single voxel, a cube) go to axis 0.
    """
    counts = [len(labelled_slices(mask, axis)) for axis in range(3)]
    if not any(counts):
        raise MRMLInputError("the support segment is empty: draw the structure on one slice first")
    return int(np.argmin(counts))


def map_slice(index: int, n_from: int, n_to: int) -> int:
    """A slice index at the same relative position in a volume with ``n_to`` slices."""
    if n_from <= 1:
        return 0
    return int(round(index / (n_from - 1) * (n_to - 1)))


def query_slices(mode: str, n_query: int, support_slices: Sequence[int], n_support: int, *,
                 margin: int = 10, first: int = 0, last: int = -1) -> List[int]:
    """Query slice indices for a range mode.

    ``"whole"``: every slice; ``"around"``: the support slice(s) (mapped by relative
    position when the query is another volume) +- ``margin``; ``"custom"``: ``first`` to
    ``last`` inclusive (``last`` < 0 counts from the end, like Python).
    """
    if n_query < 1:
        raise MRMLInputError("the query volume has no slices along the chosen axis")
    if mode == "whole":
        return list(range(n_query))
    if mode == "around":
        if margin < 0:
            raise MRMLInputError(f"the margin around the support must be >= 0, got {margin}")
        mapped = [map_slice(s, n_support, n_query) for s in support_slices]
        lo, hi = max(0, min(mapped) - margin), min(n_query - 1, max(mapped) + margin)
        return list(range(lo, hi + 1))
    if mode == "custom":
        lo = first + n_query if first < 0 else first
        hi = last + n_query if last < 0 else last
        if not (0 <= lo <= hi < n_query):
            raise MRMLInputError(f"custom slice range {first}..{last} is outside the query's slices 0..{n_query - 1}")
        return list(range(lo, hi + 1))
    raise MRMLInputError(f"unknown slice range {mode!r}: use 'whole', 'around' or 'custom'")


@dataclass(frozen=True)
class Reorientation:
    """How the query's (k, j, i) array is turned to run along the support's axes.

    ``aligned = flip(transpose(native, perm))``: aligned axis ``a`` is native axis
    ``perm[a]``, reversed where ``flip[a]``. So a sagittal-acquired query is cut along
    the same anatomical direction as an axial support slice, and its slices are shown
    to the model the same way up. Identity when both are one volume.
    """

    perm: Tuple[int, int, int] = (0, 1, 2)
    flip: Tuple[bool, bool, bool] = (False, False, False)

    @property
    def is_identity(self) -> bool:
        return self.perm == (0, 1, 2) and not any(self.flip)

    @classmethod
    def between(cls, query_ijk_to_ras: np.ndarray, support_ijk_to_ras: np.ndarray, axis: int,
                names: Tuple[str, str] = ("query", "support")) -> "Reorientation":
        """Match each support array axis with the query array axis parallel to it in RAS."""

        def directions(matrix):  # unit world direction of array axes (k, j, i)
            cols = np.asarray(matrix)[:3, :3] / np.linalg.norm(np.asarray(matrix)[:3, :3], axis=0)
            return [cols[:, 2], cols[:, 1], cols[:, 0]]

        q_dirs, s_dirs = directions(query_ijk_to_ras), directions(support_ijk_to_ras)
        cosines = np.array([[float(sd @ qd) for qd in q_dirs] for sd in s_dirs])  # [support a, query b]
        limit = math.cos(math.radians(AXIS_MATCH_DEGREES))
        best = int(np.argmax(np.abs(cosines[axis])))
        if abs(cosines[axis, best]) < limit:
            angle = math.degrees(math.acos(min(1.0, abs(cosines[axis, best]))))
            raise MRMLInputError(
                f"the {names[0]} volume has no slice direction within {AXIS_MATCH_DEGREES:.0f} degrees of the "
                f"{names[1]} slice's ({angle:.0f} degrees off): its slices would cut the anatomy at another "
                f"angle. Resample the {names[0]} onto the {names[1]}'s orientation (Resample Scalar Volume "
                "module) or label a support slice in the same orientation")
        perm, flip = [0, 0, 0], [False, False, False]
        perm[axis], flip[axis] = best, bool(cosines[axis, best] < 0)
        rest_s = [a for a in range(3) if a != axis]
        rest_q = [b for b in range(3) if b != best]
        straight = abs(cosines[rest_s[0], rest_q[0]]) + abs(cosines[rest_s[1], rest_q[1]])
        crossed = abs(cosines[rest_s[0], rest_q[1]]) + abs(cosines[rest_s[1], rest_q[0]])
        pairs = zip(rest_s, rest_q if straight >= crossed else rest_q[::-1])
        for a, b in pairs:
            perm[a] = b
            # flip in-plane only when clearly reversed; an in-plane rotation keeps its order
            flip[a] = bool(cosines[a, b] < -limit)
        return cls(tuple(perm), tuple(flip))

    def to_aligned(self, native: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return native
        out = np.transpose(native, self.perm)
        for a, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=a)
        return np.ascontiguousarray(out)

    def to_native(self, aligned: np.ndarray) -> np.ndarray:
        if self.is_identity:
            return aligned
        out = aligned
        for a, f in enumerate(self.flip):
            if f:
                out = np.flip(out, axis=a)
        return np.ascontiguousarray(np.transpose(out, np.argsort(self.perm)))

    def aligned_spacing(self, native_spacing: Sequence[float]) -> Tuple[float, float, float]:
        return tuple(float(native_spacing[self.perm[a]]) for a in range(3))

    def aligned_matrix(self, native_ijk_to_ras: np.ndarray, native_shape: Sequence[int]) -> np.ndarray:
        """The aligned array's voxel (i, j, k) to RAS matrix: the same voxels in the same
        places, indexed as :meth:`to_aligned` orders them."""
        native = np.asarray(native_ijk_to_ras, np.float64)
        if self.is_identity:
            return native.copy()
        # native kji = A @ aligned kji + b
        a_matrix, b = np.zeros((3, 3)), np.zeros(3)
        for a in range(3):
            n = self.perm[a]
            a_matrix[n, a] = -1.0 if self.flip[a] else 1.0
            b[n] = (int(native_shape[n]) - 1) if self.flip[a] else 0.0
        reverse = np.eye(3)[::-1]  # kji <-> ijk
        to_native = np.eye(4)
        to_native[:3, :3] = reverse @ a_matrix @ reverse
        to_native[:3, 3] = reverse @ b
        return native @ to_native

    def slice_to_native(self, axis: int, index: int, mask: np.ndarray,
                        aligned_shape: Sequence[int]) -> Tuple[int, int, np.ndarray]:
        """An aligned slice (axis, index, 2-D mask) as (native axis, native index, native 2-D mask)."""
        if self.is_identity:
            return axis, int(index), np.asarray(mask)
        b, c = [a for a in range(3) if a != axis]
        m = np.asarray(mask)
        if self.flip[b]:
            m = m[::-1, :]
        if self.flip[c]:
            m = m[:, ::-1]
        if self.perm[b] > self.perm[c]:
            m = m.T
        native_index = aligned_shape[axis] - 1 - int(index) if self.flip[axis] else int(index)
        return self.perm[axis], native_index, np.ascontiguousarray(m)
