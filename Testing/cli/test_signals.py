"""Ctrl-C and SIGTERM on a real ``synpo segment`` process: one line, the right exit code,
no temporary file left and no output unless it is complete.

Each test starts ``python -m SynPoLib`` (what the ``synpo`` script runs) on a tiny
phantom with the real LiteMedSAM and sends a real signal: at moments spread over the
start-up (imports, model load), and at the moment the outputs are being written
(found by watching the output folder for the hidden temporary files).
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, ellipsoid_volume

pytestmark = pytest.mark.slow


def _inputs(folder: Path):
    volume, mask = ellipsoid_volume(shape=(8, 20, 24), seed=3)
    sitk.WriteImage(sitk.GetImageFromArray(volume), str(folder / "q.nii.gz"))
    sitk.WriteImage(sitk.GetImageFromArray(mask.astype(np.uint8) * 5), str(folder / "m.nrrd"))


def _digests(folder: Path):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _start(folder: Path) -> subprocess.Popen:
    out = folder / "out"
    argv = [sys.executable, "-m", "SynPoLib", "segment", "--query", str(folder / "q.nii.gz"), "--support-mask",
            str(folder / "m.nrrd"), "--support-slice", "4", "--range", "3:4", "--quiet", "--no-auto-stop",
            "--out", str(out / "r.seg.nrrd"), "--labelmap", str(out / "r.nii.gz"), "--png", str(out / "r.png"),
            "--confidence-png", str(out / "c.png"), "--records", str(out / "r.json")]
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.Popen(argv, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


OUTPUTS = ("r.seg.nrrd", "r.nii.gz", "r.png", "c.png", "r.json")


def _check_end(folder: Path, proc: subprocess.Popen, code: int, word: str, inputs) -> str:
    """The process ended with ``code`` and one line; nothing half-done is left."""
    out, err = proc.communicate(timeout=300)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == code, (proc.returncode, err)
    assert len(lines) == 1 and lines[0].startswith(f"synpo: {word}"), err
    assert _digests(folder) == inputs, "an input changed"
    out_dir = folder / "out"
    left = sorted(os.listdir(out_dir)) if out_dir.exists() else []
    assert not [n for n in left if n.startswith(".")], f"temporary files left: {left}"
    if "after the outputs were written" in lines[0]:  # the signal came after the renames: all complete
        assert left == sorted(OUTPUTS)
        assert sitk.ReadImage(str(out_dir / "r.nii.gz")).GetSize() == (24, 20, 8)
    else:
        assert lines[0].endswith("nothing was written") and not out_dir.exists(), left
    return lines[0]


@pytest.mark.parametrize("delay", [0.3, 1.0, 2.5, 5.0])
def test_ctrl_c_during_start_up_exits_130_with_one_line(tmp_path, delay):
    _inputs(tmp_path)
    inputs = _digests(tmp_path)
    proc = _start(tmp_path)
    time.sleep(delay)
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
    _check_end(tmp_path, proc, 130, "cancelled (Ctrl-C)", inputs)


def _signal_while_writing(folder: Path, signum: int) -> subprocess.Popen:
    """Send ``signum`` as soon as the first temporary output file appears."""
    proc = _start(folder)
    out_dir = folder / "out"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if out_dir.exists() and any(n.startswith(".") for n in os.listdir(out_dir)):
            proc.send_signal(signum)
            return proc
        time.sleep(0.002)
    raise AssertionError(f"no temporary output appeared; the run ended with {proc.returncode}: "
                         f"{proc.communicate()[1]}")


@pytest.mark.parametrize("signum, code, word", [(signal.SIGTERM, 143, "terminated"),
                                                (signal.SIGINT, 130, "cancelled (Ctrl-C)")])
def test_signal_while_the_outputs_are_written_leaves_no_temporary_file(tmp_path, signum, code, word):
    _inputs(tmp_path)
    inputs = _digests(tmp_path)
    proc = _signal_while_writing(tmp_path, signum)
    _check_end(tmp_path, proc, code, word, inputs)


def test_sigterm_during_the_run_exits_143(tmp_path):
    _inputs(tmp_path)
    inputs = _digests(tmp_path)
    proc = _start(tmp_path)
    time.sleep(8.0)  # past the imports: the model loads or runs
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        _check_end(tmp_path, proc, 143, "terminated", inputs)
    else:  # the machine was fast enough to finish: then it must have finished well
        assert proc.returncode == 0, proc.communicate()[1]
