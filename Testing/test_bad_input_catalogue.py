"""The bad-input catalogue: what a hostile new user tries, on every surface, in one table.

Each row is one thing a user can get wrong, on the command line (``synpo``, run in
process, or as a real subprocess where a regression would hang), the Python API
(``segment_volume``, ``Support``, ``segment_files``) or the MRML adapter (a real
slicer-core scene). Every row asserts the exit code or exception type, the one-line
message (naming the flag and what to do), that no output was written, and that the
inputs are unchanged: every file of the case's folder hashed before and after (so a
hidden temporary file or a half-written output fails too), every array hashed, the
scene snapshot compared. A few rows are policies, not refusals (NaN/Inf voxels): they
assert the run's one line about it and what it painted.

Classes (the issue's four, and what the catalogue grew beyond them):

- ``overwrite``: an output that is an input, or another output;
- ``silent``: a wrong answer given without a word (truncated files, labels that are
  not labels, unknown or mistyped configuration, values out of range, NaN voxels);
- ``late``: a check that came after the work, or never (tracebacks, hangs on pipes);
- ``blame``: a message that named the wrong cause;
- ``api``: wrong types and values through the Python API;
- ``adapter``: the MRML adapter's refusals (kept at the standard it already met).

Run as a script it prints the number of cases by class and surface.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import ROOT, ellipsoid_volume

from SynPoLib.errors import Cancelled, InputError, MRMLInputError

SHAPE = (8, 20, 24)  # (k, j, i): tiny, so that refusals cost nothing and the few model runs little
SPACING_IJK = (0.9, 1.1, 2.0)
ORIGIN = (3.0, -4.0, 5.0)
SUPPORT_SLICE = 4


# ----------------------------------------------------------------------------- the case folder

def _image(array, path, origin=ORIGIN, spacing=SPACING_IJK, vector=False):
    image = sitk.GetImageFromArray(array, isVector=vector)
    image.SetSpacing(spacing[:image.GetDimension()])
    image.SetOrigin(origin[:image.GetDimension()])
    sitk.WriteImage(image, str(path))


def _truncate(path, fraction=0.6):
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[:int(len(data) * fraction)])


def _phantom():
    volume, mask = ellipsoid_volume(shape=SHAPE, seed=3)
    return volume, mask


def _build(ws: "Workspace", name: str) -> None:
    """Create the input ``name`` in the case folder."""
    volume, mask = _phantom()
    labels = mask.astype(np.uint8) * 5
    p = ws.root / name
    if name in ("q.nii.gz", "qn.nrrd", "s.nii.gz", "q.nii"):
        _image(volume, p)
    elif name in ("m.nrrd", "ref.nrrd", "m.nii.gz"):
        _image(labels, p)
    elif name == "multi.nrrd":
        multi = labels.copy()
        multi[0, 0, 0] = 9
        _image(multi, p)
    elif name == "half.nrrd":  # a probability map saved where a labelmap belongs
        _image(mask.astype(np.float32) * 0.5, p)
    elif name == "nanmask.nrrd":
        bad = mask.astype(np.float32) * 5
        bad[0, 0, 0] = np.nan
        _image(bad, p)
    elif name == "empty.nrrd":
        _image(np.zeros(SHAPE, np.uint8), p)
    elif name == "shifted.nrrd":
        _image(labels, p, origin=(0.0, 0.0, 0.0))
    elif name == "small.nrrd":
        _image(labels[:, :, :-1], p)
    elif name == "respaced.nrrd":
        _image(labels, p, spacing=(1.0, 1.0, 1.0))
    elif name.startswith("trunc_"):  # a copy that stopped early: the same file, cut at 60 %
        source = name[len("trunc_"):]
        if source.endswith(".hdr"):
            _image(volume, p)
            _truncate(p.with_suffix(".img"))
        else:
            _build(ws, source)
            (ws.root / source).rename(p)
            _truncate(p)
    elif name == "flat.nii.gz":
        _image(volume[SUPPORT_SLICE], p)
    elif name == "rgb.nrrd":
        _image(np.repeat(volume[..., None], 3, axis=-1).astype(np.uint8), p, vector=True)
    elif name == "text.nii.gz":
        p.write_text("this is a scan, honest\n")
    elif name == "zero.nii.gz":
        p.write_bytes(b"")
    elif name in ("folder.nii.gz", "dir.seg.nrrd"):
        p.mkdir()
    elif name in ("fifo.nii.gz", "fifo.json", "fifo.seg.nrrd"):
        os.mkfifo(p)
    elif name == "nanq.nrrd":  # a NaN inside the structure, +Inf and -Inf beside it (NRRD keeps them; NIfTI
        bad = volume.copy()    # written by SimpleITK would turn NaN into 0)
        bad[3, 9, 11] = np.nan
        bad[4, 10, 12] = np.nan
        bad[4, 0, 0] = np.inf
        bad[3, 9:11, 14:16] = -np.inf
        _image(bad, p)
    elif name == "allnan.nrrd":
        _image(np.full(SHAPE, np.nan, np.float32), p)
    elif name == "const.nii.gz":
        _image(np.full(SHAPE, 7.0, np.float32), p)
    elif name == "link.nrrd":
        ws.file("qn.nrrd")
        p.symlink_to("qn.nrrd")
    elif name == "hard.nrrd":
        ws.file("m.nrrd")
        os.link(ws.root / "m.nrrd", p)
    elif name == "sub":
        p.mkdir()
    elif name.startswith("cfg_"):
        contents = CONFIGS[name]
        if isinstance(contents, bytes):
            p.write_bytes(contents)
        else:
            p.write_text(contents)
    else:
        raise KeyError(name)


CONFIGS: Dict[str, object] = {
    "cfg_ok.json": json.dumps({"points": {"n_negative": 2}}),
    "cfg_unknown_field.json": json.dumps({"points": {"n_negatve": 2}}),
    "cfg_unknown_section.json": json.dumps({"pionts": {"n_negative": 2}}),
    "cfg_string_int.json": json.dumps({"points": {"n_negative": "3"}}),
    "cfg_nan.json": '{"points": {"alpha": NaN}}',
    "cfg_bad_json.json": '{"points": {"n_negative": 2,}}',
    "cfg_list.json": json.dumps([{"points": {"n_negative": 2}}]),
    "cfg_section_value.json": json.dumps({"points": 2}),
    "cfg_binary.json": b"\xff\xfe\x00\x81 not text",
    "cfg_video.json": json.dumps({"propagation": {"mode": "video"}}),
    "cfg_range.json": json.dumps({"quality": {"stop_threshold": -0.5}}),
    "cfg_deltas.json": json.dumps({"synergy": {"delta_sd": 0.5, "delta_s": 0.25, "delta_d": 0.25}}),
}


class Workspace:
    """One case's folder: inputs are built on first use; everything in it is hashed."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def file(self, name: str) -> str:
        if not os.path.lexists(self.root / name):
            _build(self, name)
        return str(self.root / name)

    def out(self, name: str) -> str:
        return str(self.root / name) + ("/" if name.endswith("/") else "")

    def snapshot(self) -> Dict[str, Tuple]:
        """Every entry under the folder: files by content, the rest by kind (never opened)."""
        state = {}
        for dirpath, dirnames, filenames in os.walk(self.root):
            for name in dirnames + filenames:
                path = Path(dirpath) / name
                rel = str(path.relative_to(self.root))
                st = os.lstat(path)
                if path.is_symlink():
                    state[rel] = ("link", os.readlink(path))
                elif path.is_dir():
                    state[rel] = ("dir",)
                elif path.is_file():
                    state[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest(), st.st_mtime_ns)
                else:
                    state[rel] = ("special", st.st_mode)
        return state


