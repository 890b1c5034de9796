"""The paper's backends: SAM 2.1 + DINOv2 ("synpo"), and SAM 2.1 alone ("sam2").

One encoder pass per slice and backbone: a batch of ROI images goes once through the
SAM 2.1 image encoder (its stride-16 map is the "sam" grid AND the decoder's input)
and once through DINOv2 (the "dino" grid). Masks come from SAM 2.1's decoder. The
two grids must have the same size to be fused (64 x 64 by default: SAM 2.1 at 1024
px, DINOv2 at 896 px).

Models are built once per process and shared: a "sam2" and a "synpo" backend on the
same device use the same SAM 2.1 module.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from . import weights
from .device import (AdaptiveBatcher, Stopwatch, autocast, autocast_dtype, resolve_device,
                      suggested_batch_size)
from .base import DINO, SAM, Backend, EncodedSlice, Prediction
from .dinov2 import DEFAULT_DINO, PATCH, DINOv2Encoder, build_dinov2, dino_spec
from .sam2_image import (DEFAULT_SAM2, SAM2_IMAGE_SIZE, SAM2_SIZES, SAM2_STRIDE, SAM2Image, build_sam2_model,
                           sam2_size)

#: forward FLOPs of one slice, in GFLOP, counted with torch.utils.flop_counter on the
#: real architectures (SAM 2.1 image encoder at 1024 px; DINOv2 at 896 px)
SAM2_GFLOP = {"tiny": 292.4, "small": 360.1, "base_plus": 646.8, "large": 1822.8}
DINO_GFLOP = {"vits14": 485.2, "vitb14": 1318.4, "vitl14": 4135.1, "vitg14": 13429.1}
#: share of a large fp32 matmul's speed these encoders reach on a CPU: 0.46-0.94 measured
#: on the development machine (SAM 2.1 tiny/small + DINOv2 ViT-S, 512 and 1024 px,
#: benchmarks/bench_backends.py); the low end, so the warning does not promise too much
CPU_EFFICIENCY = 0.5
#: one SAM 2.1 mask-decoder call at 1024 px (same for every size), counted like the
#: encoders; the paper preset decodes 3 times per slice (1 + 2 refine rounds)
DECODER_GFLOP = 3.6
DECODER_CALLS = 3
#: the decoder's small matmuls reach far less of a CPU's speed: measured 0.03-0.05
DECODER_CPU_EFFICIENCY = 0.05
#: LiteMedSAM per slice, counted the same way: encoder 74.9 + one decoder call 3.6
LITE_GFLOP = 78.5

_models: Dict[Tuple, object] = {}
_models_lock = threading.Lock()


def _shared(key: Tuple, build):
    with _models_lock:
        if key not in _models:
            _models[key] = build()
        return _models[key]


def clear_model_cache() -> None:
    """Forget the models built so far (frees their memory once no backend holds them)."""
    with _models_lock:
        _models.clear()


def _validate_images(images: Sequence[np.ndarray]) -> np.ndarray:
    batch = np.stack([np.asarray(im) for im in images])
    if batch.ndim != 4 or batch.shape[-1] != 3 or batch.dtype != np.uint8 or batch.shape[1] != batch.shape[2]:
        raise ValueError(f"expected square (R, R, 3) uint8 images, got {batch.shape} {batch.dtype}")
    return batch


def measured_cpu_gflops(seconds: float = 0.3) -> float:
    """fp32 matmul throughput of this CPU with torch's current threads, in GFLOP/s."""
    import time

    n = 1024
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    runs, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        runs += 1
    return 2 * n ** 3 * runs / (time.perf_counter() - start) / 1e9


