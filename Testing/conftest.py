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