# ----------------------------------------------------------------------------- the table

@dataclass
class Case:
    id: str
    klass: str
    surface: str  # cli, cli-subprocess, api, adapter
    #: cli: the arguments (tokens "@name": an input built in the folder, "^name": a path in it);
    #: api / adapter: a callable that makes the mistake
    args: object
    #: exit code (cli) or exception type (api, adapter); 0 / None: a policy that runs to the end
    expect: object = 2
    #: regular expression the one-line message must match
    message: str = ""
    #: cli: replace the default arguments entirely
    bare: bool = False
    #: cli: the stream the message is on, and its prefix
    stream: str = "err"
    prefix: str = "synpo: error: "
    env: Dict[str, str] = field(default_factory=dict)


DEFAULT_ARGS = {"--query": "@q.nii.gz", "--support-mask": "@m.nrrd", "--support-slice": str(SUPPORT_SLICE),
                "--out": "^out/r.seg.nrrd"}


def cli(id, klass, args, message, code=2, **kw) -> Case:
    return Case(id=id, klass=klass, surface="cli", args=args, expect=code, message=message, **kw)


def cli_sub(id, klass, args, message, code=2, **kw) -> Case:
    """Run as a real process with a time limit: a regression here would hang, not fail."""
    return Case(id=id, klass=klass, surface="cli-subprocess", args=args, expect=code, message=message, **kw)


