"""A small deterministic backend whose answers the tests know exactly.

Not a stand-in for a model's quality (the real LiteMedSAM tests that): it makes the
segmenter's own decisions visible and checkable to the pixel.

- ``encode``: features of 8 x 8-pixel cells: (brightness, 1 - brightness, 0.05), so a
  bright cell is similar to a bright support and a dark one is not; every encoded
  image is kept in :attr:`FakeBackend.encoded`.
- ``predict``: every call is kept in :attr:`FakeBackend.calls`. Without a mask input
  it answers three masks inside the box (the whole ROI when there is none), in this
  order: the dark pixels (the wrong answer, given the HIGHEST predicted IoU), the
  bright pixels (the right answer), everything; one mask (the bright pixels) when
  ``multimask`` is off. With a mask input it answers that mask shrunk by exactly one
  pixel on every side (a 3 x 3 erosion), so each refine round leaves a visible trace.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

import numpy as np
from scipy import ndimage

from SynPoLib.backends.base import SAM, Backend, EncodedSlice, Prediction

CELL = 8
#: predicted IoU of (dark, bright, everything): the decoder's own choice would be wrong
IOU = (0.9, 0.5, 0.7)


class FakeBackend(Backend):
    name = "fake"
    preset = "paper"

    def __init__(self) -> None:
        super().__init__()
        self.encoded: List[np.ndarray] = []
        self.calls: List[dict] = []

    @property
    def feature_keys(self) -> Sequence[str]:
        return (SAM,)

    @property
    def device(self) -> str:
        return "cpu"

    def encode(self, images: Sequence[np.ndarray]) -> List[EncodedSlice]:
        out = []
        for image in images:
            self.encoded.append(np.array(image, copy=True))
            grey = image[..., 0].astype(np.float32) / 255.0
            r = grey.shape[0]
            cells = grey.reshape(r // CELL, CELL, r // CELL, CELL).mean(axis=(1, 3))
            features = np.stack([cells, 1.0 - cells, np.full_like(cells, 0.05)]).astype(np.float32)
            self.encoder_calls.add(SAM, 1)
            out.append(EncodedSlice(features={SAM: features}, state={"bright": grey > 0.5}))
        return out

    def predict(self, encoded: EncodedSlice, *, points: Optional[np.ndarray] = None,
                labels: Optional[np.ndarray] = None, box: Optional[np.ndarray] = None,
                mask_input: Optional[np.ndarray] = None, multimask: bool = True,
                roi_size: int = 256) -> Prediction:
        self.calls.append({"points": None if points is None else np.array(points),
                           "labels": None if labels is None else np.array(labels),
                           "box": None if box is None else np.array(box, dtype=float),
                           "mask_input": None if mask_input is None else np.array(mask_input),
                           "multimask": multimask, "slice": len(self.encoded)})
        bright = encoded.state["bright"]
        region = np.ones_like(bright)
        if box is not None:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            region = np.zeros_like(bright)
            region[max(y0, 0):y1 + 1, max(x0, 0):x1 + 1] = True
        if mask_input is not None:
            masks = [ndimage.binary_erosion(mask_input > 0, np.ones((3, 3), bool))]
            iou = [0.8]
        elif multimask:
            masks = [~bright & region, bright & region, region]
            iou = list(IOU)
        else:
            masks = [bright & region]
            iou = [0.8]
        logits = np.stack([np.where(m, 4.0, -4.0) for m in masks]).astype(np.float32)
        return Prediction(logits=logits, iou=np.asarray(iou, np.float32), low_res=logits.copy())


def rectangle(shape, top: int, left: int, height: int, width: int) -> np.ndarray:
    out = np.zeros(shape, bool)
    out[top:top + height, left:left + width] = True
    return out


__all__ = ["CELL", "FakeBackend", "IOU", "rectangle"]
