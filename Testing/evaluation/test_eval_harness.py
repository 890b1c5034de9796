"""The harness end to end with the real LiteMedSAM: methods, CLI outputs, resuming."""

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from SynPoLib import PointMethod, PromptStrategy, preset
from SynPoLib.cli import main
from SynPoLib.evaluation import (FeatureSubset, ResultStore, Subject, evaluate_case, read_csv,
                                 select_methods, standard_methods, within_volume_case)

from conftest import ellipsoid_volume


def test_methods_on_the_lite_backend(lite_backend):
    methods = {m.name: m for m in standard_methods(preset("lite"), alphas=(0.0, 1.0))}
    assert "n/a with lite" in methods["ablation-2-dino"].unavailable(lite_backend)
    assert all(m.unavailable(lite_backend) is None for n, m in methods.items() if n != "ablation-2-dino")
    fp = {n: m.fingerprint(lite_backend) for n, m in methods.items()}
    # one backbone and a preset without refine rounds: these rows are one configuration each
    assert fp["ablation-1-sam"] == fp["persam-box"]
    assert fp["ablation-3-psm"] == fp["synpo"]
    assert len({fp[n] for n in ("synpo", "ablation-1-sam", "ablation-4-nrm", "persam-points", "copy",
                                "alpha=0", "alpha=1")}) == 7
    assert methods["ablation-4-nrm"].config.refine.rounds == 2
    assert methods["persam-points"].config.prompt.strategy == PromptStrategy.POINTS
    assert methods["persam-points"].config.points.method == PointMethod.EXTREMES
    sweep = methods["alpha=0"].config
    assert (sweep.points.alpha, sweep.points.beta) == (0.0, -1.5)
    assert sweep.prompt.strategy == PromptStrategy.BOX_NEGATIVES  # the lite box carries no negatives
    paper_sweep = standard_methods(preset("paper"), alphas=(1.0,))[-1].config
    assert paper_sweep.prompt.strategy == PromptStrategy.POINTS and paper_sweep.points.beta == -0.5
    assert [m.name for m in select_methods(list(methods.values()), ["copy", "alpha"])] == \
        ["copy", "alpha=0", "alpha=1"]
    with pytest.raises(ValueError, match="unknown method"):
        select_methods(list(methods.values()), ["nope"])


def test_feature_subset_hides_backbones(lite_backend):
    view = FeatureSubset(lite_backend, ["sam"])
    image = np.zeros((256, 256, 3), np.uint8)
    assert set(view.encode([image])[0].features) == {"sam"}
    with pytest.raises(ValueError, match="no dino features"):
        FeatureSubset(lite_backend, ["sam", "dino"])


def write_volume(path, array, spacing=(1.0, 1.0, 1.0)):
    img = sitk.GetImageFromArray(array)
    img.SetSpacing(spacing)
    sitk.WriteImage(img, str(path))


@pytest.fixture(scope="module")
def blob_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("blob")
    volume, mask = ellipsoid_volume(shape=(12, 28, 32), radii=(4.5, 8, 10))
    write_volume(folder / "t1.nii.gz", volume, spacing=(0.9, 0.9, 2.0))
    write_volume(folder / "labels.nii.gz", mask.astype(np.uint8) * 5, spacing=(0.9, 0.9, 2.0))
    return folder, volume, mask


