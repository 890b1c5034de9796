"""SAM 2.1's video predictor on in-memory slices, sharing the backend's weights.

sam2's ``SAM2VideoPredictor`` reads a folder of JPEG files into one tensor of every
frame at the model's size (12 MiB a frame at 1024 px: 6 GiB for a 500-slice volume)
and encodes a frame whenever its features are not in a one-frame cache. We keep its
tracking, memory and propagation code as it is and change only where frames come from:

- :meth:`InMemoryVideoPredictor.init_state_from_frames` builds the same inference state
  as ``init_state`` around a lazy frame sequence (no files, no JPEG round trip, nothing
  held per frame) and without the warm-up encoder pass on frame 0;
- :func:`backbone_out` rebuilds the image encoder's output from the backend's
  :class:`EncodedSlice` (its "sam" grid is ``backbone_fpn[-1]``, its state holds the
  two high-resolution levels), and :meth:`InMemoryVideoPredictor.use_features` puts it
  in sam2's own feature cache before the frame is tracked. So each slice goes once
  through the backend's encoder, which also gives the features the video mode matches
  and scores with; the lazy frames are a fallback that the tests show is never read.

:func:`video_predictor` builds the predictor from sam2's configuration of the backend's
SAM 2.1 size, with the overrides ``build_sam2_model`` uses, and then makes its
parameters the backend model's own tensors (``load_state_dict(assign=True)``): no
second copy of the weights.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Callable, Dict, Optional, Tuple

import torch
from sam2.sam2_video_predictor import SAM2VideoPredictor

from .base import EncodedSlice
from .sam2_image import SAM2_IMAGE_SIZE, SAM2_SIZES, sam2_size

#: the object id SynPo tracks (one structure per run)
OBJECT_ID = 1


class LazyFrames:
    """``inference_state["images"]`` that makes a frame only when sam2 asks for it.

    ``load(i)`` returns frame ``i`` as the (3, S, S) normalised float tensor sam2's
    loader would have made; ``reads`` counts the calls (each one is an extra encoder
    pass sam2 runs itself, because the frame's features were not handed over).
    """

    def __init__(self, count: int, load: Callable[[int], torch.Tensor]) -> None:
        self._count = int(count)
        self._load = load
        self.reads = 0

    def __len__(self) -> int:
        return self._count

    def __getitem__(self, index: int) -> torch.Tensor:
        if not 0 <= index < self._count:
            raise IndexError(f"frame {index} is outside 0..{self._count - 1}")
        self.reads += 1
        return self._load(index)


class InMemoryVideoPredictor(SAM2VideoPredictor):
    """sam2's video predictor fed from memory; everything else is sam2's code."""

    #: predicted IoU of the mask the last decoder call kept (tracking or correction)
    last_iou: Optional[float] = None

    @torch.inference_mode()
    def init_state_from_frames(self, frames: LazyFrames, video_size: Tuple[int, int],
                               offload_state_to_cpu: bool = False) -> dict:
        """``init_state`` for in-memory frames; ``video_size`` (H, W) is the size masks come back at.

        The keys and their meaning are ``SAM2VideoPredictor.init_state``'s (a test
        compares them with sam2's own state for a JPEG folder).
        """
        device = self.device
        state = {
            "images": frames,
            "num_frames": len(frames),
            "offload_video_to_cpu": True,  # frames are made on demand, on the CPU
            "offload_state_to_cpu": offload_state_to_cpu,
            "video_height": int(video_size[0]),
            "video_width": int(video_size[1]),
            "device": device,
            "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
            "point_inputs_per_obj": {},
            "mask_inputs_per_obj": {},
            "cached_features": {},
            "constants": {},
            "obj_id_to_idx": OrderedDict(),
            "obj_idx_to_id": OrderedDict(),
            "obj_ids": [],
            "output_dict_per_obj": {},
            "temp_output_dict_per_obj": {},
            "frames_tracked_per_obj": {},
        }
        return state

    def use_features(self, state: dict, frame_idx: int, features: dict) -> None:
        """Make ``features`` (an image-encoder output) sam2's cached features of ``frame_idx``.

        sam2 keeps one frame in this cache and only reads the cached image tensor to
        expand it by the object count; a 1-pixel placeholder stands in for it.
        """
        top = features["backbone_fpn"][-1]
        placeholder = torch.zeros(1, 3, 1, 1, device=top.device, dtype=top.dtype)
        state["cached_features"] = {int(frame_idx): (placeholder, features)}

    def _forward_sam_heads(self, *args, **kwargs):
        out = super()._forward_sam_heads(*args, **kwargs)
        ious = out[2]
        # the kept mask is the IoU argmax with several masks, the only one otherwise
        self.last_iou = float(ious.float().max(dim=-1).values[0])
        return out


def backbone_out(predictor: InMemoryVideoPredictor, encoded: EncodedSlice) -> dict:
    """The image encoder's output for one slice, rebuilt from the backend's encoding.

    ``backbone_fpn`` = the two high-resolution levels (after the decoder's conv_s0/s1,
    as ``SAM2Base.forward_image`` leaves them) and the stride-16 map before
    ``no_mem_embed``; the sine position encodings depend on the shapes only.
    """
    state = encoded.state
    if not hasattr(state, "high_res_feats") or "sam" not in encoded.features:
        raise TypeError("video mode needs slices encoded by a SAM 2.1 backend (sam2 or synpo)")
    ref = state.image_embed
    top = torch.from_numpy(encoded.features["sam"]).to(device=ref.device, dtype=ref.dtype)[None]
    fpn = [f for f in state.high_res_feats] + [top]
    pos = [predictor.image_encoder.neck.position_encoding(f).to(f.dtype) for f in fpn]
    return {"vision_features": top, "backbone_fpn": fpn, "vision_pos_enc": pos}


_predictors: Dict[int, Tuple["weakref.ref", InMemoryVideoPredictor]] = {}
_predictors_lock = threading.Lock()


def build_video_predictor(size: str, image_size: int = SAM2_IMAGE_SIZE) -> InMemoryVideoPredictor:
    """A video predictor of ``size`` from sam2's configuration (random weights, on the CPU)."""
    from sam2.build_sam import build_sam2_video_predictor

    if image_size % 32:
        raise ValueError(f"SAM 2 image size must be a multiple of 32, got {image_size}")
    overrides = [f"++model._target_={__name__}.InMemoryVideoPredictor"]
    if image_size != SAM2_IMAGE_SIZE:
        overrides.append(f"++model.image_size={int(image_size)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        predictor = build_sam2_video_predictor(SAM2_SIZES[sam2_size(size)][0], None, device="cpu",
                                               hydra_overrides_extra=overrides)
    if not isinstance(predictor, InMemoryVideoPredictor):  # pragma: no cover - sam2 API drift
        raise RuntimeError(f"sam2 built {type(predictor).__name__}, not the in-memory predictor")
    # sam2's video builder asks for hole filling (fill_hole_area=8, appended after any
    # override of ours), which needs sam2's optional CUDA extension; installs built
    # without it (ours: SAM2_BUILD_CUDA=0) skip it with a warning per frame. Off
    # everywhere, so a result does not depend on how sam2 happened to be built.
    predictor.fill_hole_area = 0
    return predictor.eval().requires_grad_(False)


def video_predictor(backend) -> InMemoryVideoPredictor:
    """The video predictor of a "sam2"/"synpo" backend's SAM 2.1, built once per model.

    Its parameters are the backend model's tensors, so the two never disagree and the
    weights are in memory once.
    """
    sam = getattr(backend, "sam", None)
    model = getattr(sam, "model", None)
    if model is None or not hasattr(backend, "sam2_size"):
        raise TypeError(f"video mode needs SAM 2.1's memory: use the sam2 or synpo backend, not "
                        f"{getattr(backend, 'name', type(backend).__name__)!r} (the lite backend has "
                        "no video memory; its propagation mode serves it)")
    key = id(model)
    with _predictors_lock:
        cached = _predictors.get(key)
        if cached is not None and cached[0]() is model:
            return cached[1]
        predictor = build_video_predictor(backend.sam2_size, int(model.image_size))
        predictor.load_state_dict(model.state_dict(), strict=True, assign=True)
        device = next(model.parameters()).device
        predictor.to(device)
        # one run at a time per predictor: ``last_iou`` lives on it
        predictor.run_lock = threading.Lock()
        _predictors[key] = (weakref.ref(model), predictor)
        return predictor


__all__ = ["InMemoryVideoPredictor", "LazyFrames", "OBJECT_ID", "backbone_out", "build_video_predictor",
           "video_predictor"]
