"""The Python floor in pyproject.toml is true: the code runs on it, and nothing needs less.

``vermin`` (PyPI) parses every file and reports the oldest Python each construct and
standard-library name needs; the floor must satisfy it, and must be the higher of
that and the ``sam2`` package's own floor (the paper's backends cannot install below
it). A 3.11-only module (``tomllib``) is allowed only behind a fallback, marked
``# novermin`` where it is imported.
"""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CODE = ["SynPoLib", "SynPo", "Testing", "benchmarks"]


def _version(text: str):
    return tuple(int(p) for p in re.findall(r"\d+", text)[:2])


def _floor(spec: str):
    match = re.search(r">=\s*([0-9.]+)", spec)
    assert match, f"no floor in {spec!r}"
    return _version(match.group(1))


def project_floor():
    text = (ROOT / "pyproject.toml").read_text()
    match = re.search(r'^requires-python\s*=\s*"([^"]+)"', text, re.M)
    assert match, "pyproject.toml has no requires-python"
    return _floor(match.group(1))


def vermin(*args: str) -> subprocess.CompletedProcess:
    # vermin's console entry point, run by this interpreter (it has no ``python -m`` form)
    run = "import sys; from vermin import main; sys.argv[0] = 'vermin'; sys.exit(main())"
    return subprocess.run([sys.executable, "-c", run, "--no-tips", *args, *CODE], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_code_runs_on_the_declared_floor():
    floor = project_floor()
    done = vermin("-q", "--violations", f"--target={floor[0]}.{floor[1]}-")
    assert done.returncode == 0, f"needs more than Python {floor}:\n{done.stdout}{done.stderr}"


def test_the_floor_is_what_the_code_and_sam2_need():
    done = vermin()
    found = re.search(r"Minimum required versions?:\s*([0-9.]+)", done.stdout)
    assert found, done.stdout + done.stderr
    code_needs = _version(found.group(1))
    sam2_needs = _floor(metadata("sam2")["Requires-Python"])
    assert project_floor() == max(code_needs, sam2_needs), (project_floor(), code_needs, sam2_needs)


def test_the_readme_states_the_floor():
    floor = project_floor()
    assert f"Python {floor[0]}.{floor[1]}+" in (ROOT / "README.md").read_text()
