"""Labelled data the harness reads: the FSMIS benchmarks' published layouts and Colin27 + AAL.

FSMIS benchmarks (as preprocessed and published with SSL-ALPNet, and read the same way
by ADNet and its successors): one folder of ``image_<id>.nii.gz`` / ``label_<id>.nii.gz``
pairs, ids sorted as integers, slices along the array's first axis (axial).

- Synapse-CT ("SABS"), folder ``sabs_CT_normalized``: 30 scans, the abdominal window
  [-125, 275] HU already applied and rescaled to [0, 255] by the preprocessing, so
  the window here is (0, 255). Labels: spleen 1, right kidney 2, left kidney 3, liver 6.
- CHAOS-T2 (T2-SPIR), folder ``chaos_MR_T2_normalized``: 20 scans. Labels: liver 1,
  right kidney 2, left kidney 3, spleen 4. MRI: the volume's own percentile window.

Folds are ADNet's published split (``dataset_specifics.get_folds``), indices into the
sorted scan list; within a fold the last scan (in index order) is the support and the
others are the queries, as ADNet's ``TestDataset`` does. Note fold 4 wraps around:
CHAOS {0, 16, 17, 18, 19}, support = scan index 19 (SSL-ALPNet's circular split would
pick index 0 instead; SynPo follows ADNet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..io import InputError, Volume, read_volume, same_geometry
from .protocols import Case, fsmis_case

#: Debian's mricron-data
TEMPLATES = Path("/usr/share/mricron/templates")
COLIN_T1 = TEMPLATES / "ch2.nii.gz"
AAL_ATLAS = TEMPLATES / "aal.nii.gz"
AAL_NAMES = TEMPLATES / "aal.nii.txt"

#: the scoreboard's AAL structures: deep grey nuclei, mesial temporal, cortex, cerebellum,
#: small and large, high and low contrast, as left/right pairs
SCOREBOARD_STRUCTURES = (
    "Thalamus_L", "Thalamus_R", "Caudate_L", "Caudate_R", "Putamen_L", "Putamen_R",
    "Pallidum_L", "Pallidum_R", "Hippocampus_L", "Hippocampus_R", "Amygdala_L", "Amygdala_R",
    "Insula_L", "Insula_R", "Cerebelum_Crus1_L", "Cerebelum_Crus1_R",
)


@dataclass(frozen=True)
class Subject:
    """A labelled volume on disk: an image and its label map on the same voxel grid."""

    id: str
    image: Path
    labels: Path

    def load(self) -> Tuple[Volume, np.ndarray]:
        """(image volume, label array); the label map must share the image's grid."""
        image = read_volume(self.image)
        labels = read_volume(self.labels)
        problem = same_geometry(image, labels)
        if problem:
            raise InputError(f"{self.labels} is not on the grid of {self.image}: {problem}")
        return image, np.asarray(labels.array)


@dataclass(frozen=True)
class FSMISDataset:
    """One FSMIS benchmark's published layout and protocol constants."""

    key: str
    title: str
    folder: str
    #: structure name -> label value
    structures: Mapping[str, int]
    n_scans: int
    #: per fold, indices into the scan list sorted by id
    folds: Tuple[Tuple[int, ...], ...]
    #: intensity window of the published files; None: the MRI percentile default
    window: Optional[Tuple[float, float]]

    def split(self, fold: int) -> Tuple[int, List[int]]:
        """(support index, query indices) of a fold: the last index of the fold is the support."""
        if not 0 <= fold < len(self.folds):
            raise InputError(f"{self.title} has folds 0..{len(self.folds) - 1}, got {fold}")
        indices = sorted(self.folds[fold])
        return indices[-1], indices[:-1]


def _adnet_folds(width: int, n_scans: int) -> Tuple[Tuple[int, ...], ...]:
    """ADNet's overlapping folds: [w*k, w*k + w] for k < 4, the last wrapping to scan 0."""
    folds = [tuple(range(width * k, width * k + width + 1)) for k in range(4)]
    folds.append(tuple(range(width * 4, n_scans)) + (0,))
    return tuple(folds)