def test_eval_cli_writes_every_report_and_resumes(blob_files, tmp_path, lite_backend, capsys):
    folder, volume, mask = blob_files
    out = tmp_path / "eval"
    argv = ["eval", "pair", "--support", str(folder / "t1.nii.gz"), "--support-labels", str(folder / "labels.nii.gz"),
            "--label", "5", "--query", str(folder / "t1.nii.gz"), str(folder / "labels.nii.gz"),
            "--structure", "blob", "--methods", "synpo", "persam-points", "copy", "--out", str(out), "--quiet",
            "--montage", "4"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "computed 3 episodes" in printed and "SynPo" in printed

    extent = [int(s) for s in np.flatnonzero(mask.any(axis=(1, 2)))]
    middle = extent[len(extent) // 2]
    scored = [s for s in extent if s != middle]
    slices = read_csv(out / "slices.csv")
    volumes = read_csv(out / "volumes.csv")
    assert len(slices) == 3 * len(scored) and len(volumes) == 3
    assert sorted({r["slice"] for r in slices}) == [int(s) for s in scored]
    assert {r["support_slice"] for r in slices} == {middle}
    assert all(isinstance(r["fingerprint"], str) for r in volumes)  # hex that may read as a float stays text
    by_method = {r["method"]: r for r in volumes}
    assert by_method["synpo"]["dice"] >= 0.89, by_method["synpo"]["dice"]  # measured 0.922 (lite, CPU)

    # copy: the support slice pasted on every scored slice, pooled by hand (2 |A n B| / (|A| + |B|)
    # summed over the slices), not by the metric under test
    overlap = sum(int((mask[middle] & mask[s]).sum()) for s in scored)
    sizes = sum(int(mask[middle].sum()) + int(mask[s].sum()) for s in scored)
    expected = 2.0 * overlap / sizes
    assert by_method["copy"]["dice"] == pytest.approx(expected, abs=1e-6)
    # the volume Dice is the pooled slice Dice
    for method, row in by_method.items():
        rows = [r for r in slices if r["method"] == method]
        tp = sum(r["dice"] * (r["pred_pixels"] + r["ref_pixels"]) / 2 for r in rows)
        assert row["dice"] == pytest.approx(2 * tp / sum(r["pred_pixels"] + r["ref_pixels"] for r in rows), abs=1e-5)
        assert row["hd95_mm"] >= 0 and row["n_slices"] == len(scored)
    synpo_rows = [r for r in slices if r["method"] == "synpo"]
    # ITK spacing (0.9, 0.9, 2.0) is (i, j, k): slices along k are 2 mm apart
    assert all(r["n_positive"] == 3 and r["offset_mm"] == pytest.approx(2.0 * r["offset"]) for r in synpo_rows)

    summary = (out / "summary.md").read_text()
    assert "## Headline" in summary and "| blob |" in summary and "worst_pair_synpo.png" in summary
    for name in ("dice_pair.png", "distance_pair.png", "worst_pair_synpo.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a second run computes nothing: no encoder pass, same numbers
    calls = dict(lite_backend.encoder_calls.counts)
    assert main(argv) == 0
    assert "computed 0 episodes" in capsys.readouterr().out
    assert lite_backend.encoder_calls.counts == calls
    assert read_csv(out / "volumes.csv") == volumes


def test_stored_masks_and_metrics_agree(blob_files, tmp_path, lite_backend):
    folder, volume, mask = blob_files
    subject = Subject("blob", folder / "t1.nii.gz", folder / "labels.nii.gz")
    loaded = subject.load()
    case = within_volume_case("blob", "blob", loaded[1], label=5)
    method = next(m for m in standard_methods(preset("lite")) if m.name == "copy")
    entry, masks = evaluate_case(case, method, lite_backend, loaded, loaded)
    store = ResultStore(tmp_path / "store")
    store.add(entry, masks)
    again = ResultStore(tmp_path / "store")
    np.testing.assert_array_equal(again.masks(case.key, entry["fingerprint"]), masks)
    assert again.get(case.key, entry["fingerprint"])["volume"]["dice"] == entry["volume"]["dice"]
    # a torn last line (a killed run) is ignored
    with open(tmp_path / "store" / "results.jsonl", "a") as handle:
        handle.write('{"case_key": "x", "finger')
    assert len(ResultStore(tmp_path / "store")) == 1


def test_fsmis_cli_on_the_published_layout(tmp_path, lite_backend, capsys):
    """Synapse layout, fold 1 (support scan 12, queries 6..11), liver, the copy baseline."""
    folder = tmp_path / "sabs_CT_normalized"
    folder.mkdir()
    for scan_id in range(30):
        labels = np.zeros((10, 16, 16), np.uint8)
        labels[2 + scan_id % 3: 8, 4:12, 4:12] = 6
        write_volume(folder / f"image_{scan_id}.nii.gz", (labels * 30).astype(np.float32))
        write_volume(folder / f"label_{scan_id}.nii.gz", labels)
    out = tmp_path / "out"
    assert main(["eval", "fsmis", "--dataset", "synapse", "--data", str(tmp_path), "--folds", "1",
                 "--structures", "liver", "--methods", "copy", "--out", str(out), "--quiet"]) == 0
    rows = read_csv(out / "volumes.csv")
    assert [r["query_id"] for r in rows] == [f"synapse/image_{i}" for i in range(6, 12)]
    assert {r["support_id"] for r in rows} == {"synapse/image_12"} and {r["fold"] for r in rows} == {1}
    # support 12: liver on slices 2..7 -> supports 3, 5, 6; a query with the same extent copies exactly
    same_extent = [r for r in rows if int(r["query_id"].split("_")[-1]) % 3 == 0]
    assert same_extent and all(r["dice"] == pytest.approx(1.0) for r in same_extent)
    assert "Synapse-CT" in (out / "summary.md").read_text()
    with open(out / "slices.csv") as handle:
        assert next(csv.reader(handle))[:3] == ["protocol", "dataset", "fold"]
