"""Files in, files out: runs of SynPo from volumes on disk to Slicer segmentations.

:func:`segment_files` is what ``synpo segment`` does, callable from Python and from
Slicer's Python console with a :class:`SegmentRequest`; :func:`run_batch` is ``synpo
batch``: a manifest of cases from one labelled example, resumable, on this machine or
on Ray, with a summary worst case first (:class:`BatchRequest`).
"""

from .batch import BatchOutcome, BatchProgress, BatchRequest, batch_results, run_batch
from .manifest import Case, read_manifest
from .segment import SegmentOutcome, SegmentRequest, segment_files

__all__ = ["BatchOutcome", "BatchProgress", "BatchRequest", "Case", "SegmentOutcome", "SegmentRequest",
           "batch_results", "read_manifest", "run_batch", "segment_files"]
