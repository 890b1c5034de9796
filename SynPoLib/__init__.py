"""SynPoLib: training-free one-shot segmentation of a structure in a volume (SynPo).

Three lines from arrays to a mask::

    from SynPoLib import Support, create_backend, segment_volume
    support = Support(volume=vol, mask=labels == 77, slices=[80], axis=0)
    result = segment_volume(create_backend("lite"), vol, support)   # result.mask: uint8, vol's shape

The names below are imported on first use (PEP 562), so ``import SynPoLib.mrml`` or
``SynPoLib.dependencies`` does not pull in torch, scipy or scikit-learn: the 3D Slicer
module checks and installs those on first use, after it has loaded.
"""

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

#: public name -> submodule that defines it
_EXPORTS = {
    "Backend": "backends", "create_backend": "backends",
    "GeometryConfig": "config", "MaskChoice": "config", "PointConfig": "config", "PointMethod": "config",
    "PromptConfig": "config", "PromptStrategy": "config", "PrototypeForm": "config",
    "QualityConfig": "config", "RefineConfig": "config", "SynergyConfig": "config",
    "SynPoConfig": "config", "WindowConfig": "config",
    "PRESETS": "presets", "preset": "presets",
    "SliceResult": "segmenter", "SynPoSegmenter": "segmenter",
    "Cancelled": "volume", "ProgressEvent": "volume", "SliceRecord": "volume", "Support": "volume",
    "VolumeResult": "volume", "assign_supports": "volume", "segment_volume": "volume",
    "AugmentConfig": "augment", "VideoConfig": "video", "segment_volume_video": "video",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'SynPoLib' has no attribute {name!r}")
    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
