"""Files in and out: volumes through SimpleITK, segmentations as Slicer's ``.seg.nrrd``.

Geometry is kept exactly: arrays are (k, j, i) as SimpleITK gives them, and the written
segmentation carries the query image's IJK-to-LPS matrix (origin, spacing, direction),
so 3D Slicer places every voxel where it belongs in any orientation. Writes go to a
temporary file that is renamed at the end: a failed run leaves no partial file.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence, Tuple

import numpy as np
import SimpleITK as sitk

from .config import DEFAULT_COLOR
from .errors import InputError


@dataclass(frozen=True)
class Volume:
    """A 3-D image as a (k, j, i) array plus its physical geometry (LPS, as SimpleITK)."""

    array: np.ndarray
    #: spacing in array order (k, j, i)
    spacing: Tuple[float, float, float]
    origin: Tuple[float, float, float]
    #: 3x3 direction matrix, row-major as SimpleITK's GetDirection
    direction: Tuple[float, ...]
    path: Optional[str] = None

    @property
    def ijk_to_lps(self) -> np.ndarray:
        """4x4 matrix from voxel (i, j, k) to LPS millimetres."""
        spacing_ijk = np.asarray(self.spacing[::-1], dtype=float)
        matrix = np.eye(4)
        matrix[:3, :3] = np.asarray(self.direction, dtype=float).reshape(3, 3) * spacing_ijk[None, :]
        matrix[:3, 3] = self.origin
        return matrix

    def to_image(self, array: Optional[np.ndarray] = None) -> sitk.Image:
        """A SimpleITK image with this geometry (and this or another array of the same shape)."""
        data = self.array if array is None else array
        if data.shape != self.array.shape:
            raise ValueError(f"array shape {data.shape} differs from the volume's {self.array.shape}")
        image = sitk.GetImageFromArray(data)
        image.SetSpacing(tuple(float(s) for s in self.spacing[::-1]))
        image.SetOrigin(tuple(float(o) for o in self.origin))
        image.SetDirection(tuple(float(d) for d in self.direction))
        return image

    @classmethod
    def from_image(cls, image: sitk.Image, path: Optional[str] = None) -> "Volume":
        if image.GetDimension() != 3:
            raise InputError(f"{path or 'image'}: expected a 3-D volume, got {image.GetDimension()}-D")
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError(f"{path or 'image'}: expected one value per voxel (a grey volume), "
                             f"got {image.GetNumberOfComponentsPerPixel()}")
        return cls(array=sitk.GetArrayFromImage(image), spacing=tuple(image.GetSpacing()[::-1]),
                   origin=tuple(image.GetOrigin()), direction=tuple(image.GetDirection()), path=path)


def read_volume(path: os.PathLike) -> Volume:
    """Read NIfTI, NRRD, MHA (anything SimpleITK reads) with a one-line error on failure."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"file not found: {path}")
    if path.is_dir():
        raise InputError(f"expected a file, got a folder: {path}")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), "unknown error")
        raise InputError(f"cannot read {path} as an image (NIfTI, NRRD, MHA): {first[:200]}") from exc
    return Volume.from_image(image, str(path))


def same_geometry(a: Volume, b: Volume, tolerance: float = 1e-4) -> Optional[str]:
    """None when two volumes share a voxel grid, else what differs (for the error message)."""
    if a.array.shape != b.array.shape:
        return f"size {a.array.shape[::-1]} vs {b.array.shape[::-1]}"
    for name in ("spacing", "origin", "direction"):
        va, vb = np.asarray(getattr(a, name)), np.asarray(getattr(b, name))
        scale = max(1.0, float(np.abs(va).max()))
        if np.abs(va - vb).max() > tolerance * scale:
            return f"{name} {tuple(np.round(va, 4))} vs {tuple(np.round(vb, 4))}"
    return None


@contextmanager
def atomic_path(path: os.PathLike) -> Iterator[Path]:
    """A temporary path beside ``path`` that replaces it only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600 files; results get the permissions of any new file
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def segmentation_dict(mask: np.ndarray, reference: Volume, name: str = "SynPo",
                      color: Sequence[float] = DEFAULT_COLOR, segment_id: Optional[str] = None) -> dict:
    """slicerio's segmentation structure for one binary segment on the reference grid."""
    import slicerio

    mask = np.asarray(mask)
    if mask.shape != reference.array.shape:
        raise ValueError(f"mask shape {mask.shape} differs from the reference volume's {reference.array.shape}")
    ijk = np.transpose(mask > 0, (2, 1, 0))  # (k, j, i) -> (i, j, k)
    seg = slicerio.create_segmentation(ijk.shape, reference.ijk_to_lps)
    slicerio.add_segment(seg, ijk, {"id": segment_id or name.replace(" ", "_"), "name": name,
                                     "color": [float(c) for c in color]})
    seg["containedRepresentationNames"] = ["Binary labelmap"]
    seg["masterRepresentation"] = "Binary labelmap"
    return seg


def write_segmentation(path: os.PathLike, mask: np.ndarray, reference: Volume, name: str = "SynPo",
                       color: Sequence[float] = DEFAULT_COLOR) -> Path:
    """Write a one-segment ``.seg.nrrd`` that Slicer opens on the reference volume's grid."""
    import slicerio

    seg = segmentation_dict(mask, reference, name=name, color=color)
    with atomic_path(path) as tmp:
        slicerio.write_segmentation(str(tmp), seg)
    return Path(path)


def write_labelmap(path: os.PathLike, mask: np.ndarray, reference: Volume, label: int = 1) -> Path:
    """Write the mask as a labelmap image (NIfTI, NRRD, ...) on the reference grid."""
    data = (np.asarray(mask) > 0).astype(np.uint8) * np.uint8(label)
    with atomic_path(path) as tmp:
        sitk.WriteImage(reference.to_image(data), str(tmp), True)
    return Path(path)