def estimate_gflop(sam2: str, dino: Optional[str], sam2_image_size: int = SAM2_IMAGE_SIZE,
                   dino_grid: Optional[int] = None) -> float:
    """Encoder GFLOP of one slice (scaled by pixel count from the measured table)."""
    total = SAM2_GFLOP[sam2_size(sam2)] * (sam2_image_size / SAM2_IMAGE_SIZE) ** 2
    if dino:
        arch = dino_spec(dino).key.split("-")[0].replace("sinder", "vitg14")
        grid = dino_grid or sam2_image_size // SAM2_STRIDE
        total += DINO_GFLOP[arch] * (grid / 64) ** 2
    return total


def estimate_cpu_seconds(sam2: str, dino: Optional[str], sam2_image_size: int = SAM2_IMAGE_SIZE,
                         dino_grid: Optional[int] = None) -> float:
    """Expected seconds per slice on this CPU (an estimate: counted FLOPs / measured speed)."""
    speed = measured_cpu_gflops()
    decoder = DECODER_CALLS * DECODER_GFLOP * (sam2_image_size / SAM2_IMAGE_SIZE) ** 2
    return (estimate_gflop(sam2, dino, sam2_image_size, dino_grid) / (speed * CPU_EFFICIENCY)
            + decoder / (speed * DECODER_CPU_EFFICIENCY))