CLI_CASES = [
    # --- overwrite: an output is an input, or another output
    cli("out-is-query", "overwrite", "--query @qn.nrrd --out @qn.nrrd", r"--out .*qn\.nrrd is the --query file"),
    cli("out-is-support-mask", "overwrite", "--out @m.nrrd", r"--out .*m\.nrrd is the --support-mask file"),
    cli("labelmap-is-query", "overwrite", "--labelmap @q.nii.gz", r"--labelmap .* is the --query file"),
    cli("records-is-support-mask", "overwrite", "--records @m.nrrd", r"--records .* is the --support-mask file"),
    cli("png-is-query", "overwrite", "--query @qn.nrrd --png @qn.nrrd", r"--png .* is the --query file"),
    cli("out-is-reference", "overwrite", "--reference @ref.nrrd --out @ref.nrrd", r"--out .* is the --reference file"),
    cli("labelmap-is-support", "overwrite", "--support @s.nii.gz --labelmap @s.nii.gz",
        r"--labelmap .* is the --support file"),
    cli("records-is-config", "overwrite", "--config @cfg_ok.json --records @cfg_ok.json",
        r"--records .* is the --config file"),
    cli("out-is-labelmap", "overwrite", "--out ^o/r.nrrd --labelmap ^o/r.nrrd",
        r"--labelmap .*r\.nrrd is also the --out file"),
    cli("png-is-confidence-png", "overwrite", "--png ^o/a.png --confidence-png ^o/a.png",
        r"--confidence-png .* is also the --png file"),
    cli("out-through-symlink-to-query", "overwrite", "--query @qn.nrrd --out @link.nrrd", r"is the --query file"),
    cli("out-is-hard-link-of-mask", "overwrite", "--out @hard.nrrd", r"--out .*hard\.nrrd is the --support-mask file"),
    cli("labelmap-dotdot-is-query", "overwrite", "--labelmap ^sub/../q.nii.gz", r"is the --query file"),
    # --- silent: answers that were wrong without a word
    cli("truncated-query-nii-gz", "silent", "--query @trunc_q.nii.gz",
        r"--query .*trunc_q\.nii\.gz ends early: its compressed data stops after .* bytes"),
    cli("truncated-query-nii", "silent", "--query @trunc_q.nii", r"--query .* ends early: it holds .* of the"),
    cli("truncated-query-hdr-img", "silent", "--query @trunc_q.hdr", r"--query .*trunc_q\.hdr ends early"),
    cli("truncated-mask-nii-gz", "silent", "--support-mask @trunc_m.nii.gz", r"--support-mask .* ends early"),
    cli("truncated-mask-nrrd", "silent", "--support-mask @trunc_m.nrrd", r"--support-mask .* ends early"),
    cli("truncated-reference", "silent", "--reference @trunc_ref.nrrd", r"--reference .* ends early"),
    cli("float-mask-without-label", "silent", "--support-mask @half.nrrd",
        r"--support-mask .*half\.nrrd holds values that are not whole numbers \(0\.5\)"),
    cli("nan-in-mask", "silent", "--support-mask @nanmask.nrrd", r"--support-mask .* holds 1 NaN/Inf voxels"),
    cli("config-unknown-field", "silent", "--config @cfg_unknown_field.json",
        r"--config .*: unknown parameter 'points\.n_negatve'; points has: n_positive"),
    cli("config-unknown-section", "silent", "--config @cfg_unknown_section.json",
        r"--config .*: unknown section 'pionts'"),
    cli("config-string-for-int", "silent", "--config @cfg_string_int.json",
        r"--config .*: points\.n_negative expects a whole number, got '3'"),
    cli("config-nan", "silent", "--config @cfg_nan.json", r"points\.alpha expects a finite number, got nan"),
    cli("config-out-of-range", "silent", "--config @cfg_range.json", r"--config .*: quality: stop_threshold must be > 0"),
    cli("set-float-for-int", "silent", "--set points.n_negative=2.5",
        r"--set points\.n_negative=2\.5: points\.n_negative expects a whole number, got 2\.5"),
    cli("set-number-for-bool", "silent", "--set prompt.multimask=1", r"prompt\.multimask expects true or false"),
    cli("set-negative-prior", "silent", "--set points.location_prior=-1", r"location_prior must be > 0"),
    cli("set-roi-zero", "silent", "--set geometry.roi_size=0", r"geometry: roi_size must lie in 16\.\.4096"),
    cli("set-bad-enum", "silent", "--set prompt.strategy=circle",
        r"prompt\.strategy expects one of 'points', 'box'"),
    cli("color-out-of-range", "silent", "--color 5 -1 nan", r"--color 5 -1 nan: R G B must be finite numbers"),
    cli("color-above-one", "silent", "--color 2 0 0", r"--color 2 0 0: each of R G B must lie between 0 and 1"),
    cli("name-with-line-break", "silent", ["--name", "liver\nSegment0_Color:=0 0 0"],
        r"--name .* holds a control character"),
    cli("window-nan", "silent", "--window nan 5", r"--window nan 5: LOW HIGH must be finite numbers"),
    # --- late: checks that came after the work (tracebacks), or never (hangs)
    cli("out-under-a-file", "late", "--out @q.nii.gz/r.seg.nrrd", r"lies under .*q\.nii\.gz, which is a file"),
    cli("out-in-read-only-folder", "late", "--out /sys/synpo-catalogue/r.seg.nrrd",
        r"--out /sys/synpo-catalogue/r\.seg\.nrrd: cannot write into /sys"),
    cli("out-names-a-folder", "late", "--out @dir.seg.nrrd", r"--out .*dir\.seg\.nrrd is a folder: give a file name"),
    cli("png-names-a-folder", "late", "--png @sub", r"--png .*sub is a folder: give a file name inside it"),
    cli("out-ends-in-a-slash", "late", "--out ^o/", r"--out .*o/ names a folder: give a file name inside it"),
    cli("out-is-a-pipe", "late", "--out @fifo.seg.nrrd", r"--out .*fifo\.seg\.nrrd is a named pipe"),
    cli("labelmap-unwritable-extension", "late", "--labelmap ^o/x.txt",
        r"--labelmap .*x\.txt: SynPo writes --labelmap as \.nii\.gz or \.nii or \.nrrd or \.mha"),
    cli("labelmap-two-file-format", "late", "--labelmap ^o/x.hdr", r"SynPo writes --labelmap as"),
    cli("png-as-jpeg", "late", "--png ^o/x.jpg", r"--png .*x\.jpg: SynPo writes --png as \.png"),
    cli("records-as-csv", "late", "--records ^o/x.csv", r"--records .*: SynPo writes --records as \.json"),
    cli("out-as-nifti", "late", "--out ^o/x.nii.gz", r"--out .*: SynPo writes --out as \.seg\.nrrd"),
    cli("config-not-json", "late", "--config @cfg_bad_json.json", r"--config .* is not valid JSON"),
    cli("config-a-list", "late", "--config @cfg_list.json", r"must hold a JSON object of sections .* got a list"),
    cli("config-section-not-object", "late", "--config @cfg_section_value.json",
        r"section 'points' must be an object of fields, got a number"),
    cli("config-binary", "late", "--config @cfg_binary.json", r"--config .* is not a UTF-8 text file"),
    cli("config-missing", "late", "--config ^nope.json", r"--config .*nope\.json: file not found"),
    cli("config-is-folder", "late", "--config @sub", r"--config .*sub is a folder"),
    cli("mode-video-on-lite", "late", "--mode video",
        r"--mode video runs SAM 2\.1's video predictor, which the lite backend does not have"),
    cli("config-mode-video-on-lite", "late", "--set propagation.mode=video",
        r"propagation\.mode=video .* which the lite backend does not have"),
    cli("config-file-mode-video-on-lite", "late", "--config @cfg_video.json", r"which the lite backend does not have"),
    cli("query-is-a-device", "late", "--query /dev/zero", r"--query /dev/zero is a character device"),
    cli("query-is-a-folder", "late", "--query @folder.nii.gz", r"--query .*folder\.nii\.gz is a folder"),
    cli("query-empty-file", "late", "--query @zero.nii.gz", r"--query .*zero\.nii\.gz is empty \(0 bytes\)"),
    cli("query-missing", "late", "--query ^nope.nii.gz", r"--query .*nope\.nii\.gz: file not found"),
    cli("batch-size-zero", "late", "--batch-size 0", r"--batch-size must be >= 1, got 0"),
    cli("unknown-backend", "late", "--backend nope", r"--backend 'nope' is unknown; choose from lite, sam2, synpo"),
    cli("demo-out-is-a-file", "late", "demo --out @q.nii.gz", r"--out .*q\.nii\.gz is a file: the demo writes", bare=True),
    cli("demo-out-read-only", "late", "demo --out /sys/synpo-demo", r"--out /sys/synpo-demo/.*cannot write into /sys",
        bare=True),
    cli_sub("query-is-a-pipe", "late", "--query @fifo.nii.gz", r"--query .*fifo\.nii\.gz is a named pipe \(FIFO\)"),
    cli_sub("mask-is-a-pipe", "late", "--support-mask @fifo.nii.gz", r"--support-mask .* is a named pipe"),
    cli_sub("config-is-a-pipe", "late", "--config @fifo.json", r"--config .*fifo\.json is a named pipe"),
    # --- blame: messages that named the wrong cause
    cli("range-reversed", "blame", "--range 6:2", r"--range 6:2 is empty: START must be below STOP"),
    cli("range-too-long", "blame", "--range 2:99", r"--range 2:99 reaches past the query's last slice: it has 8"),
    cli("range-negative", "blame", "--range=-3:5", r"--range -3:5: slice indices start at 0"),
    cli("range-words", "blame", "--range a:b", r"--range must hold whole numbers"),
    cli("range-one-number", "blame", "--range 5", r"--range must look like START:STOP"),
    cli("window-reversed", "blame", "--window 200 10", r"--window 200 10: LOW must be below HIGH, e\.g\. --window 10 200"),
    cli("set-word-for-int", "blame", "--set points.n_negative=abc",
        r"--set points\.n_negative=abc: points\.n_negative expects a whole number, got 'abc'"),
    cli("set-window-reversed", "blame", "--set window.window=[200,10]", r"window: window \(200.*10.*\): LOW must be below HIGH"),
    cli("set-deltas-not-one", "blame", "--set synergy.delta_sd=0.5", r"--set synergy\.delta_sd=0\.5: synergy: synergy deltas must sum to 1"),
    cli("set-no-equals", "blame", "--set points.n_negative", r"--set expects section\.field=value"),
    cli("set-unknown", "blame", "--set points.nope=1", r"unknown parameter 'points\.nope'"),
    cli("label-absent", "blame", "--label 3", r"--label 3 is absent from --support-mask .* \(labels present: 5\)"),
    cli("several-labels", "blame", "--support-mask @multi.nrrd", r"holds several labels \(5, 9\): choose one with --label"),
    cli("label-zero", "blame", "--label 0", r"--label 0 is the background"),
    cli("empty-mask", "blame", "--support-mask @empty.nrrd", r"--support-mask .* is empty: it has no non-zero voxel"),
    cli("support-slice-outside", "blame", "--support-slice 40",
        r"--support-slice 40 is outside the support volume: 0\.\.7 along axis 0"),
    cli("support-slice-negative", "blame", "--support-slice -1", r"--support-slice -1 is outside the support volume"),
    cli("structure-absent-from-slice", "blame", "--support-slice 0",
        r"--support-slice 0: the structure is absent from support slice 0 \(axis 0\); .*nearest: "),
    cli("mask-other-origin", "blame", "--support-mask @shifted.nrrd",
        r"is not on the support volume's grid: origin \(3, -4, 5\) vs \(0, 0, 0\)"),
    cli("mask-other-size", "blame", "--support-mask @small.nrrd", r"not on the support volume's grid: size"),
    cli("mask-other-spacing", "blame", "--support-mask @respaced.nrrd", r"not on the support volume's grid: spacing"),
    cli("reference-other-grid", "blame", "--reference @shifted.nrrd", r"--reference .* is not on the query's grid"),
    cli("reference-label-without-reference", "blame", "--reference-label 5",
        r"--reference-label needs --reference"),
    cli("query-2d", "blame", "--query @flat.nii.gz", r"--query .*: expected a 3-D volume, got a 2-D image"),
    cli("query-colour", "blame", "--query @rgb.nrrd", r"expected one value per voxel .* got 3"),
    cli("query-not-an-image", "blame", "--query @text.nii.gz", r"--query .*: cannot read it as an image"),
    cli("query-all-nan", "blame", "--query @allnan.nrrd", r"--query .*: no voxel holds a finite value"),
    cli("query-constant", "blame", "--query @const.nii.gz",
        r"--query .*const\.nii\.gz: intensity window is empty .* the volume is constant .* \(--window LOW HIGH"),
    # --- silent, grown: a published-digest-less weights file that is broken is not "ok"
    Case(id="weights-verify-broken-unpublished", klass="silent", surface="cli",
         args="weights verify dinov2-vits14", bare=True, expect=1, stream="out", prefix="dinov2-vits14: BROKEN: ",
         message=r"model\.safetensors is .* bytes where its safetensors header accounts for .* \(truncated\)"),
]


