"""Several structures in one run (real LiteMedSAM): shared encoder passes, exact equality with
one-structure runs, and no pixel claimed twice unless the user drew the structures overlapping."""

import numpy as np
import pytest

from SynPoLib import Cancelled, InputError, Support, preset, segment_volume
from SynPoLib.volume import ConflictRule, Structure, StructuresConfig, segment_structures, structures_from_labelmap
from SynPoLib.volume.structures import resolve_overlaps

from conftest import ellipsoid_volume

SHAPE = (12, 40, 40)


def two_blobs(gap=True):
    """Two structures: two bright ellipsoids apart, or (``gap=False``) one bright ellipsoid
    labelled as two halves, whose border the image does not show: each structure's
    one-structure run takes some of the other half."""
    if not gap:
        volume, blob = ellipsoid_volume(shape=SHAPE, centre=(5.5, 19.5, 19.5), radii=(5, 9, 14))
        labels = np.zeros(SHAPE, np.uint8)
        labels[blob] = 1
        labels[:, :, 20:][blob[:, :, 20:]] = 2
        return volume, labels
    vol_a, a = ellipsoid_volume(shape=SHAPE, centre=(5.5, 12, 12), radii=(5, 7, 7), seed=0)
    vol_b, b = ellipsoid_volume(shape=SHAPE, centre=(5.5, 27, 27), radii=(5, 7, 7), seed=1)
    volume = np.where(b, vol_b, vol_a).astype(np.float32)
    labels = np.zeros(SHAPE, np.uint8)
    labels[a] = 1
    labels[b & ~a] = 2
    return volume, labels


def config(mode="slices"):
    return preset("lite").updated(**{"quality.auto_stop": False, "propagation.mode": mode})


@pytest.mark.parametrize("mode", ["slices", "propagate"])
def test_structures_that_do_not_touch_equal_their_one_structure_runs(lite_backend, mode):
    volume, labels = two_blobs(gap=True)
    cfg, query = config(mode), range(2, 10)
    alone = {}
    for label in (1, 2):
        alone[label] = segment_volume(lite_backend, volume, Support(volume, labels == label, [5]), config=cfg,
                                      slices=query)
    before = dict(lite_backend.encoder_calls.counts)
    together = segment_structures(lite_backend, volume, structures_from_labelmap(volume, labels, [5]), config=cfg,
                                  slices=query)
    encoded = lite_backend.encoder_calls.counts["sam"] - before["sam"]
    assert encoded == 8, "7 query slices and 1 support slice, each encoded once for both structures"
    for label in (1, 2):
        result = together[f"label {label}"]
        np.testing.assert_array_equal(result.mask, alone[label].mask)
        assert [r.index for r in result.records] == [r.index for r in alone[label].records]
        assert [r.score for r in result.records if r.support_index >= 0] == \
            [r.score for r in alone[label].records if r.support_index >= 0]
    assert together.given_up == {}
    assert (together.labelmap() == np.where(together["label 2"].mask > 0, 2, together["label 1"].mask)).all()


def test_touching_structures_never_overlap(lite_backend):
    volume, labels = two_blobs(gap=False)
    cfg = config()
    alone = [segment_volume(lite_backend, volume, Support(volume, labels == label, [5]), config=cfg,
                            slices=range(4, 8)).mask for label in (1, 2)]
    assert ((alone[0] > 0) & (alone[1] > 0)).any(), "the one-structure runs overlap: the case tests something"
    together = segment_structures(lite_backend, volume, structures_from_labelmap(volume, labels, [5]), config=cfg,
                                  slices=range(4, 8))
    a, b = (together[f"label {n}"].mask > 0 for n in (1, 2))
    assert not (a & b).any()
    assert (a | b).sum() == ((alone[0] > 0) | (alone[1] > 0)).sum(), "every claimed pixel goes to one of them"
    assert sum(together.given_up.values()) == ((alone[0] > 0) & (alone[1] > 0)).sum()
    noted = 0
    for name in together.names:
        for r in together[name].records:
            noted += any("overlap" in n for n in r.notes)
            assert r.pixels == int(np.count_nonzero(together[name].mask[r.index])), "records say what is painted"
    assert noted, "the records of slices that gave pixels away say so"


