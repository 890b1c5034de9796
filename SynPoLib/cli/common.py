"""What several ``synpo`` commands share: argument groups and the progress bar."""

from __future__ import annotations

import argparse
import sys

import numpy as np


def add_backend_arguments(p: argparse.ArgumentParser) -> None:
    """The model family and where it runs (segment, demo)."""
    p.add_argument("--backend", default="lite",
                   help="model family: lite (LiteMedSAM, made for CPUs; default), synpo (SAM 2.1 + DINOv2, the "
                        "paper; wants a GPU), sam2 (SAM 2.1 alone)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, mps (default: auto = CUDA > MPS > CPU)")


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


__all__ = ["ProgressBar", "add_backend_arguments"]
