"""The backend seam: one object per model family.

A backend turns an R x R uint8 RGB slice into an :class:`EncodedSlice` (feature grids
for the synergy map plus whatever its mask decoder needs) in ONE encoder pass, and
turns prompts on that encoded slice into masks. SynPo never encodes a slice twice: the
same :class:`EncodedSlice` serves the confidence map, every decoder call of the refine
rounds, and the mask scoring.

All coordinates are on the R x R ROI: points (x, y), boxes (x0, y0, x1, y1) in pixels,
masks and logits R x R, low-resolution logits at the decoder's mask-prompt size.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

#: feature names: the SAM image encoder's grid, and DINOv2's patch tokens
SAM = "sam"
DINO = "dino"


@dataclass
class EncodedSlice:
    """One slice after the encoder pass."""

    #: backbone name ("sam", "dino") -> (C, h, w) float32 feature grid
    features: Dict[str, np.ndarray]
    #: backend-private decoder input (e.g. the image embedding on the device)
    state: Any = None


@dataclass
class Prediction:
    """Masks for one prompt set; M masks (1 or 3)."""

    #: (M, R, R) float32 logits on the ROI; foreground is logits > 0
    logits: np.ndarray
    #: (M,) the decoder's predicted IoU
    iou: np.ndarray
    #: (M, L, L) float32 low-resolution logits, reusable as the next mask prompt
    low_res: np.ndarray

    @property
    def masks(self) -> np.ndarray:
        return self.logits > 0


@dataclass
class EncoderCounter:
    """How many slices each encoder has processed: the one-pass rule is tested on it."""

    counts: Dict[str, int] = field(default_factory=dict)

    def add(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + n


class Backend(abc.ABC):
    """A promptable segmentation model with one or two feature backbones."""

    #: registry name, e.g. "lite", "synpo"
    name: str = ""
    #: the configuration preset measured best with this model (SynPoLib.presets)
    preset: str = "paper"
    #: has SAM 2.1's video predictor (the video and hybrid modes need it)
    video: bool = False
    #: the most prompt points (a box counts as its 2 corners, as SAM 2 encodes it) the
    #: decoder's multimask tokens were trained for; more, and one mask is the decoder's
    #: advised answer. None: no such limit is known (one-mask decoders like LiteMedSAM)
    multimask_max_points: Optional[int] = None

    def __init__(self) -> None:
        self.encoder_calls = EncoderCounter()

    @property
    @abc.abstractmethod
    def feature_keys(self) -> Sequence[str]:
        """Names of the backbones whose features :meth:`encode` returns."""

    @property
    @abc.abstractmethod
    def device(self) -> str:
        """Where the models run ("cpu", "cuda", "mps")."""

    @abc.abstractmethod
    def encode(self, images: Sequence[np.ndarray]) -> List[EncodedSlice]:
        """Encode a batch of (R, R, 3) uint8 images, one encoder pass each."""

    @abc.abstractmethod
    def predict(self, encoded: EncodedSlice, *, points: Optional[np.ndarray] = None,
                labels: Optional[np.ndarray] = None, box: Optional[np.ndarray] = None,
                mask_input: Optional[np.ndarray] = None, multimask: bool = True,
                roi_size: int = 256) -> Prediction:
        """Decode masks from prompts on an encoded slice."""

    def describe(self) -> str:
        return f"{self.name} on {self.device}"
