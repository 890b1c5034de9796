"""``synpo batch`` on the command line: refusals before any work (exit 2, one line, nothing
written) and the exit code of a batch with a failed case."""

import csv

import pytest

from SynPoLib.cli import main

from conftest import batch_manifest


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def shared_args(cohort, *extra):
    return ["--support", cohort["colin_a"], "--support-mask", cohort["aal_a"], "--support-slice", 0,
            "--label", 77, "--quiet", *extra]


def assert_refused(code, err, out, pattern):
    assert code == 2
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("synpo: error: "), err
    assert pattern in lines[0], lines[0]
    assert not out.exists(), "nothing may be written when a batch is refused"


@pytest.mark.parametrize("extra, pattern", [
    (["--support-slice", 5], "manifest row 1 (colin_a): --support-slice 5 is outside the support volume"),
    (["--set", "points.n_negative=abc"], "points.n_negative expects a whole number"),
    (["--workers", 0], "--workers must be at least 1"),
    (["--mode", "video"], "video predictor"),
])
def test_a_batch_wrong_for_every_case_is_refused_before_any_work(batch_cohort, tmp_path, capsys, extra, pattern):
    manifest = batch_manifest(tmp_path / "m.csv", batch_cohort)
    out = tmp_path / "out"
    code, _, err = run_cli(["batch", manifest, "--out", out, *shared_args(batch_cohort), *extra], capsys)
    assert_refused(code, err, out, pattern)
    if extra[0] == "--support-slice":
        assert "(and 3 more row(s))" in err


def test_strict_refuses_a_batch_with_one_bad_row(batch_cohort, tmp_path, capsys):
    manifest = batch_manifest(tmp_path / "m.csv", batch_cohort, extra=[("broken", batch_cohort["broken"])])
    out = tmp_path / "out"
    code, _, err = run_cli(["batch", manifest, "--out", out, "--strict", *shared_args(batch_cohort)], capsys)
    assert_refused(code, err, out, "manifest row 5 (broken): --query")
    assert "ends early" in err


def test_manifest_errors_are_one_line(batch_cohort, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"query,slice\n{batch_cohort['mni_a']},3\n")
    out = tmp_path / "out"
    code, _, err = run_cli(["batch", manifest, "--out", out, *shared_args(batch_cohort)], capsys)
    assert_refused(code, err, out, "unknown field(s) slice")
    code, _, err = run_cli(["batch", tmp_path / "none.csv", "--out", out, *shared_args(batch_cohort)], capsys)
    assert_refused(code, err, out, "manifest not found")
    # a case that would write over another case's input
    inside = tmp_path / "out2" / "cases" / "x" / "x.seg.nrrd"
    inside.parent.mkdir(parents=True)
    inside.write_bytes(open(batch_cohort["colin_a"], "rb").read())
    manifest.write_text(f"query,output\n{inside},x\n")
    code, _, err = run_cli(["batch", manifest, "--out", tmp_path / "out2", *shared_args(batch_cohort)], capsys)
    assert code == 2 and "would write" in err and inside.read_bytes() == open(batch_cohort["colin_a"], "rb").read()


def test_a_failed_case_makes_exit_code_1_and_says_why(batch_cohort, tmp_path, capsys):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"query,output\n{batch_cohort['blank']},blank\n")
    out = tmp_path / "out"
    code, stdout, err = run_cli(["batch", manifest, "--out", out, *shared_args(batch_cohort)], capsys)
    assert code == 1, err
    assert "failed: blank: --query" in stdout and "no voxel holds a finite value" in stdout
    with open(out / "summary.csv") as handle:
        (row,) = list(csv.DictReader(handle))
    assert row["status"] == "failed" and "no voxel holds a finite value" in row["error"]


def test_ray_options_need_the_ray_engine_and_one_driver_per_folder(batch_cohort, tmp_path, capsys):
    manifest = batch_manifest(tmp_path / "m.csv", batch_cohort)
    out = tmp_path / "out"
    code, _, err = run_cli(["batch", manifest, "--out", out, "--address", "auto", *shared_args(batch_cohort)], capsys)
    assert_refused(code, err, out, "--address apply to --engine ray")
    # a second driver on a folder another one holds is refused, before it touches a case
    import fcntl

    out.mkdir()
    with open(out / "batch.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        code, _, err = run_cli(["batch", manifest, "--out", out, *shared_args(batch_cohort)], capsys)
    assert code == 2 and "another synpo batch" in err and "is writing into" in err
    assert not (out / "cases").exists()
