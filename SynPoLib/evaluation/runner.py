"""Run cases x methods on one backend, score every slice and volume, store the results.

The backend is wrapped in :class:`SynPoLib.backends.cache.CachedBackend` by the caller:
cases are visited one after another and every method of a case runs before the next
case, so a slice is encoded once for all methods (and for both protocols, and for a
left/right pair whose structures share slices) as long as the cache holds a case's
slices. Methods with the same fingerprint (the same effective configuration) are
computed once.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..backends.base import Backend
from ..io import Volume
from ..metrics import score
from ..preprocess import in_plane_spacing, take_slice
from ..resize import resize_nearest
from ..volume import ProgressEvent, Support, segment_volume
from .datasets import Subject
from .methods import COPY, Method, backend_for
from .protocols import Case, relative_position, structure_slices
from .store import ResultStore


class VolumeCache:
    """Loaded subjects, the few most recent kept in memory."""

    def __init__(self, subjects: Mapping[str, Subject], max_items: int = 4) -> None:
        self.subjects = subjects
        self.max_items = max_items
        self._loaded: "OrderedDict[str, Tuple[Volume, np.ndarray]]" = OrderedDict()

    def get(self, subject_id: str) -> Tuple[Volume, np.ndarray]:
        if subject_id not in self._loaded:
            if subject_id not in self.subjects:
                raise KeyError(f"no subject {subject_id!r} was given to the run")
            self._loaded[subject_id] = self.subjects[subject_id].load()
            while len(self._loaded) > self.max_items:
                self._loaded.popitem(last=False)
        self._loaded.move_to_end(subject_id)
        return self._loaded[subject_id]


@dataclass
class RunStats:
    """What a run did: computed and skipped (case, configuration) pairs, n/a methods."""

    computed: int = 0
    skipped: int = 0
    seconds: float = 0.0
    unavailable: Dict[str, str] = field(default_factory=dict)


def _extent(labels: np.ndarray, label: int, axis: int) -> Tuple[int, int]:
    slices = structure_slices(labels, label, axis)
    return slices[0], slices[-1]


def _copy_masks(case: Case, support_mask: np.ndarray, query_shape: Sequence[int]) -> np.ndarray:
    """The copy baseline: each scored slice gets its support slice's mask (resized if needed)."""
    plane = [n for i, n in enumerate(query_shape) if i != case.axis]
    out = np.zeros((len(case.assignment),) + tuple(plane), dtype=bool)
    for n, (_, s) in enumerate(case.assignment):
        mask = np.asarray(take_slice(support_mask, s, case.axis))
        if mask.shape != tuple(plane):
            mask = resize_nearest(mask.astype(np.uint8), tuple(plane)) > 0
        out[n] = mask
    return out


