"""Files in, files out: runs of SynPo from volumes on disk to Slicer segmentations.

:func:`segment_files` is what ``synpo segment`` does, callable from Python and from
Slicer's Python console with a :class:`SegmentRequest`. :func:`check_request` makes
every check of a run that needs no voxel (:mod:`.validate`), cheap enough to run on
each case of a batch before the first starts. :func:`run_batch` is ``synpo batch``:
a manifest of cases from one labelled example, resumable, on this machine or on Ray,
with a summary worst case first (:class:`BatchRequest`).
"""

from .batch import BatchOutcome, BatchProgress, BatchRequest, batch_results, run_batch
from .manifest import Case, read_manifest
from .segment import SegmentOutcome, SegmentRequest, segment_files
from .validate import CheckedRequest, check_loaded, check_request

__all__ = ["BatchOutcome", "BatchProgress", "BatchRequest", "Case", "CheckedRequest", "SegmentOutcome",
           "SegmentRequest", "batch_results", "check_loaded", "check_request", "read_manifest", "run_batch",
           "segment_files"]
