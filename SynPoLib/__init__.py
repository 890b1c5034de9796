"""SynPoLib: training-free one-shot segmentation of a structure in a volume (SynPo).

Three lines from arrays to a mask::

    from SynPoLib import Support, create_backend, segment_volume
    support = Support(volume=vol, mask=labels == 77, slices=[80], axis=0)
    result = segment_volume(create_backend("lite"), vol, support)   # result.mask: uint8, vol's shape
"""

from .backends import Backend, create_backend
from .config import (GeometryConfig, MaskChoice, PointConfig, PointMethod, PromptConfig, PromptStrategy,
                     PrototypeForm, QualityConfig, RefineConfig, SynergyConfig, SynPoConfig, WindowConfig)
from .presets import PRESETS, preset
from .segmenter import SliceResult, SynPoSegmenter
from .volume import (Cancelled, ProgressEvent, SliceRecord, Support, VolumeResult, assign_supports,
                     segment_volume)

__version__ = "0.1.0"

__all__ = [
    "Backend", "Cancelled", "PRESETS", "preset", "GeometryConfig", "MaskChoice", "PointConfig", "PointMethod",
    "ProgressEvent", "PromptConfig", "PromptStrategy", "PrototypeForm", "QualityConfig",
    "RefineConfig", "SliceRecord", "SliceResult", "Support", "SynPoConfig", "SynPoSegmenter",
    "SynergyConfig", "VolumeResult", "WindowConfig", "assign_supports", "create_backend",
    "segment_volume",
]
