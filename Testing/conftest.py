"""Shared fixtures. Tests run against the checkout (not an installed copy)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: real labelled data from Debian's mricron-data (installed by the test set-up)
TEMPLATES = Path("/usr/share/mricron/templates")


@pytest.fixture(scope="session")
def colin():
    """Colin27 T1 and the AAL atlas as (k, j, i) arrays; fails (never skips) when missing."""
    import SimpleITK as sitk

    t1, atlas = TEMPLATES / "ch2.nii.gz", TEMPLATES / "aal.nii.gz"
    missing = [str(p) for p in (t1, atlas) if not p.is_file()]
    assert not missing, f"real test data missing: {missing}; run: apt-get install mricron-data"
    vol = sitk.GetArrayFromImage(sitk.ReadImage(str(t1))).astype(np.float32)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(str(atlas)))
    return vol, lab


@pytest.fixture(scope="session")
def lite_backend():
    """The real LiteMedSAM with its bundled weights, built once per test session."""
    from SynPoLib.backends import create_backend

    return create_backend("lite")


def ellipsoid_volume(shape=(16, 20, 24), centre=None, radii=None, seed=0):
    """A textured MRI-like volume with one bright ellipsoid: (volume float32, mask bool).

    Slices through the ellipsoid show a bright blob on a darker textured background,
    which a SAM-family model segments from a box without any doubt about the answer.
    """
    rng = np.random.default_rng(seed)
    shape = tuple(shape)
    centre = np.array(centre if centre is not None else [(n - 1) / 2 for n in shape], float)
    radii = np.array(radii if radii is not None else [n * 0.3 for n in shape], float)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    mask = (((grid - centre) / radii) ** 2).sum(-1) <= 1.0
    volume = 60 + 10 * rng.standard_normal(shape)
    volume[mask] = 200 + 5 * rng.standard_normal(int(mask.sum()))
    return volume.astype(np.float32), mask


@pytest.fixture
def blob():
    return ellipsoid_volume()
