"""Evaluation protocols: which support slices serve which query slices, and what is scored.

A :class:`Case` is one (structure, support volume, query volume) episode: the support
slices, the query slice each of them serves (``assignment``) and the scored query
slices, all along one array axis of (k, j, i) arrays. Three protocols build cases:

1. **FSMIS 1-shot** (SSL-ALPNet, Ouyang et al. 2020; ADNet, Hansen et al. 2022,
   "evaluation protocol 1"): the support volume's structure slices (slices where the
   label is present, in order) give ``n_parts`` supports at the fractions
   1/6, 1/2, 5/6 of that list (``int(fraction * count)``, the reference code's
   arithmetic). The query volume's structure slices are cut into ``n_parts`` equal
   chunks (``numpy.linspace(0, count, n_parts + 1).astype(int)`` boundaries, ADNet's
   code) and chunk *i* is served by support *i*. Every query structure slice is scored.
   Within one volume (our Colin27 scoreboard) the supports come from the same list and
   are left out of the scored slices.
2. **Within-volume propagation**: one support slice of a structure (default the middle
   structure slice), every other structure slice of the same volume is a query,
   served by that support.
3. **Free pairing**: any support (volume, mask, label, slices) against any labelled
   query volume; each query structure slice is served by the support slice nearest in
   relative position along the axis (:func:`SynPoLib.volume.assign_supports`).

Only slices that hold the structure are scored, as in the FSMIS literature: SynPo (the
paper) segments slices known to contain the organ.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ProtocolError
from ..preprocess import labelled_slices
from ..volume import assign_supports

FSMIS = "fsmis"
WITHIN = "within"
PAIR = "pair"
#: quality control: within-volume, the query range reaches past both ends of the structure
QC = "qc"
PROTOCOLS = (FSMIS, WITHIN, PAIR, QC)


@dataclass(frozen=True)
class Case:
    """One evaluation episode."""

    protocol: str
    structure: str
    support_id: str
    query_id: str
    axis: int
    support_label: int
    query_label: int
    support_slices: Tuple[int, ...]
    #: (query slice, support slice) for every scored query slice, ascending
    assignment: Tuple[Tuple[int, int], ...]
    #: cross-validation fold (FSMIS), or None
    fold: Optional[int] = None
    #: free-form provenance shown in reports (e.g. dataset name)
    tags: Tuple[Tuple[str, str], ...] = field(default_factory=tuple)

    @property
    def same_volume(self) -> bool:
        return self.support_id == self.query_id

    @property
    def scored(self) -> List[int]:
        return [q for q, _ in self.assignment]

    @property
    def assignment_map(self) -> Dict[int, int]:
        return dict(self.assignment)

    @property
    def key(self) -> str:
        """Identity of the episode in a result store (stable across runs)."""
        fold = "-" if self.fold is None else str(self.fold)
        # The scored slices and their supports are part of the identity: a run on a
        # subset of slices must never be mistaken for the full case.
        pairs = ",".join(f"{q}:{s}" for q, s in self.assignment)
        digest = hashlib.sha1(pairs.encode()).hexdigest()[:12]
        return (f"{self.protocol}|fold={fold}|{self.structure}|{self.support_id}:{self.support_label}"
                f"->{self.query_id}:{self.query_label}|axis={self.axis}|"
                f"support={','.join(map(str, self.support_slices))}|scored={len(self.assignment)}:{digest}")

    def to_dict(self) -> dict:
        return {"protocol": self.protocol, "structure": self.structure, "support_id": self.support_id,
                "query_id": self.query_id, "axis": self.axis, "support_label": self.support_label,
                "query_label": self.query_label, "support_slices": list(self.support_slices),
                "assignment": [list(p) for p in self.assignment], "fold": self.fold,
                "tags": [list(t) for t in self.tags]}

    @classmethod
    def from_dict(cls, data: dict) -> "Case":
        return cls(protocol=data["protocol"], structure=data["structure"], support_id=data["support_id"],
                   query_id=data["query_id"], axis=int(data["axis"]), support_label=int(data["support_label"]),
                   query_label=int(data["query_label"]),
                   support_slices=tuple(int(s) for s in data["support_slices"]),
                   assignment=tuple((int(q), int(s)) for q, s in data["assignment"]), fold=data.get("fold"),
                   tags=tuple((str(k), str(v)) for k, v in data.get("tags", ())))


def structure_slices(labels: np.ndarray, label: int, axis: int) -> List[int]:
    """Indices along ``axis`` of the slices where ``label`` is present, ascending."""
    labels = np.asarray(labels)
    if labels.ndim != 3:
        raise ValueError(f"label map must be 3-D, got shape {labels.shape}")
    return labelled_slices(labels == label, axis)


def fsmis_fractions(n_parts: int) -> List[float]:
    """Support positions as fractions of the structure-slice list (1/6, 1/2, 5/6 for 3).

    The same arithmetic as SSL-ALPNet's ``get_support`` and ADNet's
    ``get_support_index``, so ``int(fraction * count)`` rounds exactly as theirs does.
    """
    if n_parts < 1:
        raise ValueError("n_parts must be >= 1")
    if n_parts == 1:
        return [0.5]
    half_part = 1 / (n_parts * 2)
    part_interval = (1.0 - 1.0 / n_parts) / (n_parts - 1)
    return [half_part + part_interval * i for i in range(n_parts)]


def fsmis_support_slices(slices: Sequence[int], n_parts: int = 3) -> List[int]:
    """The support slices taken from a structure-slice list."""
    slices = list(slices)
    if len(slices) < n_parts:
        raise ProtocolError(f"the structure spans {len(slices)} slices; the protocol needs at least {n_parts}")
    positions = (np.array(fsmis_fractions(n_parts)) * len(slices)).astype(int)
    return [int(slices[p]) for p in positions]


def fsmis_chunks(slices: Sequence[int], n_parts: int = 3) -> List[List[int]]:
    """A structure-slice list cut into ``n_parts`` consecutive chunks (ADNet's boundaries)."""
    slices = list(slices)
    bounds = np.linspace(0, len(slices), n_parts + 1).astype(int)
    return [[int(s) for s in slices[bounds[i]:bounds[i + 1]]] for i in range(n_parts)]


def fsmis_case(structure: str, support_id: str, support_labels: np.ndarray, query_id: str,
               query_labels: np.ndarray, *, label: int, query_label: Optional[int] = None, axis: int = 0,
               n_parts: int = 3, fold: Optional[int] = None, tags: Sequence[Tuple[str, str]] = ()) -> Case:
    """Protocol 1: supports at 1/6, 1/2, 5/6 of the support's structure slices, query thirds.

    With ``support_id == query_id`` (one volume) the query list is the same structure
    list and the support slices are not scored.
    """
    query_label = label if query_label is None else query_label
    sup_slices = structure_slices(support_labels, label, axis)
    if not sup_slices:
        raise ProtocolError(f"{structure}: label {label} is absent from support volume {support_id}")
    supports = fsmis_support_slices(sup_slices, n_parts)
    if len(set(supports)) != len(supports):
        raise ProtocolError(f"{structure}: support slices {supports} coincide; the structure is too thin")
    qry_slices = structure_slices(query_labels, query_label, axis)
    if not qry_slices:
        raise ProtocolError(f"{structure}: label {query_label} is absent from query volume {query_id}")
    same = support_id == query_id
    assignment = []
    for support, chunk in zip(supports, fsmis_chunks(qry_slices, n_parts)):
        assignment.extend((q, support) for q in chunk if not (same and q in supports))
    if not assignment:
        raise ProtocolError(f"{structure}: no query slice is left to score")
    return Case(protocol=FSMIS, structure=structure, support_id=support_id, query_id=query_id, axis=axis,
                support_label=label, query_label=query_label, support_slices=tuple(supports),
                assignment=tuple(sorted(assignment)), fold=fold, tags=tuple(tags))


def within_volume_case(structure: str, volume_id: str, labels: np.ndarray, *, label: int, axis: int = 0,
                       support_slice: Optional[int] = None, tags: Sequence[Tuple[str, str]] = ()) -> Case:
    """Protocol 2: one support slice (default: the middle structure slice), queries = the rest."""
    slices = structure_slices(labels, label, axis)
    if len(slices) < 2:
        raise ProtocolError(f"{structure}: label {label} spans {len(slices)} slice(s); need at least 2")
    support = slices[len(slices) // 2] if support_slice is None else int(support_slice)
    if support not in slices:
        raise ProtocolError(f"{structure}: support slice {support} does not hold label {label}")
    assignment = tuple((q, support) for q in slices if q != support)
    return Case(protocol=WITHIN, structure=structure, support_id=volume_id, query_id=volume_id, axis=axis,
                support_label=label, query_label=label, support_slices=(support,), assignment=assignment,
                tags=tuple(tags))


def qc_case(structure: str, volume_id: str, labels: np.ndarray, *, label: int, axis: int = 0,
            margin: int = 10, tags: Sequence[Tuple[str, str]] = ()) -> Case:
    """Quality control: the middle structure slice supports every slice from ``margin``
    slices before the structure's first to ``margin`` after its last (clipped to the
    volume), so a method's false-positive slices outside the structure are counted."""
    slices = structure_slices(labels, label, axis)
    if len(slices) < 2:
        raise ProtocolError(f"{structure}: label {label} spans {len(slices)} slice(s); need at least 2")
    support = slices[len(slices) // 2]
    first, last = max(0, slices[0] - margin), min(np.shape(labels)[axis] - 1, slices[-1] + margin)
    assignment = tuple((q, support) for q in range(first, last + 1) if q != support)
    return Case(protocol=QC, structure=structure, support_id=volume_id, query_id=volume_id, axis=axis,
                support_label=label, query_label=label, support_slices=(support,), assignment=assignment,
                tags=tuple(tags))


def pairing_case(structure: str, support_id: str, support_labels: np.ndarray, query_id: str,
                 query_labels: np.ndarray, *, label: int, query_label: Optional[int] = None,
                 support_slices: Optional[Sequence[int]] = None, axis: int = 0,
                 tags: Sequence[Tuple[str, str]] = ()) -> Case:
    """Protocol 3: given support slices (default: the middle structure slice) against a query.

    Each query structure slice is served by the support slice nearest in relative
    position along the axis; support slices are not scored when the volumes are one.
    """
    query_label = label if query_label is None else query_label
    sup_slices = structure_slices(support_labels, label, axis)
    if not sup_slices:
        raise ProtocolError(f"{structure}: label {label} is absent from support volume {support_id}")
    if support_slices is None:
        supports = [sup_slices[len(sup_slices) // 2]]
    else:
        supports = sorted(set(int(s) for s in support_slices))
        missing = [s for s in supports if s not in sup_slices]
        if missing:
            raise ProtocolError(f"{structure}: support slice(s) {missing} do not hold label {label}")
    qry_slices = structure_slices(query_labels, query_label, axis)
    same = support_id == query_id
    queries = [q for q in qry_slices if not (same and q in supports)]
    if not queries:
        raise ProtocolError(f"{structure}: no query slice holds label {query_label} in {query_id}")
    nearest = assign_supports(queries, supports, np.shape(query_labels)[axis], np.shape(support_labels)[axis])
    return Case(protocol=PAIR, structure=structure, support_id=support_id, query_id=query_id, axis=axis,
                support_label=label, query_label=query_label, support_slices=tuple(supports),
                assignment=tuple((q, nearest[q]) for q in queries), tags=tuple(tags))


def relative_position(index: int, extent: Tuple[int, int]) -> float:
    """Where a slice lies within a structure's extent (first, last slice): 0 at the first, 1 at the last.

    Offsets between a query slice and its support in these units compare positions
    across volumes of different length; within one volume they are slice offsets
    divided by the structure's length.
    """
    lo, hi = extent
    return 0.5 if hi == lo else (index - lo) / (hi - lo)


__all__ = ["Case", "FSMIS", "PAIR", "PROTOCOLS", "ProtocolError", "QC", "WITHIN", "qc_case", "fsmis_case",
           "fsmis_chunks",
           "fsmis_fractions", "fsmis_support_slices", "pairing_case", "relative_position", "structure_slices",
           "within_volume_case"]
