"""Runs again after corrections: which slices are recomputed (counted), that a corrected
slice never changes, that the rest is left as it was, and erasures as barriers."""

import numpy as np
import pytest

from SynPoLib import Support, preset
from SynPoLib.volume import segment_structures, structures_from_labelmap
from SynPoLib.volume.corrections import CORRECTED, EMPTIED, RECOMPUTED, Correction, plan_correction, rerun

from conftest import ellipsoid_volume


def test_plan_recomputes_between_a_correction_and_its_neighbouring_supports():
    plan = plan_correction(range(20), {4: 4, 14: 14}, {8: True})
    assert sorted(plan.recompute) == [5, 6, 7, 9, 10, 11, 12, 13]
    # served by the nearest support, the corrected slice being one; ties to the lower
    assert {q: s for q, (_, s) in plan.recompute.items()} == {5: 4, 6: 4, 7: 8, 9: 8, 10: 8, 11: 8, 12: 14, 13: 14}
    assert plan.emptied == ()
    # no support beyond the correction: up to the end of the range
    assert sorted(plan_correction(range(3, 12), {4: 4}, {8: True}).recompute) == [5, 6, 7, 9, 10, 11]


def test_plan_erasure_is_a_barrier_and_earlier_corrections_trigger_nothing():
    plan = plan_correction(range(20), {4: 4}, {12: False})
    assert sorted(plan.recompute) == list(range(5, 12)) and plan.emptied == tuple(range(13, 20))
    assert plan.barriers == (12,)
    # 8 was corrected before: a support that bounds the new correction's reach, not a trigger
    plan = plan_correction(range(20), {4: 4}, {12: True}, {8: True})
    assert sorted(plan.recompute) == [9, 10, 11] + list(range(13, 20))
    assert plan.earlier == (8,) and plan.corrected == (12,)
    # a support beyond a barrier serves its own side only
    plan = plan_correction(range(20), {4: 4, 16: 16}, {10: False})
    assert {q: s for q, (_, s) in plan.recompute.items()} == {5: 4, 6: 4, 7: 4, 8: 4, 9: 4, 11: 16, 12: 16,
                                                             13: 16, 14: 16, 15: 16}
    # a support in another volume sits at its relative position; it is no query slice
    plan = plan_correction(range(10), {2: 4.5}, {7: True}, same_volume=False)
    assert sorted(plan.recompute) == [5, 6, 8, 9]


def phantom():
    volume, a = ellipsoid_volume(shape=(20, 32, 32), centre=(9.5, 11, 11), radii=(9, 7, 7), seed=0)
    vol_b, b = ellipsoid_volume(shape=(20, 32, 32), centre=(9.5, 22, 22), radii=(9, 6, 6), seed=1)
    volume = np.where(b, vol_b, volume).astype(np.float32)
    labels = np.zeros(volume.shape, np.uint8)
    labels[a] = 1
    labels[b & ~a] = 2
    return volume, labels


@pytest.fixture(scope="module")
def first_run(lite_backend):
    volume, labels = phantom()
    cfg = preset("lite").updated(**{"quality.auto_stop": False})  # the preset's mode: registration
    structures = structures_from_labelmap(volume, labels, [4, 14])
    result = segment_structures(lite_backend, volume, structures, config=cfg, slices=range(2, 18))
    return volume, labels, cfg, structures, result


def corrections(first, corrected, edit):
    volume, labels, cfg, structures, result = first
    out = []
    for s in structures:
        current = result[s.name].mask.copy()
        for c in corrected:
            current[c] = edit(s.label, c)
        out.append(Correction(s.name, s.support, current, corrected=corrected, label=s.label, slices=range(2, 18),
                              records=result[s.name].records))
    return out


