"""The ``synpo`` command: error paths (exit 2, one line, nothing written) and geometry."""

import json
import subprocess
import sys

import nrrd
import numpy as np
import pytest
import SimpleITK as sitk

from SynPoLib.cli import main

from conftest import ROOT, ellipsoid_volume

# A direction matrix that is neither identity nor axis-aligned-positive: LPS-flipped, with
# the array's first two axes swapped in space, and anisotropic spacing.
DIRECTION = (0.0, -1.0, 0.0,
             -1.0, 0.0, 0.0,
             0.0, 0.0, 1.0)
SPACING_IJK = (0.8, 1.1, 2.5)
ORIGIN = (12.5, -30.0, 7.25)


def write_image(path, array, spacing=SPACING_IJK, origin=ORIGIN, direction=DIRECTION):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    image.SetDirection(direction)
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def files(tmp_path):
    # off-centre, so that a flipped or swapped axis would move it by several voxels
    volume, mask = ellipsoid_volume(shape=(12, 20, 24), centre=(5.5, 7.0, 15.0), radii=(3.6, 5.0, 6.0))
    labels = mask.astype(np.uint8) * 5
    return {
        "dir": tmp_path,
        "volume": volume, "mask": mask,
        "query": write_image(tmp_path / "query.nii.gz", volume),
        "labels": write_image(tmp_path / "labels.nrrd", labels),
        "out": tmp_path / "out" / "result.seg.nrrd",
    }


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def segment_args(f, *extra):
    return ["segment", "--query", f["query"], "--support-mask", f["labels"], "--support-slice", 6,
            "--out", f["out"], "--quiet", *extra]


def assert_refused(code, err, out_dir, pattern):
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("synpo: error: "), err
    assert pattern in lines[0], lines[0]
    assert not out_dir.exists() or not any(out_dir.iterdir()), "nothing may be written on error"


def test_missing_query_file(files, capsys):
    f = dict(files, query=files["dir"] / "nope.nii.gz")
    code, out, err = run_cli(segment_args(f), capsys)
    assert_refused(code, err, files["out"].parent, "file not found")


def test_unreadable_file(files, capsys):
    bad = files["dir"] / "broken.nii.gz"
    bad.write_bytes(b"this is not an image")
    code, out, err = run_cli(segment_args(dict(files, query=bad)), capsys)
    assert_refused(code, err, files["out"].parent, "cannot read")


def test_empty_support_mask(files, capsys):
    empty = write_image(files["dir"] / "empty.nrrd", np.zeros_like(files["volume"], np.uint8))
    code, out, err = run_cli(segment_args(dict(files, labels=empty)), capsys)
    assert_refused(code, err, files["out"].parent, "empty")


def test_support_slice_outside_volume(files, capsys):
    args = segment_args(files)
    args[args.index("--support-slice") + 1] = 40
    code, out, err = run_cli(args, capsys)
    assert_refused(code, err, files["out"].parent, "outside the support volume")


def test_structure_absent_from_support_slice(files, capsys):
    args = segment_args(files)
    args[args.index("--support-slice") + 1] = 0
    code, out, err = run_cli(args, capsys)
    assert_refused(code, err, files["out"].parent, "absent from support slice 0")


def test_geometry_mismatch(files, capsys):
    shifted = write_image(files["dir"] / "shifted.nrrd", files["mask"].astype(np.uint8),
                          origin=(0.0, 0.0, 0.0))
    code, out, err = run_cli(segment_args(dict(files, labels=shifted)), capsys)
    assert_refused(code, err, files["out"].parent, "not on the support volume's grid: origin")


def test_label_absent(files, capsys):
    code, out, err = run_cli(segment_args(files, "--label", 3), capsys)
    assert_refused(code, err, files["out"].parent, "label 3 is absent")


def test_several_labels_need_a_choice(files, capsys):
    labels = files["mask"].astype(np.uint8) * 5
    labels[0, 0, 0] = 9
    multi = write_image(files["dir"] / "multi.nrrd", labels)
    code, out, err = run_cli(segment_args(dict(files, labels=multi)), capsys)
    assert_refused(code, err, files["out"].parent, "choose one with --label")


def test_bad_range_and_bad_parameter(files, capsys):
    code, out, err = run_cli(segment_args(files, "--range", "5:99"), capsys)
    assert_refused(code, err, files["out"].parent, "--range")
    code, out, err = run_cli(segment_args(files, "--set", "points.nope=1"), capsys)
    assert_refused(code, err, files["out"].parent, "unknown parameter")


def ras_of_voxels(ijk_to_lps, ijk):
    """Physical LPS positions of (n, 3) voxel indices (i, j, k)."""
    homogeneous = np.c_[ijk, np.ones(len(ijk))]
    return (np.asarray(ijk_to_lps) @ homogeneous.T).T[:, :3]