DATASETS: Dict[str, FSMISDataset] = {
    "synapse": FSMISDataset(
        key="synapse", title="Synapse-CT", folder="sabs_CT_normalized",
        structures={"spleen": 1, "kidney_r": 2, "kidney_l": 3, "liver": 6}, n_scans=30,
        folds=_adnet_folds(6, 30), window=(0.0, 255.0)),
    "chaos": FSMISDataset(
        key="chaos", title="CHAOS-T2", folder="chaos_MR_T2_normalized",
        structures={"liver": 1, "kidney_r": 2, "kidney_l": 3, "spleen": 4}, n_scans=20,
        folds=_adnet_folds(4, 20), window=None),
}

_IMAGE_NAME = re.compile(r"^image_(\d+)\.nii(\.gz)?$")


def find_scans(root: Path, dataset: FSMISDataset) -> List[Subject]:
    """The dataset's scans in ``root`` (or ``root/<folder>``), sorted by integer id."""
    root = Path(root)
    folder = root / dataset.folder if (root / dataset.folder).is_dir() else root
    if not folder.is_dir():
        raise InputError(f"{dataset.title} data folder not found: {root}")
    found = []
    for path in folder.iterdir():
        match = _IMAGE_NAME.match(path.name)
        if match:
            found.append((int(match.group(1)), path, match.group(2) or ""))
    if not found:
        raise InputError(f"no image_<id>.nii.gz files in {folder}: expected the published {dataset.title} "
                         f"layout ({dataset.folder}/image_<id>.nii.gz + label_<id>.nii.gz)")
    found.sort()
    if len(found) != dataset.n_scans:
        raise InputError(f"{folder} holds {len(found)} scans; the published {dataset.title} layout has "
                         f"{dataset.n_scans}, and the fold split is defined on that list")
    subjects = []
    for scan_id, image, gz in found:
        labels = folder / f"label_{scan_id}.nii{gz}"
        if not labels.is_file():
            raise InputError(f"label file missing for {image.name}: expected {labels}")
        subjects.append(Subject(id=f"{dataset.key}/image_{scan_id}", image=image, labels=labels))
    return subjects


def resolve_structures(names: Optional[Sequence[str]], known: Mapping[str, int]) -> Dict[str, int]:
    """Structure names (case-insensitive) to label values; None selects all of ``known``."""
    if not names:
        return dict(known)
    lower = {k.lower(): k for k in known}
    out = {}
    for name in names:
        key = lower.get(name.lower())
        if key is None:
            shown = ", ".join(sorted(known)[:20]) + (" ..." if len(known) > 20 else "")
            raise InputError(f"unknown structure {name!r}; known: {shown}")
        out[key] = known[key]
    return out


def fsmis_cases(dataset: FSMISDataset, subjects: Sequence[Subject], folds: Sequence[int],
                structures: Mapping[str, int], load_labels: Callable[[Subject], np.ndarray],
                n_parts: int = 3) -> List[Case]:
    """Protocol-1 cases of the given folds: every query scan against its fold's support."""
    cases = []
    for fold in folds:
        support_index, query_indices = dataset.split(fold)
        support = subjects[support_index]
        support_labels = load_labels(support)
        for q in query_indices:
            query = subjects[q]
            query_labels = load_labels(query)
            for name, label in structures.items():
                cases.append(fsmis_case(name, support.id, support_labels, query.id, query_labels, label=label,
                                        axis=0, n_parts=n_parts, fold=fold, tags=(("dataset", dataset.title),)))
    return cases


def aal_labels(path: Path = AAL_NAMES) -> Dict[str, int]:
    """AAL structure names to label values, from mricron's ``aal.nii.txt`` ("77 Thalamus_L 7101")."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"AAL label names missing: {path}; install them with: apt-get install mricron-data")
    out = {}
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0].isdigit():
            out[parts[1]] = int(parts[0])
    if not out:
        raise InputError(f"{path} lists no AAL label")
    return out


def colin_subject() -> Subject:
    """Colin27 T1 with the AAL atlas on its grid (Debian ``mricron-data``)."""
    missing = [str(p) for p in (COLIN_T1, AAL_ATLAS) if not p.is_file()]
    if missing:
        raise InputError(f"Colin27 / AAL missing: {', '.join(missing)}; install them with: "
                         "apt-get install mricron-data")
    return Subject(id="colin27", image=COLIN_T1, labels=AAL_ATLAS)


__all__ = ["AAL_ATLAS", "AAL_NAMES", "COLIN_T1", "DATASETS", "FSMISDataset", "SCOREBOARD_STRUCTURES", "Subject",
           "aal_labels", "colin_subject", "find_scans", "fsmis_cases", "resolve_structures"]