def evaluate_case(case: Case, method: Method, backend: Backend, support: Tuple[Volume, np.ndarray],
                  query: Tuple[Volume, np.ndarray],
                  progress: Optional[Callable[[ProgressEvent], None]] = None) -> Tuple[dict, np.ndarray]:
    """Run one method on one case; returns (store entry, scored slices' masks)."""
    s_image, s_labels = support
    q_image, q_labels = query
    axis = case.axis
    s_mask = s_labels == case.support_label
    reference = q_labels == case.query_label
    scored = case.scored
    started = time.perf_counter()
    records = {}
    if method.kind == COPY:
        masks = _copy_masks(case, s_mask, q_labels.shape)
    else:
        sup = Support(volume=s_image.array, mask=s_mask, slices=list(case.support_slices), axis=axis,
                      spacing=s_image.spacing)
        result = segment_volume(backend_for(method, backend), q_image.array, sup, config=method.config,
                                slices=scored, query_spacing=q_image.spacing, assignment=case.assignment_map,
                                same_volume=case.same_volume, progress=progress)
        masks = np.stack([np.asarray(take_slice(result.mask, q, axis)) > 0 for q in scored])
        records = {r.index: r for r in result.records}
    seconds = time.perf_counter() - started

    plane_spacing = in_plane_spacing(q_image.spacing, axis)
    step = float(q_image.spacing[axis])
    q_extent = _extent(q_labels, case.query_label, axis)
    s_extent = _extent(s_labels, case.support_label, axis)
    slices = []
    for n, (q, s) in enumerate(case.assignment):
        ref = np.asarray(take_slice(reference, q, axis))
        metrics = score(masks[n], ref, plane_spacing)
        row = {"slice": q, "support_slice": s,
               "offset": q - s if case.same_volume else None,
               "offset_mm": (q - s) * step if case.same_volume else None,
               "relative_offset": relative_position(q, q_extent) - relative_position(s, s_extent),
               "dice": metrics.dice, "hd95_mm": metrics.hd95, "assd_mm": metrics.assd,
               "pred_pixels": metrics.pred_voxels, "ref_pixels": metrics.ref_voxels}
        rec = records.get(q)
        if rec is not None:
            row.update({"score": rec.score, "iou": rec.iou, "points": np.round(rec.points, 2).tolist(),
                        "labels": rec.labels.tolist(),
                        "box": None if rec.box is None else np.round(rec.box, 2).tolist(),
                        # the method's own work; the encoder pass is shared by all methods
                        "seconds": round(sum(v for k, v in rec.timings.items() if k != "encode"), 5),
                        "encode_seconds": round(rec.timings.get("encode", 0.0), 5), "notes": list(rec.notes)})
        slices.append(row)

    # Volume metrics on the scored slices only: everything else is blanked in both.
    pred_volume = np.zeros(reference.shape, dtype=bool)
    ref_volume = np.zeros(reference.shape, dtype=bool)
    where = [slice(None)] * 3
    for n, q in enumerate(scored):
        where[axis] = q
        pred_volume[tuple(where)] = masks[n]
        ref_volume[tuple(where)] = reference[tuple(where)]
    volume = score(pred_volume, ref_volume, q_image.spacing)
    entry = {
        "case_key": case.key, "fingerprint": method.fingerprint(backend), "case": case.to_dict(),
        "method": method.name, "backend": backend.name,
        "config": None if method.kind == COPY else method.config.to_dict(),
        "seconds": round(seconds, 4),
        "volume": {"dice": volume.dice, "hd95_mm": volume.hd95, "assd_mm": volume.assd,
                   "pred_voxels": volume.pred_voxels, "ref_voxels": volume.ref_voxels, "n_slices": len(scored)},
        "slices": slices,
    }
    return entry, masks


def run_cases(cases: Sequence[Case], methods: Sequence[Method], backend: Backend,
              subjects: Mapping[str, Subject], store: ResultStore, *,
              progress: Optional[Callable[[int, str], None]] = None,
              log: Callable[[str], None] = lambda msg: None) -> RunStats:
    """Evaluate every available method on every case, skipping what ``store`` holds.

    ``progress(n_slices, label)`` is called after each segmented (or copied) slice batch.
    """
    stats = RunStats()
    for method in methods:
        reason = method.unavailable(backend)
        if reason:
            stats.unavailable[method.name] = reason
    runnable = [m for m in methods if m.name not in stats.unavailable]
    volumes = VolumeCache(subjects)
    started = time.perf_counter()
    for case in cases:
        done_here = set()
        for method in runnable:
            if not method.runs_on(case.protocol):
                continue
            fingerprint = method.fingerprint(backend)
            if fingerprint in done_here or store.has(case.key, fingerprint):
                stats.skipped += 1
                continue
            label = f"{case.protocol} {case.structure} {method.name}"

            def on_slice(event: ProgressEvent, label=label) -> None:
                if progress is not None:
                    progress(1, label)

            entry, masks = evaluate_case(case, method, backend, volumes.get(case.support_id),
                                         volumes.get(case.query_id), progress=on_slice)
            if method.kind == COPY and progress is not None:
                progress(len(case.assignment), label)
            store.add(entry, masks)
            done_here.add(fingerprint)
            stats.computed += 1
            log(f"{label}: Dice {entry['volume']['dice']:.3f} ({entry['seconds']:.1f} s)")
    stats.seconds = time.perf_counter() - started
    return stats


def pending_slices(cases: Sequence[Case], methods: Sequence[Method], backend: Backend,
                   store: ResultStore) -> int:
    """How many slices a run still has to process (for the progress bar's total)."""
    total = 0
    for case in cases:
        seen = set()
        for method in methods:
            if method.unavailable(backend) or not method.runs_on(case.protocol):
                continue
            fingerprint = method.fingerprint(backend)
            if fingerprint in seen or store.has(case.key, fingerprint):
                continue
            seen.add(fingerprint)
            total += len(case.assignment)
    return total


__all__ = ["RunStats", "VolumeCache", "evaluate_case", "pending_slices", "run_cases"]