def test_geometry_round_trip_through_the_cli(files, capsys):
    """Non-identity direction, anisotropic spacing: voxels and physical geometry survive."""
    records = files["dir"] / "out" / "records.json"
    labelmap = files["dir"] / "out" / "result.nii.gz"
    png = files["dir"] / "out" / "result.png"
    code, out, err = run_cli(segment_args(files, "--range", "3:10", "--records", records, "--labelmap",
                                          labelmap, "--png", png, "--name", "blob", "--color", 1, 0, 0),
                             capsys)
    assert code == 0, err
    voxels, header = nrrd.read(str(files["out"]))  # pynrrd: an independent reader, (i, j, k) order
    assert header["space"] == "left-posterior-superior"
    query = sitk.ReadImage(str(files["query"]))
    expected_dirs = np.asarray(DIRECTION).reshape(3, 3) * np.asarray(SPACING_IJK)[None, :]
    np.testing.assert_allclose(np.asarray(header["space directions"]).T, expected_dirs, atol=1e-6)
    np.testing.assert_allclose(header["space origin"], ORIGIN, atol=1e-6)
    assert voxels.shape == query.GetSize()
    assert header["Segment0_Name"] == "blob"
    np.testing.assert_allclose([float(v) for v in header["Segment0_Color"].split()], [1, 0, 0])
    # The mask is where the ellipsoid is, voxel by voxel and in millimetres.
    result = np.transpose(voxels > 0, (2, 1, 0))  # back to (k, j, i)
    truth = files["mask"]
    rows = slice(3, 10)
    d = 2 * (result[rows] & truth[rows]).sum() / (result[rows].sum() + truth[rows].sum())
    assert d >= 0.87, d  # measured 0.905 (lite, CPU)
    assert not result[:3].any() and not result[10:].any()
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, :3] = expected_dirs
    ijk_to_lps[:3, 3] = ORIGIN
    # Slice by slice, the mask's centre in millimetres (from the written header) is the
    # true structure's centre as SimpleITK places it: an independent mapping.
    for k in range(4, 8):  # the end caps are a few voxels wide: their centres are noisy
        got_ijk = np.argwhere(voxels[:, :, k] > 0)
        true_ij = np.argwhere(truth[k].T)  # (i, j) of the true voxels in slice k
        got = ras_of_voxels(ijk_to_lps, np.c_[got_ijk, np.full(len(got_ijk), k)]).mean(0)
        want = np.mean([query.TransformContinuousIndexToPhysicalPoint((float(i), float(j), float(k)))
                        for i, j in true_ij], axis=0)
        assert np.linalg.norm(got - want) < 1.5, (k, got, want)
    # the labelmap carries the same geometry and voxels
    lm = sitk.ReadImage(str(labelmap))
    assert lm.GetDirection() == pytest.approx(DIRECTION) and lm.GetSpacing() == pytest.approx(SPACING_IJK)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(lm) > 0, result)
    assert png.stat().st_size > 10_000
    assert files["out"].stat().st_mode & 0o044 == 0o044, "results are readable like any new file"
    data = json.loads(records.read_text())
    assert [r["index"] for r in data["records"]] == list(range(3, 10))


def test_console_script_entry_point_runs(tmp_path):
    """``python -m SynPoLib --help`` (what the ``synpo`` script runs) lists the commands."""
    done = subprocess.run([sys.executable, "-m", "SynPoLib", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "segment" in done.stdout and "demo" in done.stdout


def test_default_mode_is_registration_and_the_paper_one_option_away(files, capsys):
    """No --mode, no --preset: the lite preset's registration mode. --preset paper: the
    paper's whole configuration, slice by slice. --mode slices: the paper's mode with
    the lite prompts."""
    runs = {}
    for name, extra in (("default", ()), ("paper", ("--preset", "paper")), ("slices", ("--mode", "slices"))):
        records = files["dir"] / f"{name}.json"
        out = files["dir"] / name / "result.seg.nrrd"
        args = ["segment", "--query", files["query"], "--support-mask", files["labels"], "--support-slice", 6,
                "--out", out, "--quiet", "--range", "5:8", "--records", records, *extra]
        code, stdout, err = run_cli(args, capsys)
        assert code == 0, err
        runs[name] = (json.loads(records.read_text()), stdout)
    default, stdout = runs["default"]
    assert default["config"]["propagation"]["mode"] == "registration"
    assert "registration mode" in stdout
    assert all("registration" in r["timings"] for r in default["records"] if r["support_index"] >= 0)
    paper = runs["paper"][0]["config"]
    assert paper["propagation"]["mode"] == "slices" and paper["prompt"]["strategy"] == "points"
    slices = runs["slices"][0]["config"]
    assert slices["propagation"]["mode"] == "slices" and slices["prompt"]["strategy"] == "support-box"
    with pytest.raises(SystemExit):  # argparse refuses an unknown preset
        main([str(a) for a in segment_args(files, "--preset", "nope")])
