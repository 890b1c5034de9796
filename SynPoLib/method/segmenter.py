"""SynPo on one query slice: confidence map -> points -> prompt -> mask -> refine.

This is the method of the paper, end to end, on R x R ROI images, with the backend's
encoder pass done once per slice by the caller (the volume driver batches it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import numpy as np

from ..backends.base import Backend, EncodedSlice, Prediction
from ..config import MaskChoice, PointMethod, RefinePrompt, SynPoConfig
from .points import PointPrompts, extreme_points, select_points
from .prompts import DecoderPrompt, build_prompt, grow_box, mask_box, support_box_size
from .refine import best_component, mask_score, restrict_logits
from .synergy import QuerySynergy, SupportSynergy, prepare_support, query_synergy


@dataclass(frozen=True)
class SupportContext:
    """One support slice, summarised once and reused for every query slice it serves."""

    synergy: SupportSynergy
    #: (width, height) of the support mask's box on the ROI
    box_wh: Tuple[float, float]
    #: (x, y) centroid of the support mask on the ROI
    centroid_xy: Tuple[float, float]
    #: the support mask on the ROI
    mask_roi: np.ndarray
    #: the support mask's own score on its own slice: the confidence calibration
    self_score: float


@dataclass(frozen=True)
class Guide:
    """A prompt carried over from a neighbouring slice (the propagate mode)."""

    #: box (x0, y0, x1, y1) on the ROI replacing the support-derived one, or None
    box: Optional[np.ndarray] = None
    #: low-resolution logits for the first decoder call, or None
    mask_input: Optional[np.ndarray] = None
    #: keep SynPo's points in the prompt
    points: bool = False


@dataclass
class SliceResult:
    """SynPo's answer for one query slice, on the R x R ROI."""

    logits: np.ndarray
    points: PointPrompts
    box: Optional[np.ndarray]
    #: mean prototype similarity (SAM features) inside the final mask; -inf if empty
    score: float
    #: mean synergy-map value inside the final mask; -inf if empty
    synergy_score: float
    #: the decoder's predicted IoU of the final mask
    iou: float
    #: low-resolution logits of the final mask (the next slice's mask input)
    low_res: Optional[np.ndarray] = None
    #: the prototype similarity map (SAM features) on the R x R ROI: what masks are
    #: scored with, and what decides a pixel two structures claim
    similarity: Optional[np.ndarray] = None
    #: seconds spent in the decoder, and in SynPo's own work (CMSM + PSM + NRM)
    timings: Dict[str, float] = field(default_factory=dict)
    notes: Tuple[str, ...] = ()

    @property
    def mask(self) -> np.ndarray:
        return self.logits > 0


