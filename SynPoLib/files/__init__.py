"""Files in, files out: one run of SynPo from volumes on disk to a Slicer segmentation.

:func:`segment_files` is what ``synpo segment`` does, callable from Python and from
Slicer's Python console with a :class:`SegmentRequest`.
"""

from .segment import SegmentOutcome, SegmentRequest, segment_files

__all__ = ["SegmentOutcome", "SegmentRequest", "segment_files"]