class SAM2DINOv2Backend(Backend):
    """SAM 2.1 features and masks, fused with DINOv2 features when ``dino_model`` is set."""

    preset = "paper"
    video = True

    def __init__(self, sam2_size_name: str = DEFAULT_SAM2, dino_model: Optional[str] = DEFAULT_DINO, *,
                 sam2_checkpoint: Optional[Path] = None, dino_checkpoint: Optional[Path] = None,
                 device: Optional[str] = None, precision: str = "auto",
                 sam2_image_size: int = SAM2_IMAGE_SIZE, dino_grid: Optional[int] = None,
                 max_batch: Optional[int] = None, weights_dir: Optional[Path] = None,
                 offline: Optional[bool] = None, random_weights: bool = False) -> None:
        """``random_weights`` builds the real architectures untrained where no checkpoint
        is given (tests, benchmarks).

        Checkpoints default to the registry's files (downloaded once; see
        :mod:`SynPoLib.weights`); ``*_checkpoint`` loads a local file instead.
        """
        super().__init__()
        self.sam2_size = sam2_size(sam2_size_name)
        self.dino_key = dino_spec(dino_model).key if dino_model else None
        self.name = "synpo" if self.dino_key else "sam2"
        self._device = resolve_device(device)
        self.precision = precision
        self.dtype = autocast_dtype(self._device, precision)
        sam_grid = sam2_image_size // SAM2_STRIDE
        if sam2_image_size % SAM2_STRIDE:
            raise ValueError(f"SAM 2 image size must be a multiple of {SAM2_STRIDE}, got {sam2_image_size}")
        if self.dino_key and dino_grid is not None and int(dino_grid) != sam_grid:
            raise ValueError(
                f"feature grids differ: SAM 2.1 at {sam2_image_size} px gives {sam_grid} x {sam_grid}, DINOv2 "
                f"grid {dino_grid} x {dino_grid} (input {int(dino_grid) * PATCH} px); the synergy map needs one "
                f"grid: use a DINOv2 grid of {sam_grid} (input {sam_grid * PATCH} px)")
        self.grid = sam_grid

        def resolve(name: str, path: Optional[Path]) -> Optional[Path]:
            if random_weights and path is None:
                return None
            return weights.resolve(name, path=path, weights_dir_override=weights_dir, offline=offline)

        sam_ckpt = resolve(SAM2_SIZES[self.sam2_size][1], sam2_checkpoint)
        dino_ckpt = resolve(dino_spec(self.dino_key).weights_name, dino_checkpoint) if self.dino_key else None
        dev = self._device
        sam_model = _shared(("sam2", self.sam2_size, sam2_image_size, str(sam_ckpt), str(dev)),
                            lambda: build_sam2_model(self.sam2_size, image_size=sam2_image_size,
                                                     checkpoint=sam_ckpt, device=dev))
        self.sam = _shared(("sam2-image", id(sam_model)), lambda: SAM2Image(sam_model))
        # sam2 1.1.0's configs: multimask_max_pt_num 1 (SAM2Base._use_multimask uses the
        # multimask tokens for 0-1 clicks only; SAM2ImagePredictor.predict advises one
        # mask for several prompts)
        self.multimask_max_points = int(getattr(sam_model, "multimask_max_pt_num", 1))
        self.dino: Optional[DINOv2Encoder] = None
        if self.dino_key:
            dino_net = _shared(("dinov2", self.dino_key, sam_grid, str(dino_ckpt), str(dev)),
                               lambda: build_dinov2(self.dino_key, grid=sam_grid, checkpoint=dino_ckpt, device=dev))
            self.dino = DINOv2Encoder(dino_net)
            if self.dino.grid != self.sam.grid:  # pragma: no cover - guarded above
                raise ValueError(f"feature grids differ: SAM {self.sam.grid}, DINOv2 {self.dino.grid}")
        self.checkpoints = {"sam2": sam_ckpt, "dinov2": dino_ckpt}
        self.batcher = AdaptiveBatcher(dev, max_batch=max_batch)
        self.stopwatch = Stopwatch(dev)

    # ------------------------------------------------------------------ seam
    @property
    def feature_keys(self) -> Sequence[str]:
        return (SAM, DINO) if self.dino is not None else (SAM,)

    @property
    def device(self) -> str:
        return str(self._device)

    def suggested_batch_size(self, requested: Optional[int] = None) -> int:
        return suggested_batch_size(self._device, requested)

    def describe(self) -> str:
        parts = f"SAM 2.1 {self.sam2_size}" + (f" + DINOv2 {self.dino_key}" if self.dino_key else "")
        precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        return f"{self.name} ({parts}, {self.grid}x{self.grid} grid) on {self.device}, {precision}"

    def encode(self, images: Sequence[np.ndarray]) -> List[EncodedSlice]:
        if len(images) == 0:
            return []
        batch = _validate_images(images)
        return self.batcher.run(batch, self._encode_batch)

    def _encode_batch(self, batch: np.ndarray) -> List[EncodedSlice]:
        n = len(batch)
        dev = self._device
        x = torch.from_numpy(np.ascontiguousarray(batch)).to(dev).permute(0, 3, 1, 2).float().div_(255.0)
        with torch.inference_mode(), autocast(dev, self.dtype):
            with self.stopwatch("sam2_encoder", n):
                grid, states = self.sam.encode(x)
            self.encoder_calls.add(SAM, n)
            dino_grid = None
            if self.dino is not None:
                with self.stopwatch("dino_encoder", n):
                    dino_grid = self.dino.encode(x)
                self.encoder_calls.add(DINO, n)
        sam_np = grid.float().cpu().numpy()
        dino_np = dino_grid.float().cpu().numpy() if dino_grid is not None else None
        out = []
        for i in range(n):
            features = {SAM: sam_np[i]}
            if dino_np is not None:
                features[DINO] = dino_np[i]
            out.append(EncodedSlice(features=features, state=states[i]))
        return out

    def predict(self, encoded: EncodedSlice, *, points: Optional[np.ndarray] = None,
                labels: Optional[np.ndarray] = None, box: Optional[np.ndarray] = None,
                mask_input: Optional[np.ndarray] = None, multimask: bool = True,
                roi_size: int = 256) -> Prediction:
        with torch.inference_mode(), autocast(self._device, self.dtype), self.stopwatch("decoder"):
            logits, iou, low_res = self.sam.predict(encoded.state, points=points, labels=labels, box=box,
                                                    mask_input=mask_input, multimask=multimask,
                                                    roi_size=roi_size)
        return Prediction(logits=logits, iou=iou, low_res=low_res)


def create_synpo(**options) -> SAM2DINOv2Backend:
    """Factory of the "synpo" backend (registered in :mod:`SynPoLib.backends`)."""
    options.setdefault("dino_model", DEFAULT_DINO)
    if options["dino_model"] in (None, "", "none"):
        raise ValueError("the synpo backend needs a DINOv2 model; for SAM 2.1 alone use the sam2 backend")
    return SAM2DINOv2Backend(**_rename(options))