def test_rerun_recomputes_only_the_slices_it_should_and_never_changes_a_corrected_slice(lite_backend, first_run):
    volume, labels, cfg, structures, result = first_run
    # the user's correction of slice 8: the truth, with structure 2 painted a little into 1
    # (a corrected slice wins any pixel another structure claims)
    fixed = {1: labels[8] == 1, 2: (labels[8] == 2) | np.pad(np.ones((3, 3), bool), ((10, 19), (15, 14)))}
    fixed[1] = fixed[1] & ~fixed[2]
    given = corrections(first_run, [8], lambda label, c: fixed[label])
    before = dict(lite_backend.encoder_calls.counts)
    again = rerun(lite_backend, volume, given, config=cfg)
    encoded = lite_backend.encoder_calls.counts["sam"] - before["sam"]
    expected = [5, 6, 7, 9, 10, 11, 12, 13]  # between 4 and 8, and 8 and 14
    for s in structures:
        name = s.name
        assert again.recomputed[name] == expected
        recomputed = [r.index for r in again[name].records if RECOMPUTED in r.notes]
        assert recomputed == expected
        np.testing.assert_array_equal(again[name].mask[8], fixed[s.label], err_msg="a corrected slice never changes")
        assert again[name].record(8).notes == (CORRECTED,)
        outside = [q for q in range(20) if q not in expected and q != 8]
        np.testing.assert_array_equal(again[name].mask[outside], result[name].mask[outside],
                                      err_msg="slices the correction cannot change are left as they were")
        assert set(again.changed[name]) <= set(expected)
        # records of the slices left as they were are the first run's
        assert again[name].record(2) is result[name].record(2)
    assert encoded == 8 + 3, "8 query slices once for both structures, and the supports 4, 8 and 14"
    a, b = (again[f"label {n}"].mask > 0 for n in (1, 2))
    assert not (a & b)[expected].any()


def test_an_erased_slice_empties_the_slices_behind_it(lite_backend, first_run):
    volume, labels, cfg, structures, result = first_run
    given = corrections(first_run, [15], lambda label, c: np.zeros_like(labels[c], bool) if label == 2
                        else (labels[c] == 1))
    again = rerun(lite_backend, volume, given, config=cfg)
    b = again["label 2"]
    assert again.plans["label 2"].emptied == (16, 17)
    assert not b.mask[15:].any() and b.mask[14].any()
    assert all(EMPTIED in b.record(q).notes for q in (16, 17))
    assert again.recomputed["label 2"] == []
    assert again.changed["label 2"] == [q for q in (16, 17) if result["label 2"].mask[q].any()]


def test_a_support_in_another_volume_and_corrections_in_the_query_run_as_two_parts(lite_backend):
    volume, labels = phantom()
    support_volume = volume[::-1].copy()  # the same anatomy, the other way up: another volume
    support = Support(support_volume, (labels == 1)[::-1].copy(), [13], axis=0)  # at query position 13
    # the slices mode: the registration mode would first register the volumes in 3-D (minutes)
    cfg = preset("lite").updated(**{"quality.auto_stop": False, "propagation.mode": "slices"})
    from SynPoLib.volume import Structure

    first = segment_structures(lite_backend, volume, [Structure("a", support, 1, same_volume=False)], config=cfg,
                               slices=range(6, 14))
    current = first["a"].mask.copy()
    current[8] = labels[8] == 1
    again = rerun(lite_backend, volume, [Correction("a", support, current, corrected=[8], slices=range(6, 14),
                                                    same_volume=False)], config=cfg)
    plan = again.plans["a"]
    kinds = {q: kind for q, (kind, _) in plan.recompute.items()}
    assert kinds == {6: "corrected", 7: "corrected", 9: "corrected", 10: "corrected", 11: "support",
                     12: "support"}
    np.testing.assert_array_equal(again["a"].mask[8], labels[8] == 1)


def test_bad_corrections_are_refused(first_run, lite_backend):
    volume, labels, cfg, structures, result = first_run
    given = corrections(first_run, [8], lambda label, c: labels[c] == label)
    bad = Correction(given[0].name, given[0].support, given[0].current, corrected=[25])
    with pytest.raises(ValueError, match="corrected slice 25 is outside"):
        rerun(lite_backend, volume, [bad], config=cfg)
    with pytest.raises(ValueError, match="given once"):
        rerun(lite_backend, volume, [given[0], given[0]], config=cfg)
    short = Correction(given[0].name, given[0].support, given[0].current[:5], corrected=[3])
    with pytest.raises(ValueError, match="current mask"):
        rerun(lite_backend, volume, [short], config=cfg)
