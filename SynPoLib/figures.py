"""Matplotlib without a screen, for every picture SynPoLib writes.

Imported lazily by the modules that draw, so that importing SynPoLib (and Slicer
loading the module) never pays for matplotlib; the Agg backend because a shell on a
server or CI has no display.
"""

from __future__ import annotations

import os
from typing import Optional


def pyplot():
    """``matplotlib.pyplot`` on the Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path: os.PathLike, dpi: int, format: Optional[str] = None) -> None:
    """Write ``fig`` (format from ``path``'s suffix unless given) and free its memory."""
    fig.savefig(os.fspath(path), dpi=dpi, format=format)
    pyplot().close(fig)


__all__ = ["pyplot", "save_figure"]
