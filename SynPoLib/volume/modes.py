"""Mode -> how each slice's mask is made: the one table every run dispatches through."""

from __future__ import annotations

from typing import Callable, Dict

from ..config import Mode
from .sink import ResultSink
from .types import Job


def _video(hybrid: bool) -> Callable[[Job, ResultSink], None]:
    def run(job: Job, sink: ResultSink) -> None:
        try:
            from . import video
        except ImportError as exc:
            raise ValueError(f"the {'hybrid' if hybrid else 'video'} mode needs SAM2's video predictor "
                             f"(the sam2 package): {exc}") from exc
        video.run(job, sink, video.VideoOptions(hybrid=hybrid))
    return run


def _slices(job: Job, sink: ResultSink) -> None:
    from . import slices

    sink.copy_supports()
    slices.run(job, sink)


def _propagate(job: Job, sink: ResultSink) -> None:
    from . import propagate

    sink.copy_supports()
    propagate.run(job, sink)


#: mode -> run(job, sink): how each slice's mask is made
MODES: Dict[Mode, Callable[[Job, ResultSink], None]] = {
    Mode.SLICES: _slices,
    Mode.PROPAGATE: _propagate,
    Mode.VIDEO: _video(hybrid=False),
    Mode.HYBRID: _video(hybrid=True),
}


__all__ = ["MODES"]
