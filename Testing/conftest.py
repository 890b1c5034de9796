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


@pytest.fixture(scope="module")
def sitk_one_thread():
    """SimpleITK on one thread for a module (registration timings and results stay
    those of one core on a shared machine), restored after it."""
    import SimpleITK as sitk

    before = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    yield
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(before)


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


@pytest.fixture(scope="session")
def batch_cohort(tmp_path_factory):
    """Four small real volumes for batch runs, and two broken files.

    Colin27 crops (2 slices of 48 x 48 voxels through the left thalamus, AAL label 77)
    at two offsets, with their AAL crops as references, and the nilearn MNI152 T1
    cropped at the same physical places (no reference: a cohort scan). The support is
    ``colin_a`` with its AAL labels, labelled on slice 0. ``broken`` is ``mni_a`` cut in
    half (a download that stopped); ``blank`` is a readable NRRD with no finite voxel.
    """
    import SimpleITK as sitk
    from nilearn.datasets import load_mni152_template

    folder = tmp_path_factory.mktemp("cohort")
    t1, atlas = TEMPLATES / "ch2.nii.gz", TEMPLATES / "aal.nii.gz"
    assert t1.is_file() and atlas.is_file(), "real test data missing; run: apt-get install mricron-data"
    colin, aal = sitk.ReadImage(str(t1)), sitk.ReadImage(str(atlas))
    mni_file = folder / "mni152.nii.gz"
    load_mni152_template(resolution=1).to_filename(str(mni_file))
    mni = sitk.ReadImage(str(mni_file))
    paths = {}
    for name, (i0, j0, k0) in {"a": (55, 83, 80), "b": (57, 85, 81)}.items():
        region = (slice(i0, i0 + 48), slice(j0, j0 + 48), slice(k0, k0 + 2))  # SimpleITK indexes (i, j, k)
        for key, image in (("colin", colin), ("aal", aal)):
            paths[f"{key}_{name}"] = folder / f"{key}_{name}.nii.gz"
            sitk.WriteImage(image[region], str(paths[f"{key}_{name}"]))
        corner = mni.TransformPhysicalPointToIndex(colin.TransformIndexToPhysicalPoint((i0, j0, k0)))
        mi, mj, mk = corner
        paths[f"mni_{name}"] = folder / f"mni_{name}.nii.gz"
        sitk.WriteImage(mni[mi:mi + 48, mj:mj + 48, mk:mk + 2], str(paths[f"mni_{name}"]))
    data = paths["mni_a"].read_bytes()
    paths["broken"] = folder / "broken.nii.gz"
    paths["broken"].write_bytes(data[: len(data) // 2])
    blank = sitk.Image(48, 48, 2, sitk.sitkFloat32) + float("nan")
    blank.CopyInformation(sitk.ReadImage(str(paths["mni_a"])))
    paths["blank"] = folder / "blank.nrrd"
    sitk.WriteImage(blank, str(paths["blank"]))
    paths["folder"] = folder
    return paths


#: the batch cohort's cases: (name, query, reference) keys of ``batch_cohort``
BATCH_CASES = (("colin_a", "colin_a", "aal_a"), ("colin_b", "colin_b", "aal_b"), ("mni_a", "mni_a", None),
               ("mni_b", "mni_b", None))


def batch_manifest(path, cohort, cases=BATCH_CASES, extra=()):
    """A CSV manifest of ``cases`` ((name, query key, reference key or None)) and ``extra``
    ((name, query path)) rows; returns its path."""
    lines = ["output,query,reference"]
    lines += [f"{name},{cohort[q]},{cohort[r] if r else ''}" for name, q, r in cases]
    lines += [f"{name},{query}," for name, query in extra]
    path.write_text("\n".join(lines) + "\n")
    return path


def batch_shared(cohort, **more):
    """The shared support of the batch cohort: colin_a's AAL thalamus on slice 0."""
    return {"support": str(cohort["colin_a"]), "support_mask": str(cohort["aal_a"]), "support_slice": [0],
            "label": 77, "backend": "lite", **more}
