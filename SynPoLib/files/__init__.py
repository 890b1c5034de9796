"""Files in, files out: one run of SynPo from volumes on disk to a Slicer segmentation.

:func:`segment_files` is what ``synpo segment`` does, callable from Python and from
Slicer's Python console with a :class:`SegmentRequest`. :func:`check_request` makes
every check of a run that needs no voxel (:mod:`.validate`), cheap enough to run on
each case of a batch before the first starts.
"""

from .segment import SegmentOutcome, SegmentRequest, segment_files
from .validate import CheckedRequest, check_loaded, check_request

__all__ = ["CheckedRequest", "SegmentOutcome", "SegmentRequest", "check_loaded", "check_request", "segment_files"]
