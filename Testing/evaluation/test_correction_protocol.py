"""The correction protocol (real LiteMedSAM, real files): the simulated user corrects what the
review list puts first, the re-run recomputes what the plan says, the curve reaches the
scoreboard (CSV, Markdown, plot) and a second run resumes from the store."""

import numpy as np
import pytest
import SimpleITK as sitk

from SynPoLib import preset
from SynPoLib.evaluation import ResultStore, Subject, evaluate, standard_methods
from SynPoLib.evaluation.corrections import (CORRECTION, CorrectionProtocol, copy_corrected, correction_case, reached,
                                             simulate)
from SynPoLib.volume import SliceRecord
from SynPoLib.volume.corrections import plan_correction
from SynPoLib.volume.qc import review_order

from conftest import ellipsoid_volume

PROTOCOL = CorrectionProtocol(points=(0, 1, 2), targets=(0.85, 0.99), max_corrections=2)


def test_review_order_puts_the_most_doubtful_slice_first():
    records = [SliceRecord(index=1, support_index=5, confidence=0.95, score=0.95, pixels=40),
               SliceRecord(index=2, support_index=5, confidence=0.70, score=0.70, pixels=40),  # low confidence
               SliceRecord(index=3, support_index=5, confidence=0.80, score=0.80, pixels=40),  # lower than 0.85 too
               SliceRecord(index=4, support_index=5, confidence=float("-inf"), score=float("-inf"), pixels=0),
               SliceRecord(index=5, support_index=-1, pixels=50),  # the labelled slice: never
               SliceRecord(index=6, support_index=5, confidence=0.90, score=0.90, pixels=40)]
    assert review_order(records) == [4, 2, 3, 6, 1]


def test_copy_baseline_and_reach():
    truth = np.zeros((6, 4, 4), np.uint8)
    for k in range(6):
        truth[k, :k % 3 + 1] = 1
    out = copy_corrected(truth, [1, 5], [0, 2, 3, 4], axis=0)
    for q, s in {0: 1, 2: 1, 3: 1, 4: 5}.items():  # the nearest labelled slice, ties (3) to the lower
        np.testing.assert_array_equal(out[q], truth[s])
    assert reached([0.5, 0.86, 0.9], 0.85) == 1 and reached([0.5, 0.6], 0.85) is None


@pytest.fixture(scope="module")
def blob(tmp_path_factory):
    folder = tmp_path_factory.mktemp("correction")
    volume, mask = ellipsoid_volume(shape=(12, 28, 32), radii=(5.2, 8, 10), seed=3)
    for name, array in (("t1.nii.gz", volume), ("labels.nii.gz", mask.astype(np.uint8) * 4)):
        image = sitk.GetImageFromArray(array)
        image.SetSpacing((0.9, 0.9, 2.0))
        sitk.WriteImage(image, str(folder / name))
    return Subject(id="blob", image=folder / "t1.nii.gz", labels=folder / "labels.nii.gz"), folder


def test_the_simulated_user_corrects_what_the_review_list_flags_and_the_rerun_follows_the_plan(blob, lite_backend):
    subject, _ = blob
    image, labels = subject.load()
    case = correction_case("blob", "blob", labels, label=4)
    method = next(m for m in standard_methods(preset("lite")) if m.name == "synpo")
    from SynPoLib.volume import Support, segment_volume

    first = segment_volume(lite_backend, image.array, Support(image.array, labels == 4, list(case.support_slices)),
                           config=method.config, slices=case.scored, query_spacing=image.spacing,
                           assignment=case.assignment_map, same_volume=True)
    entry, masks = simulate(case, method, lite_backend, image, labels, PROTOCOL)
    c = entry["correction"]
    assert c["corrected"][0] == review_order(first.records, method.config.mode_quality())[0], \
        "the first correction is the slice the review list puts first"
    assert len(c["dice"]) == len(c["copy_dice"]) == len(c["corrected"]) + 1 == 3
    truth = labels == 4
    for q in c["corrected"]:
        np.testing.assert_array_equal(masks[case.scored.index(q)], truth[q], err_msg="corrected slices are the truth")
    # each re-run recomputes exactly what the plan says: between the new correction and its neighbours
    labelled = {case.support_slices[0]: True}
    for k, q in enumerate(c["corrected"]):
        plan = plan_correction(case.scored, {case.support_slices[0]: case.support_slices[0]}, {q: True},
                               {p: True for p in c["corrected"][:k]})
        assert c["recomputed"][k] == len(plan.recompute)
        labelled[q] = True
    copy0 = copy_corrected(truth, case.support_slices, case.scored, 0)
    inter = (copy0[case.scored] & truth[case.scored]).sum()
    assert c["copy_dice"][0] == pytest.approx(2 * inter / (copy0[case.scored].sum() + truth[case.scored].sum()))
    assert c["copy_dice"][-1] >= c["copy_dice"][0]


def test_the_curve_reaches_the_scoreboard_and_resumes(blob, lite_backend, tmp_path):
    subject, _ = blob
    _, labels = subject.load()
    cases = [correction_case("blob", "blob", labels, label=4)]
    methods = [m for m in standard_methods(preset("lite")) if m.name == "synpo"]
    kwargs = dict(out=tmp_path / "out", work=tmp_path / "work", base_config=preset("lite"), title="t",
                  command="test", data="blob", progress=False, correction_cases=cases, correction_methods=methods,
                  correction_protocol=PROTOCOL)
    _, stats, outputs = evaluate([], [], lite_backend, {"blob": subject}, **kwargs)
    assert stats.computed == 1
    text = outputs.summary.read_text()
    assert "## Corrections" in text and "| synpo |" in text and "| copy, synpo's corrections |" in text
    assert (tmp_path / "out" / "corrections.csv").read_text().startswith("structure,method,n_scored")
    assert (tmp_path / "out" / "corrections.png").is_file()
    stored = list(ResultStore(tmp_path / "work").entries())
    assert len(stored) == 1 and stored[0]["case"]["protocol"] == CORRECTION
    _, again, _ = evaluate([], [], lite_backend, {"blob": subject}, **kwargs)
    assert (again.computed, again.skipped) == (0, 1)
