"""Mode -> how each slice's mask is made: the one table every run dispatches through."""

from __future__ import annotations

from typing import Callable, Dict, Optional

from ..backends.base import Backend
from ..config import Mode, SynPoConfig
from ..errors import InputError
from ..presets import preset
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


def _registration(job: Job, sink: ResultSink) -> None:
    from . import registration

    sink.copy_supports()
    registration.run(job, sink)


#: mode -> run(job, sink): how each slice's mask is made
MODES: Dict[Mode, Callable[[Job, ResultSink], None]] = {
    Mode.SLICES: _slices,
    Mode.PROPAGATE: _propagate,
    Mode.VIDEO: _video(hybrid=False),
    Mode.HYBRID: _video(hybrid=True),
    Mode.REGISTRATION: _registration,
}


def checked_config(backend: Backend, config: Optional[SynPoConfig]) -> SynPoConfig:
    """The run's configuration (the backend's preset when None), refused with one line when
    the backend or the configuration cannot run (before any work)."""
    if not callable(getattr(backend, "encode", None)) or not callable(getattr(backend, "predict", None)):
        raise InputError(f"backend must be a SynPoLib Backend (create_backend('lite')), got {type(backend).__name__}")
    if config is None:
        config = preset(backend.preset)
    if not isinstance(config, SynPoConfig):
        raise InputError(f"config must be a SynPoConfig, got {type(config).__name__}")
    mode = config.propagation.mode
    if mode in (Mode.VIDEO, Mode.HYBRID) and not getattr(getattr(backend, "inner", backend), "video", False):
        raise InputError(f"the {Mode(mode).value} mode runs SAM 2.1's video predictor, which the "
                         f"{backend.name or 'given'} backend does not have: use a sam2 or synpo backend, or the "
                         "slices / propagate mode")
    return config


__all__ = ["MODES", "checked_config"]
