"""The propagate mode: each slice also prompted from the previous slice's result.

Made for models without video memory (LiteMedSAM): walking outward from the support,
the previous slice's mask (its box, optionally its logits as mask input, optionally
with SynPo's points) prompts the next slice, so the prompt follows the structure as it
moves and changes size. Only a confident previous slice is carried over.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import numpy as np

from ..config import SynPoConfig
from ..method.prompts import grow_box, mask_box
from ..method.segmenter import Guide, SliceResult, SupportContext
from . import slices
from .sink import ResultSink, Track
from .types import Job


@dataclass
class _Carry:
    """What is handed from one slice to the next: the ROI mask and low-res logits."""

    mask: np.ndarray
    low_res: Optional[np.ndarray]


class PreviousSlice:
    """:class:`~SynPoLib.volume.slices.Guidance` from the previous confident slice."""

    def __init__(self, config: SynPoConfig, valid: np.ndarray) -> None:
        self.config = config
        self.valid = valid
        self.previous: Optional[_Carry] = None
        self.support_box_wh: Tuple[float, float] = (0.0, 0.0)

    def begin(self, context: SupportContext) -> None:
        self.previous = _Carry(mask=context.mask_roi, low_res=None)
        self.support_box_wh = context.box_wh

    def after(self, result: SliceResult, confident: bool) -> None:
        if confident:
            self.previous = _Carry(mask=result.mask, low_res=result.low_res)

    def guide(self) -> Optional[Guide]:
        previous = self.previous
        if previous is None or not previous.mask.any():
            return None
        cfg = self.config.propagation
        box = None
        if cfg.box:
            box = mask_box(previous.mask)
            if cfg.support_size:
                centre = (box[:2] + box[2:]) / 2.0
                half = (np.asarray(self.support_box_wh, np.float32) - 1.0) / 2.0
                box = np.concatenate([centre - half, centre + half]).astype(np.float32)
            box = grow_box(box, cfg.box_margin, self.valid)
        mask_input = None
        if cfg.mask:
            # the support slice has no logits: its mask stands in, as confident logits
            mask_input = previous.low_res if previous.low_res is not None else \
                np.where(previous.mask, 10.0, -10.0).astype(np.float32)
        if box is None and mask_input is None and not cfg.points:
            return None
        return Guide(box=box, mask_input=mask_input, points=cfg.points)


def guidance(job: Job) -> PreviousSlice:
    """A fresh guidance for one walk of ``job``."""
    return PreviousSlice(job.config, job.q_geometry.valid())


def run(job: Job, sink: ResultSink) -> None:
    slices.run(job, sink, guidance=guidance(job))


def run_tracks(tracks: Sequence[Track]) -> None:
    """Several structures in lockstep, one encoder pass per slice (:func:`.slices.run_tracks`)."""
    slices.run_tracks(tracks, guidance=guidance)


__all__ = ["PreviousSlice", "guidance", "run", "run_tracks"]
