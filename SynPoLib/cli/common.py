"""What several ``synpo`` commands share: argument groups and the progress bar."""

from __future__ import annotations

import argparse
import sys

import numpy as np

from ..config import Mode
from ..presets import PRESETS

#: --mode values: every mode of the volume driver
MODE_CHOICES = tuple(m.value for m in Mode)


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """The model family and where it runs (segment, demo)."""
    p.add_argument("--backend", default="lite",
                   help="model family: lite (LiteMedSAM, made for CPUs; default), synpo (SAM 2.1 + DINOv2, the "
                        "paper; wants a GPU), sam2 (SAM 2.1 alone)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, mps (default: auto = CUDA > MPS > CPU)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """Which models and weights, beyond ``--backend`` and ``--device`` (segment, batch)."""
    p.add_argument("--sam2-size", default=None, choices=("tiny", "small", "base_plus", "large"),
                   help="SAM 2.1 size for the synpo and sam2 backends (default: large, the paper's)")
    p.add_argument("--dino-model", default=None,
                   help="DINOv2 of the synpo backend: vits14, vitb14, vitl14, vitg14, each also -reg4, or sinder "
                        "(the paper's SINDER ViT-g/14) (default: vitl14-reg4)")
    p.add_argument("--sam2-checkpoint", default=None, help="local SAM 2.1 checkpoint (.pt) instead of the cached one")
    p.add_argument("--dino-checkpoint", default=None,
                   help="local DINOv2 checkpoint, timm or original DINOv2 format (e.g. SINDER's sinder.pth)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="GPU autocast precision (default: auto = bf16 where supported, else fp16; fp32 on CPU)")
    p.add_argument("--weights-dir", default=None, help="weights cache folder (default: $SYNPO_WEIGHTS_DIR or "
                                                       "~/.cache/synpo/weights)")
    p.add_argument("--offline", action="store_true", help="never download weights (also: SYNPO_OFFLINE=1)")


def add_method_arguments(p: argparse.ArgumentParser) -> None:
    """How the method runs: window, configuration, mode, quality options (segment, batch)."""
    p.add_argument("--window", type=float, nargs=2, metavar=("LOW", "HIGH"),
                   help="intensity window for both volumes (default: CT [-125, 275] HU or MRI 0.5-99.5%%)")
    p.add_argument("--config", help="JSON file of configuration sections (see SynPoLib.config)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                   help="override one parameter, e.g. --set points.n_negative=2 (repeatable)")
    p.add_argument("--preset", default=None, choices=sorted(PRESETS),
                   help="the configuration to start from (default: the backend's: lite for LiteMedSAM, which runs "
                        "the registration mode; paper for SAM 2.1): --preset paper runs the paper's method, "
                        "slice by slice")
    p.add_argument("--mode", choices=MODE_CHOICES, default=None,
                   help="how slices are segmented (default: the preset's). registration: the labelled mask carried "
                        "slice to slice by deformable registration, SynPo's similarity deciding where the "
                        "structure ends (the lite default); slices: each slice from the support (the paper); "
                        "propagate: also from the previous slice's result; video / hybrid: SAM2's video predictor "
                        "(sam2/synpo backends)")
    p.add_argument("--no-auto-stop", action="store_true",
                   help="paint every slice in the range, even past the structure's end")
    p.add_argument("--largest-component", action="store_true",
                   help="keep only the 3D part connected to the support (or the largest)")
    p.add_argument("--batch-size", type=int, default=None,
                   help="query slices per encoder batch (default: 1 on CPU, 16 on a GPU; the GPU batch shrinks "
                        "to the free memory and halves on out-of-memory)")


class ProgressBar:
    """A one-line progress bar on stdout (tqdm), fed by the driver's progress events."""

    def __init__(self, enabled: bool, unit: str = "slice") -> None:
        self.bar = None
        self.enabled = enabled
        self.unit = unit

    def __call__(self, event) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=event.total, file=sys.stdout, unit=self.unit, desc="SynPo", leave=True,
                            dynamic_ncols=True)
        self.bar.update(1)
        rec = event.record
        if np.isfinite(rec.score):
            self.bar.set_postfix(slice=rec.index, score=f"{rec.score:.3f}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


__all__ = ["ProgressBar", "add_backend_arguments", "add_method_arguments", "add_model_arguments"]