def test_structures_the_user_drew_overlapping_stay_overlapping(lite_backend):
    volume, labels = two_blobs(gap=False)
    inner = np.zeros(SHAPE, bool)
    inner[3:9, 15:23, 10:16] = True  # a "lesion" inside structure 1, drawn over it
    structures = [Structure("organ", Support(volume, labels == 1, [5]), 1),
                  Structure("lesion", Support(volume, inner & (labels == 1), [5]), 3)]
    result = segment_structures(lite_backend, volume, structures, config=config(), slices=range(4, 7))
    assert result.overlapping == (("lesion", "organ"),)
    overlap = (result["organ"].mask > 0) & (result["lesion"].mask > 0)
    assert overlap[5].sum() == (inner & (labels == 1))[5].sum(), "the labelled slice keeps both as drawn"
    assert overlap[[4, 6]].any(), "computed slices keep the overlap the user drew"


def _claims():
    a = np.zeros((1, 6, 6), np.uint8)
    b = np.zeros((1, 6, 6), np.uint8)
    a[0, :, :4] = 1
    b[0, :, 2:] = 1  # columns 2, 3 are claimed by both
    return a, b


def _evidence(mask, values):
    where = np.flatnonzero(mask[0])
    return {0: (where, {"logits": np.asarray(values, np.float32).reshape(-1)[where].astype(np.float16),
                        "similarity": -np.asarray(values, np.float32).reshape(-1)[where].astype(np.float16)})}


def test_each_rule_gives_a_doubly_claimed_pixel_to_one_structure():
    cols = np.tile(np.arange(6, dtype=np.float32), (6, 1))
    # a's logit falls to the right, b's rises: column 2 goes to a, column 3 to b by logit
    ev = {"a": _evidence(_claims()[0], 5.0 - 1.4 * cols), "b": _evidence(_claims()[1], 1.4 * cols - 2.0)}
    a, b = _claims()
    lost = resolve_overlaps({"a": a, "b": b}, 0, ConflictRule.LOGIT, evidence=ev)
    assert a[0, :, 2].all() and not b[0, :, 2].any() and b[0, :, 3].all() and not a[0, :, 3].any()
    assert lost == {"a": {0: {"b": 6}}, "b": {0: {"a": 6}}}
    a, b = _claims()  # similarity is the opposite here: the other way round
    resolve_overlaps({"a": a, "b": b}, 0, ConflictRule.SIMILARITY, evidence=ev)
    assert b[0, :, 2].all() and a[0, :, 3].all() and not (a & b).any()
    a, b = _claims()
    resolve_overlaps({"a": a, "b": b}, 0, ConflictRule.CONFIDENCE, confidence={"a": {0: 0.9}, "b": {0: 0.95}})
    assert b[0, :, 2:].all() and not a[0, :, 2:].any()
    a, b = _claims()  # depth: each pixel to the mask it lies deeper inside
    resolve_overlaps({"a": a, "b": b}, 0, ConflictRule.DEPTH)
    assert not (a & b).any() and (a | b).all()
    a, b = _claims()  # a slice the user labelled (or kept) wins whatever the rule says
    resolve_overlaps({"a": a, "b": b}, 0, ConflictRule.CONFIDENCE, confidence={"a": {0: 0.1}, "b": {0: 0.95}},
                     fixed={"a": {0}})
    assert a[0, :, :4].all() and not b[0, :, 2:4].any()
    a, b = _claims()  # a mode without the rule's evidence: decided by depth, never left overlapping
    resolve_overlaps({"a": a, "b": b}, 0, ConflictRule.LOGIT, evidence={})
    assert not (a & b).any() and (a | b).all()
    a, b = _claims()  # allowed pairs keep their overlap
    resolve_overlaps({"a": a, "b": b}, 0, ConflictRule.DEPTH, allowed={frozenset(("a", "b"))})
    assert (a & b)[0, :, 2:4].all()


def test_progress_counts_every_structure_and_cancel_stops_the_run(lite_backend):
    volume, labels = two_blobs(gap=True)
    events = []
    segment_structures(lite_backend, volume, structures_from_labelmap(volume, labels, [5]), config=config(),
                       slices=range(4, 7), progress=events.append)
    assert [e.done for e in events] == list(range(1, 7)) and {e.total for e in events} == {6}
    assert sorted({e.structure for e in events}) == ["label 1", "label 2"]
    with pytest.raises(Cancelled):
        segment_structures(lite_backend, volume, structures_from_labelmap(volume, labels, [5]), config=config(),
                           slices=range(4, 7), cancel=lambda: True)


