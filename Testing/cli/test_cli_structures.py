"""``synpo segment`` with several structures (``--label`` repeated or ``all``) and run again
after corrections (``--corrected``): real files, the real LiteMedSAM, one validator."""

import json

import numpy as np
import pytest
import SimpleITK as sitk
import slicerio

from SynPoLib.cli import main

from conftest import ellipsoid_volume

SPACING = (0.9, 1.1, 2.0)


def write(path, array):
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(SPACING)
    image.SetOrigin((3.0, -4.0, 5.0))
    sitk.WriteImage(image, str(path))
    return path


@pytest.fixture
def files(tmp_path):
    shape = (12, 36, 36)
    volume, a = ellipsoid_volume(shape=shape, centre=(5.5, 10, 10), radii=(4.5, 6, 6), seed=0)
    vol_b, b = ellipsoid_volume(shape=shape, centre=(5.5, 25, 25), radii=(4.5, 6, 6), seed=1)
    volume = np.where(b, vol_b, volume).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[a] = 3
    labels[b] = 5
    return {"dir": tmp_path, "labels_array": labels, "query": write(tmp_path / "query.nii.gz", volume),
            "labels": write(tmp_path / "labels.nii.gz", labels), "out": tmp_path / "out" / "result.seg.nrrd"}


def segment(f, *extra):
    return ["segment", "--query", f["query"], "--support-mask", f["labels"], "--support-slice", 5, "--range", "2:9",
            "--mode", "slices", "--no-auto-stop", "--out", f["out"], "--quiet", *extra]


def run_cli(args, capsys):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def read_labels(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_several_labels_run_once_write_one_segment_each_and_run_again_after_a_correction(files, capsys):
    f = files
    labelmap, records = f["dir"] / "out" / "labels.nii.gz", f["dir"] / "out" / "records.json"
    code, out, err = run_cli(segment(f, "--label", 3, "--label", 5, "--labelmap", labelmap, "--records", records,
                                     "--reference", f["labels"]), capsys)
    assert code == 0, err
    seg = slicerio.read_segmentation(str(f["out"]))
    assert [s["name"] for s in seg["segments"]] == ["label 3", "label 5"]
    first = read_labels(labelmap)
    assert set(np.unique(first)) == {0, 3, 5}
    truth = f["labels_array"]
    for label in (3, 5):
        inner = first[3:8] == label
        assert 2 * (inner & (truth[3:8] == label)).sum() / (inner.sum() + (truth[3:8] == label).sum()) > 0.8
    assert "label 3:" in out and "label 5:" in out and "Dice" in out
    data = json.loads(records.read_text())
    assert sorted(data["structures"]) == ["label 3", "label 5"] and data["conflict_rule"]
    # the user fixes slice 7 of structure 3 (draws it one pixel wider) and runs again
    fixed = first.copy()
    grown = np.zeros_like(fixed[7], bool)
    grown[1:-1, 1:-1] = (first[7] == 3)[1:-1, 1:-1] | (first[7] == 3)[2:, 1:-1] | (first[7] == 3)[:-2, 1:-1]
    fixed[7][grown & (fixed[7] == 0)] = 3
    assert (fixed[7] != first[7]).any()
    corrected, again = f["dir"] / "fixed.nii.gz", f["dir"] / "again" / "labels.nii.gz"
    image = sitk.ReadImage(str(labelmap))
    out_image = sitk.GetImageFromArray(fixed)
    out_image.CopyInformation(image)
    sitk.WriteImage(out_image, str(corrected))
    code, out, err = run_cli(segment(dict(f, out=f["dir"] / "again" / "result.seg.nrrd"), "--label", 3, "--label", 5,
                                     "--corrected", corrected, "--previous", labelmap, "--labelmap", again), capsys)
    assert code == 0, err
    result = read_labels(again)
    np.testing.assert_array_equal(result[7], fixed[7], err_msg="the corrected slice stays as the user drew it")
    np.testing.assert_array_equal(result[:6], first[:6], err_msg="slices the correction cannot change are kept")
    assert "ran again after corrections" in out and "label 3: " in out
    assert "corrected 7; recomputed 2 slices" in out  # 6 and 8: between the support 5 and 7, and 7 and the range end


def test_label_all_is_every_label_on_the_support_slice(files, capsys):
    f = files
    code, out, err = run_cli(segment(f, "--label", "all", "--range", "4:7"), capsys)
    assert code == 0, err
    assert [s["name"] for s in slicerio.read_segmentation(str(f["out"]))["segments"]] == ["label 3", "label 5"]


@pytest.mark.parametrize("extra, message", [
    (("--label", 3, "--label", "all"), "--label all takes every label"),
    (("--label", "x"), "--label 'x' is not a label value"),
    (("--label", 3, "--label", 5, "--name", "organ"), "--name applies to one structure"),
    (("--label", 3, "--label", 5, "--reference-label", 3), "--reference-label applies to one --label"),
    (("--corrected-slices", 4), "--corrected-slices needs --corrected"),
    (("--label", 3, "--label", 9), "--label 9 is absent"),
])
def test_bad_multi_structure_and_correction_options_are_refused(files, capsys, extra, message):
    code, out, err = run_cli(segment(files, *extra), capsys)
    assert code == 2 and message in err, err
    assert not files["out"].parent.exists()


def test_a_correction_must_say_which_slices_and_lie_on_the_query_grid(files, capsys):
    f = files
    code, out, err = run_cli(segment(f, "--label", 3, "--corrected", f["labels"]), capsys)
    assert code == 2 and "say which slices you corrected" in err
    other = write(f["dir"] / "other.nii.gz", np.zeros((12, 36, 30), np.uint8))
    code, out, err = run_cli(segment(f, "--label", 3, "--corrected", other, "--corrected-slices", 4), capsys)
    assert code == 2 and "--corrected" in err and "grid" in err
    code, out, err = run_cli(segment(f, "--label", 3, "--corrected", f["labels"], "--previous", f["labels"]), capsys)
    assert code == 2 and "does not differ from --previous" in err
    assert not f["out"].parent.exists()
