"""SAM 2.1 on the ``sam2`` package: one image-encoder pass per slice, reused everywhere.

The model comes from ``sam2.build_sam.build_sam2`` with sam2's own configurations
(``configs/sam2.1/sam2.1_hiera_{t,s,b+,l}.yaml``); decoding goes through
``SAM2ImagePredictor.predict``, so prompt transforms, the box/point concatenation and
mask post-processing are sam2's, not ours.

The one thing done differently from ``SAM2ImagePredictor.set_image_batch``: the ROI
batch is resized and normalised ON THE DEVICE by the predictor's own transform module,
instead of on the CPU image by image, because a 1024 x 1024 float image per slice
costs more to prepare and copy than the GPU takes to encode it. From the backbone
output it keeps:

- ``backbone_fpn[-1]`` (stride 16, 256 channels; 64 x 64 at 1024 px) BEFORE
  ``no_mem_embed`` is added: the "sam" feature grid of the synergy map [A];
- the decoder's ``image_embed`` (that map + ``no_mem_embed``) and ``high_res_feats``,
  built exactly as ``set_image_batch`` builds them; the test suite checks the two
  paths agree.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .weights import WeightsError
from .dinov2 import read_state_dict

#: size -> (sam2 config, registry name of its weights)
SAM2_SIZES: Dict[str, Tuple[str, str]] = {
    "tiny": ("configs/sam2.1/sam2.1_hiera_t.yaml", "sam2.1-hiera-tiny"),
    "small": ("configs/sam2.1/sam2.1_hiera_s.yaml", "sam2.1-hiera-small"),
    "base_plus": ("configs/sam2.1/sam2.1_hiera_b+.yaml", "sam2.1-hiera-base-plus"),
    "large": ("configs/sam2.1/sam2.1_hiera_l.yaml", "sam2.1-hiera-large"),
}
_ALIASES = {"t": "tiny", "s": "small", "b+": "base_plus", "base+": "base_plus", "base-plus": "base_plus",
            "b": "base_plus", "l": "large", "base_plus": "base_plus"}

#: the paper's SAM2.1 (Hiera-L)                                                   [P]
DEFAULT_SAM2 = "large"
#: SAM 2's native input side (a 64 x 64 stride-16 feature map)              [P]
SAM2_IMAGE_SIZE = 1024
#: stride of the map used as the "sam" feature grid
SAM2_STRIDE = 16


def sam2_size(name: str) -> str:
    key = name.strip().lower()
    key = _ALIASES.get(key, key.replace("-", "_"))
    if key not in SAM2_SIZES:
        raise ValueError(f"unknown SAM 2.1 size {name!r}; choose from tiny, small, base_plus, large")
    return key


def load_sam2_checkpoint(model: torch.nn.Module, path: Path) -> None:
    """Load a SAM 2 checkpoint (``{"model": state_dict}`` as Meta ships it, or a bare
    state dict) with strict keys; every failure names the file.

    sam2's own ``_load_checkpoint`` logs the key lists and raises an empty
    ``RuntimeError``; a user needs the file and the reason in the message.
    """
    state = read_state_dict(path)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:4])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:4])})")
        raise WeightsError(f"{path} is not a checkpoint of this SAM 2.1 size: {'; '.join(parts)}; "
                           "check --sam2-size against the checkpoint")
    for k, v in state.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise WeightsError(f"{path} does not match this SAM 2.1 size: {k} has shape {tuple(v.shape)}, "
                               f"the model {tuple(expected[k].shape)}; check --sam2-size")
    model.load_state_dict(state, strict=True)


def build_sam2_model(size: str = DEFAULT_SAM2, *, image_size: int = SAM2_IMAGE_SIZE,
                     checkpoint: Optional[Path] = None, device: torch.device = torch.device("cpu"),
                     seed: int = 0) -> torch.nn.Module:
    """SAM 2.1 of ``size`` from sam2's config; ``checkpoint`` None = random weights.

    ``image_size`` other than 1024 is for small test models (the grid is
    ``image_size / 16``); real checkpoints were trained at 1024.
    """
    from sam2.build_sam import build_sam2

    size = sam2_size(size)
    if image_size % 32:
        raise ValueError(f"SAM 2 image size must be a multiple of 32, got {image_size}")
    overrides = [] if image_size == SAM2_IMAGE_SIZE else [f"++model.image_size={int(image_size)}"]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        # weights are loaded on the CPU first: loading straight onto the GPU would
        # hold two copies there for a moment
        model = build_sam2(SAM2_SIZES[size][0], None, device="cpu", hydra_overrides_extra=overrides)
    if checkpoint is not None:
        load_sam2_checkpoint(model, checkpoint)
    return model.to(device).eval().requires_grad_(False)


@dataclass
class SAM2State:
    """Decoder input of one slice, as SAM2ImagePredictor keeps it (batch of 1)."""

    image_embed: torch.Tensor
    high_res_feats: List[torch.Tensor]


def _predictor_class():
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    class _StatePredictor(SAM2ImagePredictor):
        """SAM2ImagePredictor that decodes from a stored per-slice state.

        ``use`` installs one slice's features the way ``set_image`` leaves them;
        everything after that is the parent's unchanged ``predict``.
        """

        def use(self, state: SAM2State, orig_hw: Tuple[int, int]) -> None:
            self.reset_predictor()
            self._features = {"image_embed": state.image_embed, "high_res_feats": list(state.high_res_feats)}
            self._orig_hw = [tuple(orig_hw)]
            self._is_image_set = True

    return _StatePredictor


class SAM2Image:
    """Encoder pass and decoder calls of one SAM 2.1 model."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.predictor = _predictor_class()(model)
        side = int(model.image_size)
        # SAM2ImagePredictor hard-codes the 1024-px sizes; a test-sized model needs its own
        self.predictor._bb_feat_sizes = [(side // 4, side // 4), (side // 8, side // 8), (side // 16, side // 16)]
        self.image_size = side
        self.grid = (side // SAM2_STRIDE, side // SAM2_STRIDE)
        self.low_res_size = tuple(int(s) for s in model.sam_prompt_encoder.mask_input_size)
        self._lock = threading.Lock()

    @property
    def transforms(self):
        """sam2's jit-scripted Resize(image_size) + ImageNet Normalize."""
        return self.predictor._transforms.transforms

    def encode(self, images01: torch.Tensor) -> Tuple[torch.Tensor, List[SAM2State]]:
        """(B, 3, H, W) in [0, 1] on the model's device -> ("sam" grid (B, 256, h, w), states)."""
        model = self.model
        x = self.transforms(images01)
        backbone_out = model.forward_image(x)
        grid = backbone_out["backbone_fpn"][-1]  # before no_mem_embed [A]
        # From here on as SAM2ImagePredictor.set_image_batch:
        _, vision_feats, _, _ = model._prepare_backbone_features(backbone_out)
        if model.directly_add_no_mem_embed:
            vision_feats[-1] = vision_feats[-1] + model.no_mem_embed
        batch = x.shape[0]
        feats = [feat.permute(1, 2, 0).view(batch, -1, *size)
                 for feat, size in zip(vision_feats[::-1], self.predictor._bb_feat_sizes[::-1])][::-1]
        states = [SAM2State(image_embed=feats[-1][i:i + 1], high_res_feats=[f[i:i + 1] for f in feats[:-1]])
                  for i in range(batch)]
        return grid, states

    def predict(self, state: SAM2State, *, points: Optional[np.ndarray], labels: Optional[np.ndarray],
                box: Optional[np.ndarray], mask_input: Optional[np.ndarray], multimask: bool,
                roi_size: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Logits (M, R, R), IoU (M,), low-res logits (M, L, L) for prompts on the R x R ROI."""
        if points is not None and len(points) == 0:
            points, labels = None, None
        if points is not None:
            points = np.asarray(points, np.float32).reshape(-1, 2)
            labels = np.asarray(labels, np.int32).reshape(-1)
            if len(labels) != len(points):
                raise ValueError(f"{len(points)} points but {len(labels)} labels")
        if box is not None:
            box = np.asarray(box, np.float32).reshape(4)
        mask_arg = None
        if mask_input is not None:
            m = torch.as_tensor(np.asarray(mask_input, np.float32))
            if m.ndim != 2:
                raise ValueError(f"mask_input must be (H, W) low-res logits, got shape {tuple(m.shape)}")
            if tuple(m.shape) != self.low_res_size:
                m = F.interpolate(m[None, None], size=self.low_res_size, mode="bilinear", align_corners=False)[0, 0]
            mask_arg = m[None].numpy()
        with self._lock:
            self.predictor.use(state, (roi_size, roi_size))
            logits, iou, low_res = self.predictor.predict(
                point_coords=points, point_labels=labels, box=box, mask_input=mask_arg,
                multimask_output=multimask, return_logits=True)
            self.predictor.reset_predictor()
        if logits.ndim == 2:
            logits, iou, low_res = logits[None], np.atleast_1d(iou), low_res[None]
        return logits.astype(np.float32), iou.astype(np.float32), low_res.astype(np.float32)


__all__ = ["DEFAULT_SAM2", "SAM2Image", "SAM2State", "SAM2_IMAGE_SIZE", "SAM2_SIZES", "build_sam2_model",
           "load_sam2_checkpoint", "sam2_size"]
