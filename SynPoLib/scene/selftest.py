"""The recipe of the Slicer module's self-test, shared with pytest.

Inside Slicer the self-test runs on SampleData's MRHead; pytest runs the same steps on
Colin27 (another head MRI) through slicer-core. The test puts a synthetic lesion, an
ellipsoid defined in RAS millimetres, into a copy of the volume, so the truth is exact
and placed through the volume's own geometry: the support is the lesion on its central
slice, and the result must find it on the neighbouring slices, at the same RAS place.
(Outlines drawn by intensity rules, the head or the brain, are not crisp objects:
LiteMedSAM scored 0.3-0.8 on them, which would test the rule, not the module.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence

import numpy as np

#: lesion centre, from the volume's centre, in RAS millimetres (off-centre so a
#: mirrored result misses it)                                                        [G]
LESION_OFFSET_MM = (25.0, 10.0, 15.0)
#: lesion semi-axes along R, A, S in millimetres                                     [G]
LESION_RADII_MM = (12.0, 15.0, 10.0)
#: lesion brightness as a multiple of the 99th percentile of the non-zero voxels    [G]
LESION_CONTRAST = 1.3
#: relative noise inside the lesion, so it has texture like tissue                   [G]
LESION_NOISE = 0.03
#: slices segmented on each side of the support slice                                [G]
MARGIN = 3
#: Dice floor on the segmented slices: LiteMedSAM scored 0.96-0.98 on Colin27
#: (Testing/scene/test_mrml_runs.py); the floor leaves room for MRHead                    [G]
DICE_FLOOR = 0.85


@dataclass
class LesionCase:
    image: np.ndarray
    truth: np.ndarray
    support: np.ndarray
    slice: int
    axis: int
    centre_ras: np.ndarray

    @property
    def scored(self) -> List[int]:
        """The segmented slices that are scored (the support slice is copied, not scored)."""
        return [i for i in range(self.slice - MARGIN, self.slice + MARGIN + 1) if i != self.slice]


def voxel_ras(ijk_to_ras: np.ndarray, shape_kji: Sequence[int]) -> np.ndarray:
    """(k, j, i, 3) RAS of every voxel centre."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape_kji], indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return (ijk1 @ np.asarray(ijk_to_ras, float).T)[..., :3]


def lesion_case(volume: np.ndarray, ijk_to_ras: np.ndarray, axis: int = 0, seed: int = 0) -> LesionCase:
    """A copy of ``volume`` with the lesion, its exact mask, and the one-slice support."""
    volume = np.asarray(volume)
    matrix = np.asarray(ijk_to_ras, float)
    centre_ijk = (np.asarray(volume.shape[::-1], float) - 1.0) / 2.0
    centre = (matrix @ np.append(centre_ijk, 1.0))[:3] + np.asarray(LESION_OFFSET_MM)
    inside = ((((voxel_ras(matrix, volume.shape) - centre) / np.asarray(LESION_RADII_MM)) ** 2).sum(-1) <= 1.0)
    if not inside.any():
        raise ValueError("the test lesion falls outside the volume")
    bright = float(np.percentile(volume[volume > 0], 99)) if (volume > 0).any() else 1.0
    rng = np.random.default_rng(seed)
    image = volume.astype(np.float32, copy=True)
    image[inside] = LESION_CONTRAST * bright + rng.normal(0.0, LESION_NOISE * bright, int(inside.sum()))
    index = int(round(np.linalg.solve(matrix, np.append(centre, 1.0))[2 - axis]))
    support = np.zeros(volume.shape, np.uint8)
    where = [slice(None)] * 3
    where[axis] = index
    support[tuple(where)] = inside[tuple(where)]
    return LesionCase(image=image, truth=inside.astype(np.uint8), support=support, slice=index, axis=axis,
                      centre_ras=centre)