def _tokens(case: Case, ws: Workspace):
    raw = case.args if isinstance(case.args, list) else shlex.split(case.args)
    given = dict.fromkeys(t for t in raw if t.startswith("--"))
    if case.bare:
        tokens = list(raw)
    else:
        tokens = ["segment", "--quiet"]
        for flag, value in DEFAULT_ARGS.items():
            if flag not in given:
                tokens += [flag, value]
        tokens += raw
    out = []
    for t in tokens:
        if t.startswith("@"):
            first, _, rest = t[1:].partition("/")
            out.append(ws.file(first) + ("/" + rest if rest else ""))
        elif t.startswith("^"):
            out.append(ws.out(t[1:]))
        else:
            out.append(t)
    return out


def _weights_case(ws: Workspace, monkeypatch) -> None:
    """A hand-placed DINOv2 file (no published digest) cut short by a failed copy."""
    folder = ws.root / "weights" / "dinov2-vits14"
    folder.mkdir(parents=True)
    header = json.dumps({"w": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]}}).encode()
    full = len(header).to_bytes(8, "little") + header + bytes(64)
    (folder / "model.safetensors").write_bytes(full[:-20])
    monkeypatch.setenv("SYNPO_WEIGHTS_DIR", str(ws.root / "weights"))


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_cli_refuses(case, tmp_path, capsys, monkeypatch, lite_backend):
    from SynPoLib.cli import main

    ws = Workspace(tmp_path)
    calls = dict(lite_backend.encoder_calls.counts)  # the run in process shares this model
    if case.id.startswith("weights-"):
        _weights_case(ws, monkeypatch)
    argv = _tokens(case, ws)
    before = ws.snapshot()
    if case.surface == "cli-subprocess":
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        done = subprocess.run([sys.executable, "-m", "SynPoLib", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        code, out, err = done.returncode, done.stdout, done.stderr
    else:
        code = main(argv)
        captured = capsys.readouterr()
        out, err = captured.out, captured.err
    assert code == case.expect, (code, out, err)
    text = err if case.stream == "err" else out
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if case.stream == "err":
        assert len(lines) == 1, text
    line = next((ln for ln in lines if ln.startswith(case.prefix)), None)
    assert line is not None, text
    assert re.search(case.message, line), line
    assert ws.snapshot() == before, "a refused run changed the case's folder"
    assert lite_backend.encoder_calls.counts == calls, "refused after the model had started working"


# ----------------------------------------------------------------------------- the Python API

def _api_inputs():
    volume, mask = _phantom()
    return {"volume": volume, "mask": mask}


def _support(a, **kw):
    from SynPoLib.volume import Support

    args = dict(volume=a["volume"], mask=a["mask"], slices=[SUPPORT_SLICE])
    args.update(kw)
    return Support(**args)


def _segment(a, backend, **kw):
    from SynPoLib.volume import segment_volume

    return segment_volume(backend, a["volume"], _support(a), **kw)


def _lite_config(**edits):
    from SynPoLib.presets import preset

    return preset("lite").updated(**edits)


def _files(ws, **kw):
    from SynPoLib.files import SegmentRequest, segment_files

    args = dict(query=ws.file("q.nii.gz"), support_mask=ws.file("m.nrrd"), support_slice=[SUPPORT_SLICE],
                out=ws.out("out/r.seg.nrrd"), quiet=True)
    args.update(kw)
    return segment_files(SegmentRequest(**args))


def api(id, klass, call, message, exc=InputError) -> Case:
    return Case(id=id, klass=klass, surface="api", args=call, expect=exc, message=message)


API_CASES = [
    api("support-float-slice", "api", lambda a, b, ws: _support(a, slices=[4.7]),
        r"a support slice index must be a whole number, got 4\.7"),
    api("support-bool-slice", "api", lambda a, b, ws: _support(a, slices=[True]), r"must be a whole number, got True"),
    api("support-axis-3", "api", lambda a, b, ws: _support(a, axis=3), r"axis must be 0, 1 or 2"),
    api("support-axis-float", "api", lambda a, b, ws: _support(a, axis=1.5), r"axis must be 0, 1 or 2 .* got 1\.5"),
    api("support-mask-shape", "api", lambda a, b, ws: _support(a, mask=a["mask"][:, :-1]),
        r"support mask shape \(8, 19, 24\) differs"),
    api("support-slice-empty", "api", lambda a, b, ws: _support(a, slices=[0]), r"support mask is empty on slice 0"),
    api("support-slice-outside", "api", lambda a, b, ws: _support(a, slices=[8]), r"support slice 8 is outside"),
    api("support-no-slice", "api", lambda a, b, ws: _support(a, slices=[]), r"give at least one support slice"),
    api("support-2d-volume", "api", lambda a, b, ws: _support(a, volume=a["volume"][0], mask=a["mask"][0]),
        r"support volume must be 3-D"),
    api("support-nan-mask", "api", lambda a, b, ws: _support(a, mask=np.where(a["mask"], 1.0, np.nan)),
        r"support mask holds NaN/Inf"),
    api("support-negative-spacing", "api", lambda a, b, ws: _support(a, spacing=(2.0, -1.0, 1.0)),
        r"support spacing must be 3 positive numbers"),
    api("support-window-reversed", "api", lambda a, b, ws: _support(a, window=(10.0, 5.0)),
        r"support window \(10, 5\): LOW must be below HIGH"),
    api("slices-float", "api", lambda a, b, ws: _segment(a, b, slices=[2.5]),
        r"a query slice index must be a whole number, got 2\.5"),
    api("slices-pair-reversed", "api", lambda a, b, ws: _segment(a, b, slices=(6, 2)),
        r"the query slice range \(6, 2\) is empty"),
    api("slices-empty", "api", lambda a, b, ws: _segment(a, b, slices=range(0)), r"the query slice range is empty"),
    api("slices-outside", "api", lambda a, b, ws: _segment(a, b, slices=[3, 9]), r"query slices \[9\] are outside"),
    api("slices-a-string", "api", lambda a, b, ws: _segment(a, b, slices="2:5"), r"slices must be a range"),
    api("query-spacing-zero", "api", lambda a, b, ws: _segment(a, b, query_spacing=(0.0, 1.0, 1.0)),
        r"query_spacing must be 3 positive numbers"),
    api("query-window-nan", "api", lambda a, b, ws: _segment(a, b, query_window=(float("nan"), 1.0)),
        r"query_window \(nan, 1\): LOW must be below HIGH"),
    api("batch-size-zero", "api", lambda a, b, ws: _segment(a, b, batch_size=0), r"batch_size must be >= 1"),
    api("batch-size-float", "api", lambda a, b, ws: _segment(a, b, batch_size=1.5),
        r"batch_size must be a whole number, got 1\.5"),
    api("config-a-string", "api", lambda a, b, ws: _segment(a, b, config="lite"),
        r"config must be a SynPoConfig, got str"),
    api("backend-a-string", "api", lambda a, b, ws: _segment(a, "lite"), r"backend must be a SynPoLib Backend"),
    api("video-mode-on-lite", "api", lambda a, b, ws: _segment(a, b, config=_lite_config(**{"propagation.mode":
                                                                                             "video"})),
        r"the video mode runs SAM 2\.1's video predictor, which the lite backend does not have"),
    api("query-2d", "api", lambda a, b, ws: __import__("SynPoLib.volume", fromlist=["x"]).segment_volume(
        b, a["volume"][0], _support(a)), r"query volume must be 3-D"),
    api("query-complex", "api", lambda a, b, ws: __import__("SynPoLib.volume", fromlist=["x"]).segment_volume(
        b, a["volume"].astype(np.complex64), _support(a), same_volume=False), r"query volume must hold numbers"),
    api("query-all-nan", "api", lambda a, b, ws: __import__("SynPoLib.volume", fromlist=["x"]).segment_volume(
        b, np.full(SHAPE, np.nan, np.float32), _support(a)), r"the volume has no finite voxel"),
    api("same-volume-other-shape", "api", lambda a, b, ws: __import__("SynPoLib.volume", fromlist=["x"]).segment_volume(
        b, a["volume"][:, :-2], _support(a), same_volume=True), r"same_volume was given but .* shapes differ"),
    api("support-vanishes-at-roi", "api", lambda a, b, ws: __import__("SynPoLib.volume", fromlist=["x"]).segment_volume(
        b, np.zeros((3, 900, 900), np.float32) + np.arange(900, dtype=np.float32)[None, None, :],
        __import__("SynPoLib.volume", fromlist=["x"]).Support(
            volume=np.zeros((3, 900, 900), np.float32) + np.arange(900, dtype=np.float32)[None, None, :],
            mask=np.pad(np.ones((1, 1, 1), bool), ((1, 1), (450, 449), (450, 449))), slices=[1]),
        config=_lite_config(**{"window.window": (0.0, 900.0)})),
        r"the support mask on slice 1 is too small to survive scaling"),
    api("assignment-to-unlabelled-slice", "api", lambda a, b, ws: _segment(a, b, slices=[3], assignment={3: 2}),
        r"no support assigned to query slices \[3\]"),
    api("files-float-support-slice", "api", lambda a, b, ws: _files(ws, support_slice=[4.5]),
        r"--support-slice 4\.5 must be a whole number"),
    api("files-axis-string", "api", lambda a, b, ws: _files(ws, axis="0"), r"--axis must be 0, 1 or 2 .* got '0'"),
    api("files-no-support-slice", "api", lambda a, b, ws: _files(ws, support_slice=[]), r"--support-slice is required"),
    api("files-window-wrong-length", "api", lambda a, b, ws: _files(ws, window=[1.0]),
        r"--window takes 2 numbers \(LOW HIGH\)"),
    api("files-path-not-a-path", "api", lambda a, b, ws: _files(ws, labelmap=3), r"--labelmap must be a path, got 3"),
    api("files-cancelled-before-start", "api", lambda a, b, ws: _segment(a, b, cancel=lambda: True),
        r"cancelled after 1 of 8 slices", exc=Cancelled),
]


def _digests(arrays) -> Dict[str, str]:
    return {k: hashlib.sha256(np.ascontiguousarray(v).tobytes()).hexdigest() for k, v in arrays.items()}


@pytest.mark.parametrize("case", API_CASES, ids=[c.id for c in API_CASES])
def test_api_refuses(case, lite_backend, tmp_path):
    arrays = _api_inputs()
    ws = Workspace(tmp_path)
    before, files_before = _digests(arrays), None
    if case.id.startswith("files-"):
        ws.file("q.nii.gz"), ws.file("m.nrrd")
        files_before = ws.snapshot()
    calls = dict(lite_backend.encoder_calls.counts)
    with pytest.raises(case.expect) as caught:
        case.args(arrays, lite_backend, ws)
    message = str(caught.value)
    assert "\n" not in message and re.search(case.message, message), message
    assert _digests(arrays) == before, "the caller's arrays changed"
    if case.expect is InputError:
        assert lite_backend.encoder_calls.counts == calls, "refused after work had started"
    if files_before is not None:
        assert ws.snapshot() == files_before


# ----------------------------------------------------------------------------- NaN / Inf: a policy, not a refusal

@pytest.mark.slow
def test_nan_and_inf_voxels_are_background_and_said_in_one_line(tmp_path, lite_backend, capsys):
    """NRRD keeps NaN (SimpleITK writes NIfTI NaN as 0): the CLI and the API, one policy."""
    from SynPoLib.cli import main

    ws = Workspace(tmp_path)
    query = ws.file("nanq.nrrd")
    before = {k: v for k, v in ws.snapshot().items()}
    labelmap = ws.out("out/r.nrrd")
    code = main(["segment", "--query", query, "--support-mask", ws.file("m.nrrd"), "--support-slice",
                 str(SUPPORT_SLICE), "--range", "3:5", "--out", ws.out("out/r.seg.nrrd"), "--labelmap", labelmap,
                 "--quiet", "--no-auto-stop"])
    out = capsys.readouterr().out
    assert code == 0
    notes = [ln for ln in out.splitlines() if "NaN/Inf" in ln]
    assert notes == ["query: 7 NaN/Inf voxels left out of the intensity window, shown to the model as background "
                     "and never painted"], out
    volume = sitk.GetArrayFromImage(sitk.ReadImage(query))
    result = sitk.GetArrayFromImage(sitk.ReadImage(labelmap))
    nonfinite = ~np.isfinite(volume)
    assert nonfinite.sum() == 7 and not result[nonfinite].any()
    _, truth = _phantom()
    assert truth[3, 9, 11] and truth[4, 10, 12]  # the NaN voxels lie inside the structure: a hole, by policy
    inside = truth[3:5] & np.isfinite(volume[3:5])
    got = result[3:5] > 0
    assert 2 * (got & inside).sum() / (got.sum() + inside.sum()) > 0.85
    assert {k: v for k, v in ws.snapshot().items() if k in before} == before  # the inputs are unchanged
    # the API says it too, and the windowed image shows the NaN voxels as background (0), +Inf included
    from SynPoLib.preprocess import apply_window
    from SynPoLib.volume import Support, segment_volume

    part = volume[3:5]
    finite = np.isfinite(part)
    win = apply_window(part, (50.0, 250.0))
    assert (win[~finite] == 0).all()  # +Inf too: background, not the brightest grey
    np.testing.assert_array_equal(win[finite], np.clip(np.rint((part[finite] - 50.0) * 255.0 / 200.0), 0, 255))
    _, mask = _phantom()
    api_result = segment_volume(lite_backend, volume, Support(volume, mask, [SUPPORT_SLICE]), slices=[3],
                                config=_lite_config(**{"quality.auto_stop": False}))
    assert api_result.notes == tuple(notes) and not api_result.mask[~np.isfinite(volume)].any()


# ----------------------------------------------------------------------------- the MRML adapter

def _scene_case():
    from slicer_scene import LPS, add_segmentation, add_volume, geometry, new_scene, phantom

    scene = new_scene()
    m = geometry(LPS, (1.0, 1.0, 1.5), (7.0, 10.0, -10.0))
    image, truth = phantom(m, (14, 22, 18), (1.5, -2.0, 1.0), (5.0, 6.0, 4.0))
    volume = add_volume(scene, image, m, name="vol", window=(50.0, 900.0))
    drawn = [int(s) for s in np.flatnonzero(truth.any(axis=(1, 2)))]
    one = np.zeros_like(truth)
    middle = drawn[len(drawn) // 2]
    one[middle] = truth[middle]
    seg, (sid, eid) = add_segmentation(scene, volume, [("target", one, (1, 0, 0)),
                                                       ("nothing", np.zeros_like(truth), (0, 1, 0))])
    return {"scene": scene, "volume": volume, "seg": seg, "sid": sid, "eid": eid, "middle": middle,
            "matrix": m, "image": image, "truth": truth}


def _read(**kw):
    """A read_inputs call made later, on the case's scene."""
    from SynPoLib import scene as mrml

    def setup(c):
        args = dict(axis=0)
        args.update({k: (v(c) if callable(v) else v) for k, v in kw.items()})
        segment = args.pop("segment", c["sid"])
        return lambda: mrml.read_inputs(c["volume"], c["seg"], segment, **args)
    return setup


def _vector_volume(c):
    import slicer

    from SynPoLib import scene as mrml

    node = slicer.vtkMRMLVectorVolumeNode()
    node.SetName("rgb")
    c["scene"].AddNode(node)
    return lambda: mrml.read_inputs(node, c["seg"], c["sid"], axis=0)


def _bare_query(c):
    import slicer

    bare = slicer.vtkMRMLScalarVolumeNode()
    bare.SetName("bare")
    c["scene"].AddNode(bare)
    return _read(query_volume=bare)(c)


def _warped(c):
    import slicer

    grid = slicer.vtkMRMLGridTransformNode()
    grid.SetName("warp")
    c["scene"].AddNode(grid)
    c["volume"].SetAndObserveTransformNodeID(grid.GetID())
    return _read()(c)


def _oblique_query(c):
    from slicer_scene import LPS, add_volume, geometry, rotation

    m = geometry(rotation((1, 1, 0), 30.0) @ LPS, (1.0, 1.0, 1.2), (5.0, 9.0, -8.0))
    other = add_volume(c["scene"], c["image"], m, name="oblique")
    return _read(query_volume=other)(c)


def _surface_output(c):
    import slicer

    from SynPoLib.scene import SegmentWriter

    surface = slicer.vtkMRMLSegmentationNode()
    surface.SetName("surfaces")
    c["scene"].AddNode(surface)
    surface.GetSegmentation().SetSourceRepresentationName("Closed surface")
    return lambda: SegmentWriter(c["volume"], surface).begin()


def adapter(id, setup, message, exc=MRMLInputError) -> Case:
    """``setup(scene case)`` prepares the mistake and returns the call that makes it."""
    return Case(id=id, klass="adapter", surface="adapter", args=setup, expect=exc, message=message)


ADAPTER_CASES = [
    adapter("segment-missing", _read(segment="missing"), r"segment 'missing' is not in 'segmentation'"),
    adapter("segment-empty", _read(segment=lambda c: c["eid"]), r"segment 'nothing' has no voxel inside 'vol'"),
    adapter("slice-not-drawn", _read(support_slices=lambda c: [c["middle"] + 1]), r"is not drawn on slice"),
    adapter("slice-outside", _read(support_slices=[99]), r"support slice 99 is outside 'vol'"),
    adapter("slice-float", _read(support_slices=lambda c: [c["middle"] + 0.5]),
            r"a support slice index must be a whole number"),
    adapter("axis-3", _read(axis=3), r"axis must be 0, 1 or 2"),
    adapter("custom-range-outside", _read(slice_range="custom", first=5, last=99),
            r"custom slice range 5\.\.99 is outside"),
    adapter("range-mode-unknown", _read(slice_range="up"), r"unknown slice range 'up'"),
    adapter("margin-negative", _read(slice_range="around", margin=-1), r"margin .* must be >= 0"),
    adapter("vector-volume", _vector_volume, r"grey"),
    adapter("query-without-voxels", _bare_query, r"no voxels"),
    adapter("non-linear-transform", _warped, r"non-linear transform 'warp'.*Harden"),
    adapter("oblique-query", _oblique_query, r"no slice direction within 20 degrees"),
    adapter("surface-output", _surface_output, r"keeps its segments as 'Closed surface'"),
]


@pytest.mark.parametrize("case", ADAPTER_CASES, ids=[c.id for c in ADAPTER_CASES])
def test_adapter_refuses(case):
    from slicer_scene import snapshot

    c = _scene_case()
    call = case.args(c)  # the set-up (a vector volume, a transform) is part of the scene before
    before = snapshot(c["scene"])
    with pytest.raises(case.expect) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message and re.search(case.message, message), message
    assert snapshot(c["scene"]) == before


@pytest.mark.slow
def test_adapter_nan_voxels_follow_the_policy(lite_backend):
    """A volume node with NaN voxels: the run finishes, says so, and paints none of them."""
    from slicer_scene import snapshot
    from vtk.util import numpy_support

    from SynPoLib import scene as mrml
    from SynPoLib.scene import run_on_nodes

    c = _scene_case()
    scalars = numpy_support.vtk_to_numpy(c["volume"].GetImageData().GetPointData().GetScalars())
    flat = scalars.reshape(14, 22, 18)
    s = c["middle"]
    nan_at = (s + 1, 11, 9)
    flat[nan_at] = np.nan
    c["volume"].GetImageData().Modified()
    before = snapshot(c["scene"])
    run = run_on_nodes(lite_backend, c["volume"], c["seg"], c["sid"], axis=0, support_slices=[s],
                       slice_range="around", margin=1)
    status = run.start().wait(timeout=300)
    assert status.state == "finished", status.error
    assert run.result.notes == ("query: 1 NaN/Inf voxels left out of the intensity window, shown to the model as "
                                "background and never painted",)
    got = mrml.segment_array(run.writer.segmentation_node, run.writer.segment_id, c["volume"])
    assert c["truth"][nan_at] and got[s + 1].any() and not got[nan_at]  # a hole where the NaN is, by policy
    after = snapshot(c["scene"])
    assert [n for n in after["nodes"] if n["id"] in {m["id"] for m in before["nodes"]}] == before["nodes"]


# ----------------------------------------------------------------------------- counts

ALL_CASES = CLI_CASES + API_CASES + ADAPTER_CASES
#: the policy rows (tests above) that run the model instead of refusing
POLICY_CASES = {"nan-inf-voxels-cli-and-api": "silent", "nan-voxels-adapter": "adapter"}


def catalogue_counts() -> Dict[str, Counter]:
    by_class = Counter(c.klass for c in ALL_CASES) + Counter(POLICY_CASES.values())
    by_surface = Counter(c.surface for c in ALL_CASES) + Counter({"cli+api": 1, "adapter": 1})
    return {"class": by_class, "surface": by_surface}


def test_catalogue_covers_every_class_of_the_issue():
    counts = catalogue_counts()["class"]
    for klass, at_least in (("overwrite", 4), ("silent", 8), ("late", 14), ("blame", 19)):
        assert counts[klass] >= at_least, (klass, counts[klass])
    ids = [(c.surface, c.id) for c in ALL_CASES]
    assert len(ids) == len(set(ids))


if __name__ == "__main__":
    counts = catalogue_counts()
    total = sum(counts["class"].values())
    print(f"{total} cases")
    for key in ("class", "surface"):
        print(f"by {key}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts[key].items())))
