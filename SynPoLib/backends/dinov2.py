"""DINOv2 feature extractor on timm (no decoder: it only feeds the synergy map).

ViT-S/B/L/g with patch 14, plain or with 4 registers. The input side is
``grid * 14`` (896 for the paper's 64 x 64 grid [G]); the patch tokens of
the last block (after the final norm, DINOv2's ``x_norm_patchtokens``) form the
(C, grid, grid) feature map. The class and register tokens are dropped using the
model's own ``num_prefix_tokens`` (1 for plain models, 5 with registers), never a
hard-coded count.

Checkpoints: timm's format (the hub's ``model.safetensors``) and the ORIGINAL DINOv2
format (``torch.hub`` / facebookresearch checkpoints and derivatives such as SINDER:
keys ``blocks.N.ls1.gamma``, ``register_tokens``, ``mask_token``, a 37 x 37 + 1
``pos_embed``). Both go through timm's own converter
(``vision_transformer.checkpoint_filter_fn``), which also resamples the position
embedding to the model's grid, and are loaded with strict keys.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Optional

import torch
import torch.nn.functional as F

from .weights import WeightsError

PATCH = 14

#: short name -> (timm architecture, channels, registry name of its weights)
DINO_MODELS: Dict[str, tuple] = {
    "vits14": ("vit_small_patch14_dinov2", 384, "dinov2-vits14"),
    "vits14-reg4": ("vit_small_patch14_reg4_dinov2", 384, "dinov2-vits14-reg4"),
    "vitb14": ("vit_base_patch14_dinov2", 768, "dinov2-vitb14"),
    "vitb14-reg4": ("vit_base_patch14_reg4_dinov2", 768, "dinov2-vitb14-reg4"),
    "vitl14": ("vit_large_patch14_dinov2", 1024, "dinov2-vitl14"),
    "vitl14-reg4": ("vit_large_patch14_reg4_dinov2", 1024, "dinov2-vitl14-reg4"),
    "vitg14": ("vit_giant_patch14_dinov2", 1536, "dinov2-vitg14"),
    "vitg14-reg4": ("vit_giant_patch14_reg4_dinov2", 1536, "dinov2-vitg14-reg4"),
    # the paper's model: SINDER-repaired ViT-g/14 (no registers), original format
    "sinder": ("vit_giant_patch14_dinov2", 1536, "sinder-vitg14"),
}

#: the default when the paper's SINDER weights are absent: registers fix the same
#: high-norm artefacts SINDER repairs
DEFAULT_DINO = "vitl14-reg4"


@dataclass(frozen=True)
class DinoSpec:
    key: str
    timm_name: str
    channels: int
    weights_name: str


def dino_spec(model: str) -> DinoSpec:
    """Short name ("vitl14-reg4", "sinder") or timm name -> its spec."""
    key = model.strip().lower()
    if key in DINO_MODELS:
        return DinoSpec(key, *DINO_MODELS[key])
    for short, (timm_name, channels, weights) in DINO_MODELS.items():
        if key in (timm_name, timm_name + ".lvd142m") and short != "sinder":
            return DinoSpec(short, timm_name, channels, weights)
    raise ValueError(f"unknown DINOv2 model {model!r}; choose from {', '.join(DINO_MODELS)}")


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Tensors of a checkpoint file (.safetensors, or a torch pickle of tensors only).

    Any failure names the file: a truncated download or a non-checkpoint must not
    surface as an anonymous unpickling error.
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every reader error means the same to the user
        raise WeightsError(f"cannot read checkpoint {path} (corrupt, truncated or not a checkpoint): "
                           f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(state, dict):
        raise WeightsError(f"{path} does not hold a state dict (got {type(state).__name__})")
    for wrapper in ("model", "state_dict", "teacher"):
        if wrapper in state and isinstance(state[wrapper], dict):
            state = state[wrapper]
    return state


def _key_diff(missing, unexpected) -> str:
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {', '.join(list(missing)[:4])})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (e.g. {', '.join(list(unexpected)[:4])})")
    return "; ".join(parts)


def load_dinov2_checkpoint(model: torch.nn.Module, path: Path, assign: bool = False) -> None:
    """Load a timm- or original-format DINOv2 checkpoint file into ``model`` with strict keys."""
    load_dinov2_state(model, read_state_dict(path), path, assign=assign)


def load_dinov2_state(model: torch.nn.Module, state: Dict[str, torch.Tensor], source: object,
                      assign: bool = False) -> None:
    """Convert ``state`` with timm's converter and load it strictly; errors name ``source``.

    ``assign`` puts the checkpoint's tensors (cast to the model's dtypes) in place of
    the model's, for a model built on the meta device.
    """
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = source
    # DINOv2 training checkpoints prefix the backbone
    if any(k.startswith("backbone.") for k in state):
        state = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
    model_regs = int(getattr(model, "num_reg_tokens", 0))
    if "mask_token" in state:  # original layout: registers are visible before conversion
        ckpt_regs = int(state["register_tokens"].shape[1]) if "register_tokens" in state else 0
        if ckpt_regs != model_regs:
            raise WeightsError(f"{path} is a DINOv2 checkpoint with {ckpt_regs} register tokens, the chosen model "
                               f"has {model_regs}: check --dino-model (plain vs -reg4) against the checkpoint")
    try:
        state = checkpoint_filter_fn(dict(state), model)
    except Exception as exc:  # noqa: BLE001
        raise WeightsError(f"{path} is not a DINOv2 checkpoint timm can convert into this model "
                           f"({type(exc).__name__}: {exc}): check --dino-model against the checkpoint") from exc
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise WeightsError(f"{path} does not match {type(model).__name__} "
                           f"({getattr(model, 'default_cfg', {}).get('architecture', '')}): "
                           f"{_key_diff(missing, unexpected)}; check --dino-model against the checkpoint")
    shapes = [k for k, v in state.items() if tuple(v.shape) != tuple(expected[k].shape)]
    if shapes:
        k = shapes[0]
        raise WeightsError(f"{path} does not match the DINOv2 architecture: {k} has shape "
                           f"{tuple(state[k].shape)}, the model {tuple(expected[k].shape)}; check --dino-model")
    if assign:
        state = {k: v.to(dtype=expected[k].dtype) for k, v in state.items()}
    model.load_state_dict(state, strict=True, assign=assign)


def build_dinov2(model: str = DEFAULT_DINO, *, grid: int = 64, checkpoint: Optional[Path] = None,
                 device: torch.device = torch.device("cpu"), seed: int = 0) -> torch.nn.Module:
    """The timm DINOv2 for a ``grid x grid`` patch map; ``checkpoint`` None = random weights."""
    import timm

    spec = dino_spec(model)
    if grid < 1:
        raise ValueError(f"DINOv2 grid must be >= 1, got {grid}")

    def create(on: torch.device) -> torch.nn.Module:
        with torch.device(on):
            return timm.create_model(spec.timm_name, pretrained=False, img_size=grid * PATCH, num_classes=0)

    if checkpoint is not None:
        # Random initialisation of weights that the checkpoint replaces costs ~10 s
        # for ViT-L on a CPU (more for ViT-g): build on the meta device and take the
        # checkpoint's tensors. Every tensor is a parameter the strict load covers.
        net = create(torch.device("meta"))
        if next(net.buffers(), None) is None:
            load_dinov2_checkpoint(net, checkpoint, assign=True)
            return net.to(device).eval().requires_grad_(False)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = create(device)  # straight on the device: a GPU initialises in a blink
    if checkpoint is not None:
        load_dinov2_checkpoint(net, checkpoint)
    return net.eval().requires_grad_(False)


class DINOv2Encoder:
    """Images in [0, 1] -> (B, C, grid, grid) last-block patch features."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        size = model.patch_embed.img_size
        self.input_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.grid = tuple(int(g) for g in model.patch_embed.grid_size)
        self.channels = int(model.embed_dim)
        self.num_prefix_tokens = int(model.num_prefix_tokens)
        cfg = getattr(model, "pretrained_cfg", None) or {}
        mean = cfg.get("mean", (0.485, 0.456, 0.406))
        std = cfg.get("std", (0.229, 0.224, 0.225))
        param = next(model.parameters())
        self.mean = torch.tensor(mean, device=param.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=param.device).view(1, 3, 1, 1)

    def encode(self, images01: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) float in [0, 1] -> (B, C, grid, grid) features."""
        x = images01
        if tuple(x.shape[-2:]) != (self.input_size, self.input_size):
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        x = (x - self.mean.to(x.dtype)) / self.std.to(x.dtype)
        tokens = self.model.forward_features(x)
        patches = tokens[:, self.num_prefix_tokens:]
        b, n, c = patches.shape
        if n != self.grid[0] * self.grid[1]:
            raise RuntimeError(f"DINOv2 returned {n} patch tokens for a {self.grid} grid")
        return patches.transpose(1, 2).reshape(b, c, *self.grid)


__all__ = ["DEFAULT_DINO", "DINO_MODELS", "DINOv2Encoder", "DinoSpec", "build_dinov2", "dino_spec",
           "load_dinov2_checkpoint", "load_dinov2_state", "read_state_dict"]
