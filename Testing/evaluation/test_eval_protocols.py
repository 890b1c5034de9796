"""Protocols on synthetic labelled volumes: chosen supports, chunk assignment, scored slices.

Also the FSMIS readers on small synthetic files written in the published layouts
(the real data cannot be downloaded here).
"""

import numpy as np
import pytest
import SimpleITK as sitk

from SynPoLib.evaluation import (DATASETS, Case, ProtocolError, find_scans, fsmis_case, fsmis_cases, fsmis_chunks,
                                 fsmis_fractions, fsmis_support_slices, pairing_case, structure_slices,
                                 within_volume_case)
from SynPoLib.io import InputError


def labelled(n_slices, first, last, label=3, axis=0, shape=(8, 8)):
    """A label map with ``label`` on slices first..last (inclusive) along ``axis``."""
    full = [8, 8, 8]
    full[axis] = n_slices
    labels = np.zeros(full, np.uint8)
    where = [slice(2, 6)] * 3
    where[axis] = slice(first, last + 1)
    labels[tuple(where)] = label
    return labels


def test_fractions_and_supports_match_the_reference_arithmetic():
    assert fsmis_fractions(3) == pytest.approx([1 / 6, 1 / 2, 5 / 6])
    assert fsmis_fractions(1) == [0.5]
    # 18 structure slices 10..27: positions int(18/6)=3, int(9)=9, int(15)=15
    assert fsmis_support_slices(range(10, 28)) == [13, 19, 25]
    # 7 slices: int(7/6)=1, int(3.5)=3, int(35/6)=5
    assert fsmis_support_slices([2, 3, 4, 5, 6, 7, 8]) == [3, 5, 7]
    with pytest.raises(ProtocolError, match="at least 3"):
        fsmis_support_slices([4, 5])


def test_chunks_follow_linspace_boundaries():
    assert fsmis_chunks(list(range(10, 28))) == [list(range(10, 16)), list(range(16, 22)), list(range(22, 28))]
    # 7 slices: boundaries linspace(0, 7, 4).astype(int) = [0, 2, 4, 7]
    assert fsmis_chunks([2, 3, 4, 5, 6, 7, 8]) == [[2, 3], [4, 5], [6, 7, 8]]


def test_fsmis_within_one_volume_excludes_the_supports():
    labels = labelled(40, 10, 27)
    case = fsmis_case("blob", "vol", labels, "vol", labels, label=3)
    assert case.support_slices == (13, 19, 25)
    expected = {q: 13 for q in range(10, 16)} | {q: 19 for q in range(16, 22)} | {q: 25 for q in range(22, 28)}
    for s in (13, 19, 25):
        del expected[s]
    assert case.assignment_map == expected
    assert case.scored == sorted(expected)
    assert case.same_volume and case.protocol == "fsmis"


def test_fsmis_across_volumes_scores_every_query_structure_slice():
    support = labelled(40, 10, 27)
    query = labelled(12, 2, 8, label=4)
    case = fsmis_case("blob", "A", support, "B", query, label=3, query_label=4, fold=2)
    assert case.support_slices == (13, 19, 25)
    assert case.assignment == ((2, 13), (3, 13), (4, 19), (5, 19), (6, 25), (7, 25), (8, 25))
    assert case.fold == 2 and not case.same_volume


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_protocols_on_every_axis(axis):
    labels = labelled(30, 5, 22, axis=axis)
    assert structure_slices(labels, 3, axis) == list(range(5, 23))
    case = within_volume_case("blob", "vol", labels, label=3, axis=axis)
    assert case.support_slices == (14,)  # the middle of 18 slices: index 9
    assert case.scored == [s for s in range(5, 23) if s != 14]
    assert set(case.assignment_map.values()) == {14}
    assert fsmis_case("blob", "vol", labels, "vol", labels, label=3, axis=axis).support_slices == (8, 14, 20)


def test_within_volume_with_a_chosen_support():
    labels = labelled(20, 3, 9)
    case = within_volume_case("blob", "v", labels, label=3, support_slice=4)
    assert case.assignment == tuple((q, 4) for q in (3, 5, 6, 7, 8, 9))
    with pytest.raises(ProtocolError, match="does not hold"):
        within_volume_case("blob", "v", labels, label=3, support_slice=12)


def test_pairing_assigns_the_nearest_relative_position():
    support = labelled(40, 10, 27)  # support slices 12 (0.308) and 24 (0.615) of 40
    query = labelled(20, 4, 15)  # q / 19: below the midpoint 0.4615 -> 12, above -> 24
    case = pairing_case("blob", "A", support, "B", query, label=3, support_slices=[24, 12])
    assert case.support_slices == (12, 24)
    assert case.assignment_map == {q: (12 if q <= 8 else 24) for q in range(4, 16)}
    same = pairing_case("blob", "A", support, "A", support, label=3, support_slices=[12])
    assert 12 not in same.scored and len(same.scored) == 17
    default = pairing_case("blob", "A", support, "B", query, label=3)
    assert default.support_slices == (19,)
    with pytest.raises(ProtocolError, match="do not hold"):
        pairing_case("blob", "A", support, "B", query, label=3, support_slices=[2])


def test_absent_or_thin_structures_are_refused():
    labels = labelled(20, 3, 9)
    with pytest.raises(ProtocolError, match="absent"):
        fsmis_case("x", "a", labels, "b", labels, label=7)
    with pytest.raises(ProtocolError, match="absent"):
        fsmis_case("x", "a", labels, "b", labelled(20, 3, 9, label=5), label=3)
    with pytest.raises(ProtocolError, match="at least 3"):
        fsmis_case("x", "a", labelled(20, 3, 4), "a", labelled(20, 3, 4), label=3)
    with pytest.raises(ProtocolError, match="need at least 2"):
        within_volume_case("x", "a", labelled(20, 3, 3), label=3)