def test_bad_structure_lists_are_refused_clearly(lite_backend):
    volume, labels = two_blobs(gap=True)
    with pytest.raises(ValueError, match="label 7 is not drawn on support slice"):
        structures_from_labelmap(volume, labels, [5], labels=[1, 7])
    with pytest.raises(ValueError, match="no label is drawn"):
        structures_from_labelmap(volume, labels, [0])
    a = Support(volume, labels == 1, [5], axis=0)
    b = Support(volume, labels == 2, [27], axis=2)
    with pytest.raises(ValueError, match="one axis"):
        segment_structures(lite_backend, volume, [Structure("a", a), Structure("b", b)], config=config())
    with pytest.raises(InputError, match="backend must be a SynPoLib Backend"):
        segment_structures(object(), volume, [Structure("a", a)], config=config())
    with pytest.raises(ValueError, match="shared_encodings"):
        StructuresConfig(shared_encodings=0)
    assert StructuresConfig(conflict="logit").conflict is ConflictRule.LOGIT


def test_registration_mode_moves_every_structure_with_one_field_per_pair_of_slices(lite_backend, monkeypatch):
    import SynPoLib.registration as core
    from SynPoLib.metrics import dice

    volume, labels = two_blobs(gap=True)
    calls = []
    real = core.register_slices

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(core, "register_slices", counting)
    cfg = config("registration")
    alone = {}
    for label in (1, 2):
        calls.clear()
        alone[label] = segment_volume(lite_backend, volume, Support(volume, labels == label, [5]), config=cfg,
                                      slices=range(2, 10)).mask
        single_calls = len(calls)
    calls.clear()
    before = dict(lite_backend.encoder_calls.counts)
    together = segment_structures(lite_backend, volume, structures_from_labelmap(volume, labels, [5]), config=cfg,
                                  slices=range(2, 10))
    assert len(calls) == single_calls == 7, "one field per pair of neighbouring slices, whatever the structures"
    assert lite_backend.encoder_calls.counts["sam"] - before["sam"] == 8, "7 query slices + the support, once"
    for label in (1, 2):
        # the field is computed on the crop around both masks, not one: the masks may differ a little
        assert dice(together[f"label {label}"].mask > 0, alone[label] > 0) > 0.95


def test_only_a_slice_labelled_for_both_says_the_user_drew_them_overlapping():
    from SynPoLib.volume.structures import overlapping_pairs

    volume, labels = two_blobs(gap=False)
    organ = labels == 1
    lesion = np.zeros(SHAPE, bool)
    lesion[4, 15:23, 10:16] = True  # drawn inside the organ, on slice 4 only
    apart = [Structure("organ", Support(volume, organ, [5])), Structure("lesion", Support(volume, lesion, [4]))]
    assert overlapping_pairs(apart) == set(), "slice 4 is not labelled for the organ: its mask there says nothing"
    both = [Structure("organ", Support(volume, organ, [4, 5])), Structure("lesion", Support(volume, lesion, [4]))]
    assert overlapping_pairs(both) == {frozenset(("organ", "lesion"))}


def test_structures_labelled_on_different_slices_still_encode_each_slice_once(lite_backend):
    volume, labels = two_blobs(gap=True)
    cfg, query = config("slices"), range(2, 10)
    a = Structure("a", Support(volume, labels == 1, [5]), 1)
    b = Structure("b", Support(volume, labels == 2, [6]), 2)
    alone = {s.name: segment_volume(lite_backend, volume, s.support, config=cfg, slices=query).mask for s in (a, b)}
    before = dict(lite_backend.encoder_calls.counts)
    together = segment_structures(lite_backend, volume, [a, b], config=cfg, slices=query)
    # their walks differ (other support slices): the slices b walks after a are kept for it
    assert lite_backend.encoder_calls.counts["sam"] - before["sam"] == 8 + 2, "slices 2..9 once, supports 5 and 6"
    for name in ("a", "b"):
        np.testing.assert_array_equal(together[name].mask, alone[name])
    assert StructuresConfig().rule("registration") is ConflictRule.CONFIDENCE
    assert StructuresConfig().rule("slices") is ConflictRule.SIMILARITY
