"""SynPoLib: training-free one-shot segmentation of a structure in a volume (SynPo).

Three lines from arrays to a mask::

    from SynPoLib import Support, create_backend, segment_volume
    support = Support(volume=vol, mask=labels == 77, slices=[80], axis=0)
    result = segment_volume(create_backend("lite"), vol, support)   # result.mask: uint8, vol's shape

The names below are imported on first use (PEP 562), so ``import SynPoLib.scene`` or
``SynPoLib.backends.requirements`` does not pull in torch, scipy or scikit-learn: the 3D
Slicer module checks and installs those on first use, after it has loaded.

The packages, each importing only from the ones before it:

- ``errors``, ``config``, ``presets``: the error family, the typed configuration, the
  measured presets and how edits apply to them;
- ``io``, ``metrics``, ``figures``, ``resize``, ``preprocess``, ``overlay``: leaves
  (files, scores, pictures, slices and intensity windows);
- ``backends``: the models behind one seam, their weights, devices and requirements;
- ``method``: the paper on one slice (CMSM, PSM, NRM, prompts, the segmenter);
- ``volume``: every slice of a volume, in one of several modes, into one result sink;
- ``scene``: the 3D Slicer adapter (MRML nodes in, a segment out);
- ``evaluation``: protocols, baselines, the scoreboard;
- ``cli``: the ``synpo`` command (nothing imports it).
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
    "SliceResult": "method.segmenter", "SynPoSegmenter": "method.segmenter",
    "Cancelled": "errors", "InputError": "errors", "SynPoError": "errors",
    "ProgressEvent": "volume", "SliceRecord": "volume", "Support": "volume",
    "VolumeResult": "volume", "assign_supports": "volume", "segment_volume": "volume",
    "ConflictRule": "volume", "Structure": "volume", "StructuresConfig": "volume", "StructuresResult": "volume",
    "segment_structures": "volume", "structures_from_labelmap": "volume",
    "Correction": "volume.corrections", "plan_correction": "volume.corrections", "rerun": "volume.corrections",
    "AugmentConfig": "volume.augment", "VideoConfig": "volume.video", "segment_volume_video": "volume.video",
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