def create_sam2(**options) -> SAM2DINOv2Backend:
    """Factory of the "sam2" backend: SAM 2.1 alone (the paper's SAM-only row)."""
    if options.pop("dino_model", None) not in (None, "", "none"):
        raise ValueError("the sam2 backend uses SAM 2.1 alone; for SAM 2.1 + DINOv2 use the synpo backend")
    if options.pop("dino_checkpoint", None) is not None:
        raise ValueError("a DINOv2 checkpoint was given, but the sam2 backend uses SAM 2.1 alone: use --backend synpo")
    return SAM2DINOv2Backend(dino_model=None, **_rename(options))


def cpu_warning(backend: str, sam2: str, dino: Optional[str], sam2_image_size: int = SAM2_IMAGE_SIZE) -> str:
    """The warning printed when the paper's models are about to run on a CPU."""
    dino = dino if backend == "synpo" else None
    seconds = estimate_cpu_seconds(sam2, dino, sam2_image_size)
    gflop = estimate_gflop(sam2, dino, sam2_image_size) + DECODER_CALLS * DECODER_GFLOP
    models = f"SAM 2.1 {sam2_size(sam2)}" + (f" + DINOv2 {dino}" if dino else "")
    return (f"warning: running the {backend} backend ({models}) on the CPU: expect about {seconds:.0f} s per slice "
            f"on this machine (an estimate from the models' FLOPs and this CPU's measured speed). "
            "With a GPU, use --device cuda (or mps); without one, --backend lite is made for CPUs "
            f"(LiteMedSAM: about {gflop / LITE_GFLOP:.0f} times less computation per slice).")


def options_from_args(args, log=None) -> dict:
    """Backend options from ``synpo segment`` arguments, with the weights resolved first.

    Resolving (and, online, fetching) the checkpoints before anything else makes a
    missing file fail in a second, not after the volumes are read and a model built.
    """
    import sys

    log = log or (lambda text: print(text, file=sys.stderr))
    backend = args.backend
    size = sam2_size(getattr(args, "sam2_size", None) or DEFAULT_SAM2)
    dino = getattr(args, "dino_model", None) or DEFAULT_DINO
    device = resolve_device(getattr(args, "device", None))
    options = {"sam2_size": size, "device": str(device), "precision": getattr(args, "precision", None) or "auto"}
    wdir = getattr(args, "weights_dir", None)
    offline = True if getattr(args, "offline", False) else None
    sam_ckpt = weights.resolve(SAM2_SIZES[size][1], path=getattr(args, "sam2_checkpoint", None),
                               weights_dir_override=wdir, offline=offline, log=log)
    options["sam2_checkpoint"] = sam_ckpt
    if backend == "synpo":
        spec = dino_spec(dino)
        options["dino_model"] = spec.key
        options["dino_checkpoint"] = weights.resolve(spec.weights_name, path=getattr(args, "dino_checkpoint", None),
                                                     weights_dir_override=wdir, offline=offline, log=log)
    elif getattr(args, "dino_checkpoint", None) or getattr(args, "dino_model", None):
        raise ValueError("--dino-model / --dino-checkpoint apply to the synpo backend; "
                         "the sam2 backend is SAM 2.1 alone")
    if device.type == "cpu":
        log(cpu_warning(backend, size, options.get("dino_model")))
    return options


def _rename(options: dict) -> dict:
    options = dict(options)
    if "sam2_size" in options:
        options["sam2_size_name"] = options.pop("sam2_size")
    return options


__all__ = ["CPU_EFFICIENCY", "SAM2DINOv2Backend", "clear_model_cache", "cpu_warning", "create_sam2", "create_synpo",
           "estimate_cpu_seconds", "estimate_gflop", "measured_cpu_gflops", "options_from_args"]