def test_case_identity_and_round_trip():
    labels = labelled(40, 10, 27)
    case = fsmis_case("blob", "vol", labels, "vol", labels, label=3, tags=(("dataset", "synthetic"),))
    again = Case.from_dict(case.to_dict())
    assert again == case and again.key == case.key
    subset = Case.from_dict({**case.to_dict(), "assignment": [list(p) for p in case.assignment[:3]]})
    assert subset.key != case.key, "a run on fewer slices must not reuse the full case's results"


# ----------------------------------------------------------------------------- readers

CHAOS_IDS = [1, 2, 3, 5, 8, 10, 13, 15, 19, 20, 21, 22, 31, 32, 33, 34, 36, 37, 38, 39]


def write_scan(folder, scan_id, labels, spacing=(1.25, 1.25, 7.7)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(scan_id)
    img = sitk.GetImageFromArray((rng.random(labels.shape) * 255).astype(np.float32))
    lab = sitk.GetImageFromArray(labels.astype(np.uint8))
    for im in (img, lab):
        im.SetSpacing(spacing)
    sitk.WriteImage(img, str(folder / f"image_{scan_id}.nii.gz"))
    sitk.WriteImage(lab, str(folder / f"label_{scan_id}.nii.gz"))


def chaos_labels(scan_id):
    """Liver (1) on a scan-dependent slice range, so each scan's supports differ."""
    first = scan_id % 4
    return labelled(16, first, first + 8, label=1)


@pytest.fixture(scope="module")
def chaos_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("chaos")
    for scan_id in CHAOS_IDS:
        write_scan(root / "chaos_MR_T2_normalized", scan_id, chaos_labels(scan_id))
    return root


def test_chaos_layout_is_read_in_numeric_order(chaos_root):
    scans = find_scans(chaos_root, DATASETS["chaos"])
    assert [s.id for s in scans] == [f"chaos/image_{i}" for i in CHAOS_IDS]  # 1, 2, 3, 5, 8, 10 ... not 1, 10, 13
    assert find_scans(chaos_root / "chaos_MR_T2_normalized", DATASETS["chaos"]) == scans
    image, labels = scans[0].load()
    assert labels.shape == (16, 8, 8) and image.spacing == pytest.approx((7.7, 1.25, 1.25))


def test_chaos_folds_follow_adnet(chaos_root):
    chaos = DATASETS["chaos"]
    assert chaos.structures == {"liver": 1, "kidney_r": 2, "kidney_l": 3, "spleen": 4}
    assert chaos.split(0) == (4, [0, 1, 2, 3])
    assert chaos.split(3) == (16, [12, 13, 14, 15])
    assert chaos.split(4) == (19, [0, 16, 17, 18])
    scans = find_scans(chaos_root, chaos)
    cases = fsmis_cases(chaos, scans, [4], {"liver": 1}, lambda s: s.load()[1])
    assert [c.query_id for c in cases] == ["chaos/image_1", "chaos/image_36", "chaos/image_37", "chaos/image_38"]
    assert {c.support_id for c in cases} == {"chaos/image_39"}
    # support 39: liver on slices 3..11 (9 slices): positions 1, 4, 7 -> slices 4, 7, 10
    assert cases[0].support_slices == (4, 7, 10)
    # query 1: liver on slices 1..9: chunks [1, 2, 3], [4, 5, 6], [7, 8, 9]
    assert cases[0].assignment_map == {1: 4, 2: 4, 3: 4, 4: 7, 5: 7, 6: 7, 7: 10, 8: 10, 9: 10}
    assert all(c.fold == 4 and dict(c.tags)["dataset"] == "CHAOS-T2" for c in cases)
    with pytest.raises(InputError, match="folds 0..4"):
        chaos.split(5)


def test_synapse_layout_labels_folds_and_window(tmp_path):
    synapse = DATASETS["synapse"]
    assert synapse.structures == {"spleen": 1, "kidney_r": 2, "kidney_l": 3, "liver": 6}
    assert synapse.window == (0.0, 255.0)
    assert synapse.split(1) == (12, [6, 7, 8, 9, 10, 11])
    assert synapse.split(4) == (29, [0, 24, 25, 26, 27, 28])
    folder = tmp_path / "sabs_CT_normalized"
    for scan_id in range(30):
        write_scan(folder, scan_id, labelled(12, 2, 9, label=6), spacing=(1.0, 1.0, 2.5))
    scans = find_scans(tmp_path, synapse)
    assert [s.id for s in scans][:3] == ["synapse/image_0", "synapse/image_1", "synapse/image_2"]
    cases = fsmis_cases(synapse, scans, [1], {"liver": 6}, lambda s: s.load()[1])
    assert len(cases) == 6 and cases[0].support_id == "synapse/image_12"


def test_reader_errors_are_specific(tmp_path):
    chaos = DATASETS["chaos"]
    with pytest.raises(InputError, match="no image_<id>"):
        find_scans(tmp_path, chaos)
    folder = tmp_path / "chaos_MR_T2_normalized"
    for scan_id in CHAOS_IDS[:5]:
        write_scan(folder, scan_id, chaos_labels(scan_id))
    with pytest.raises(InputError, match="holds 5 scans; the published CHAOS-T2 layout has 20"):
        find_scans(tmp_path, chaos)
    for scan_id in CHAOS_IDS[5:]:
        write_scan(folder, scan_id, chaos_labels(scan_id))
    (folder / "label_13.nii.gz").unlink()
    with pytest.raises(InputError, match="label file missing for image_13"):
        find_scans(tmp_path, chaos)