class SynPoSegmenter:
    """Runs the method on encoded slices with one backend and one configuration."""

    def __init__(self, backend: Backend, config: SynPoConfig = SynPoConfig()) -> None:
        self.backend = backend
        self.config = config

    @property
    def roi_size(self) -> int:
        return self.config.geometry.roi_size

    def prepare_support(self, encoded: EncodedSlice, mask_roi: np.ndarray,
                        valid: Optional[np.ndarray] = None) -> SupportContext:
        """Prototypes and background Gaussian of a support slice (its mask on the ROI);
        ``valid`` marks the ROI pixels that show the slice (not the padding)."""
        mask_roi = np.asarray(mask_roi, dtype=bool)
        if not mask_roi.any():
            raise ValueError("support mask is empty on its slice")
        synergy = prepare_support(encoded.features, mask_roi, self.config.synergy, valid)
        rows, cols = np.nonzero(mask_roi)
        self_maps = query_synergy(encoded.features, synergy, self.config.synergy, self.roi_size)
        return SupportContext(synergy=synergy, box_wh=support_box_size(mask_roi),
                              centroid_xy=(float(cols.mean()), float(rows.mean())), mask_roi=mask_roi,
                              self_score=mask_score(mask_roi, self_maps.sam))

    def location_weight(self, support: SupportContext) -> Optional[np.ndarray]:
        """The optional Gaussian location prior on the ROI (None when off)."""
        scale = self.config.points.location_prior
        if scale is None:
            return None
        sigma = scale * float(np.hypot(*support.box_wh))
        r = self.roi_size
        yy, xx = np.mgrid[0:r, 0:r].astype(np.float32)
        cx, cy = support.centroid_xy
        return np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2.0 * sigma ** 2)).astype(np.float32)

    def confidence(self, encoded: EncodedSlice, support: SupportContext) -> QuerySynergy:
        return query_synergy(encoded.features, support.synergy, self.config.synergy, self.roi_size)

    def prompt_points(self, maps: QuerySynergy, support: SupportContext,
                      valid: np.ndarray) -> Tuple[PointPrompts, np.ndarray]:
        """The slice's prompt points, and the map positives (and boxes) are read from.

        Positives and boxes read the (optionally location-weighted) map; negatives
        always read the raw map, on the scale of the support background Gaussian.
        """
        cfg = self.config
        weight = self.location_weight(support)
        positive_map = maps.syn if weight is None else maps.syn * weight
        if cfg.points.method == PointMethod.EXTREMES:
            points = extreme_points(maps.syn, valid, positive_map=positive_map)
        else:
            points = select_points(maps.syn, support.synergy.mu, support.synergy.sigma,
                                   cfg.points, valid, positive_map=positive_map)
        return points, positive_map

    def segment(self, encoded: EncodedSlice, support: SupportContext,
                valid: Optional[np.ndarray] = None, guide: Optional[Guide] = None) -> SliceResult:
        """Segment one encoded query slice; ``valid`` marks the ROI pixels that show it.

        With a ``guide`` (the propagate mode) its box and mask input replace the
        support-derived box; SynPo's points are kept only if the guide asks for them.
        """
        cfg = self.config
        start = time.perf_counter()
        decode_time = 0.0
        if valid is None:
            valid = np.ones((self.roi_size, self.roi_size), dtype=bool)

        maps = self.confidence(encoded, support)
        points, positive_map = self.prompt_points(maps, support, valid)
        first_mask_input = None
        if guide is None:
            prompt = build_prompt(cfg.prompt.strategy, positive_map, points, np.asarray(support.box_wh),
                                  cfg.prompt, valid)
        else:
            prompt = DecoderPrompt(points=points.coords if guide.points else None,
                                   labels=points.labels if guide.points else None, box=guide.box)
            first_mask_input = guide.mask_input

        def decode(prompt: DecoderPrompt, mask_input: Optional[np.ndarray], multimask: bool) -> Prediction:
            nonlocal decode_time
            t = time.perf_counter()
            pred = self.backend.predict(encoded, points=prompt.points, labels=prompt.labels,
                                        box=prompt.box, mask_input=mask_input, multimask=multimask,
                                        roi_size=self.roi_size)
            decode_time += time.perf_counter() - t
            return pred

        pred = decode(prompt, first_mask_input, cfg.prompt.multimask)
        notes = list(points.notes)
        both = len(pred.logits) > 1 and self.single_mask_too(prompt)
        if both:
            single = decode(prompt, first_mask_input, False)
            pred = Prediction(logits=np.concatenate([pred.logits, single.logits]),
                              iou=np.concatenate([pred.iou, single.iou]),
                              low_res=np.concatenate([pred.low_res, single.low_res]))
        chosen = self._choose(pred, maps.sam)
        if both:
            notes.append(f"decoded {len(pred.logits) - 1} masks and 1; kept the "
                         + ("one-mask decode" if chosen == len(pred.logits) - 1 else f"multimask output {chosen}"))
        for _ in range(cfg.refine.rounds):
            component, _ = best_component(pred.masks[chosen], maps.sam, cfg.refine)
            if not component.any():
                break  # an empty coarse mask stays empty: nothing to refine
            if cfg.refine.prompt == RefinePrompt.MASK:
                mask_input = restrict_logits(pred.low_res[chosen], component, cfg.refine.outside_logit)
                pred = decode(prompt, mask_input, cfg.refine.multimask)
            else:
                box = grow_box(mask_box(component), cfg.prompt.box_margin, valid)
                prompt = DecoderPrompt(points=prompt.points if prompt.box is None else None,
                                       labels=prompt.labels if prompt.box is None else None, box=box)
                pred = decode(prompt, None, cfg.refine.multimask)
            chosen = self._choose(pred, maps.sam)

        logits = pred.logits[chosen]
        if cfg.refine.keep_component:
            component, _ = best_component(logits > 0, maps.sam, cfg.refine)
            logits = np.where(component, logits, np.minimum(logits, -1e-3)).astype(np.float32)
        final = logits > 0
        total = time.perf_counter() - start
        return SliceResult(
            logits=logits, points=points, box=prompt.box,
            score=mask_score(final, maps.sam), synergy_score=mask_score(final, maps.syn),
            iou=float(pred.iou[chosen]), low_res=pred.low_res[chosen], similarity=maps.sam,
            timings={"decode": decode_time, "synpo": total - decode_time}, notes=tuple(notes))

    def single_mask_too(self, prompt: DecoderPrompt) -> bool:
        """Whether the first decode also asks for one mask (``prompt.single_mask_too``):
        the prompt holds more points than the decoder's multimask tokens serve."""
        cfg = self.config.prompt
        limit = getattr(self.backend, "multimask_max_points", None)
        if not (cfg.multimask and cfg.single_mask_too) or limit is None:
            return False
        n_points = (0 if prompt.points is None else len(prompt.points)) + (0 if prompt.box is None else 2)
        return n_points > limit

    def _choose(self, pred: Prediction, sam_map: np.ndarray) -> int:
        """Index of the mask to keep among the decoder's outputs (the one most like the support's prototype [A])."""
        if len(pred.logits) == 1:
            return 0
        if self.config.prompt.mask_choice == MaskChoice.IOU:
            return int(np.argmax(pred.iou))
        scores = [mask_score(m, sam_map) for m in pred.masks]
        if all(s == float("-inf") for s in scores):
            return int(np.argmax(pred.iou))
        return int(np.argmax(scores))


__all__ = ["DecoderPrompt", "Guide", "SliceResult", "SupportContext", "SynPoSegmenter"]
