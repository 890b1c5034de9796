"""The volume driver: SynPo on every query slice of a volume, in one of several modes.

:func:`segment_volume` checks the inputs once (:class:`~.types.Job`), hands every
slice's result to one :class:`~.sink.ResultSink` (output array, records, progress,
acceptance, auto-stop), and lets the configured mode say how each slice's mask is made:

==============  ==========================================================  ======================
mode            how a slice's mask is made                                  module
==============  ==========================================================  ======================
``slices``      SynPo from the support slice, every slice on its own (the   :mod:`.slices`
                paper)
``propagate``   also prompted from the previous slice's result              :mod:`.propagate`
``video``       SAM 2.1's video predictor, the volume as a video            :mod:`.video`
``hybrid``      the video predictor plus SynPo's points on every frame      :mod:`.video`
``registration`` the support's mask carried slice to slice by deformable     :mod:`.registration`
                registration, refined by a random walker; SynPo's
                similarity decides where the structure ends
==============  ==========================================================  ======================

Several structures in one run, sharing the encoder pass of every slice, with no pixel
claimed twice: :func:`segment_structures` (:mod:`.structures`). A re-run after the user
corrected slices, recomputing only what the corrections can change: :mod:`.corrections`.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np

from ..backends.base import Backend
from ..config import SynPoConfig
from ..errors import Cancelled
from .modes import MODES, checked_config
from .sink import ResultSink
from .structures import (ConflictRule, Structure, StructuresConfig, StructuresResult, segment_structures,
                         structures_from_labelmap)
from .types import (CancelCheck, Chain, Job, ProgressCallback, ProgressEvent, SliceRecord, SliceSelection, Support,
                    VolumeResult, assign_supports, check_query, outward_chains, resolve_slices, should_stop)


def segment_volume(backend: Backend, query: np.ndarray, support: Support, *,
                   config: Optional[SynPoConfig] = None,
                   slices: SliceSelection = None,
                   query_spacing: Optional[Sequence[float]] = None,
                   query_window: Optional[Tuple[float, float]] = None,
                   assignment: Optional[Mapping[int, int]] = None,
                   same_volume: Optional[bool] = None,
                   batch_size: int = 1,
                   progress: ProgressCallback = None,
                   cancel: CancelCheck = None,
                   query_origin: Optional[Sequence[float]] = None,
                   query_direction: Optional[Sequence[float]] = None) -> VolumeResult:
    """Segment ``query`` slice by slice along ``support.axis``, in the configured mode.

    ``config`` defaults to the preset measured for the backend (``backend.preset``).
    ``slices``: the query slices (None: all; a ``(start, stop)`` pair: a half-open range).
    ``assignment``: query slice -> support slice (default: the nearest support).
    ``same_volume`` (default: ``query is support.volume``) makes the labelled support
    slices part of the result as labelled instead of re-segmenting them. A cancelled
    run raises :class:`~SynPoLib.errors.Cancelled`; the inputs are never written to.

    A support in another volume: the registration mode starts from a 3-D affine
    registration of the support volume onto the query, in physical space when
    ``support.origin`` / ``support.direction`` and ``query_origin`` / ``query_direction``
    (LPS mm, SimpleITK's conventions) are given, else with both volumes at the origin;
    the other modes place supports by relative position along the axis.
    """
    config = checked_config(backend, config)
    job = Job.build(backend, query, support, config, slices=slices, query_spacing=query_spacing,
                    query_window=query_window, assignment=assignment, same_volume=same_volume,
                    batch_size=batch_size, query_origin=query_origin, query_direction=query_direction)
    sink = ResultSink(job, progress, cancel)
    MODES[config.propagation.mode](job, sink)
    return sink.result()


def __getattr__(name: str):
    # the video mode needs sam2: loaded when asked for, not with the package
    if name in ("segment_volume_video", "VideoConfig", "VideoSliceRecord"):
        from . import video

        return getattr(video, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["CancelCheck", "Cancelled", "Chain", "ConflictRule", "Job", "MODES", "ProgressEvent", "SliceRecord",
           "Structure", "StructuresConfig", "StructuresResult", "Support", "VolumeResult", "assign_supports",
           "check_query", "outward_chains", "resolve_slices", "segment_structures", "segment_volume", "should_stop",
           "structures_from_labelmap"]
