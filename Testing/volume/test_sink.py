"""The result sink every mode writes through: acceptance, auto-stop, records, clean-up."""

import numpy as np
import pytest

from SynPoLib import SynPoConfig, preset
from SynPoLib.errors import Cancelled
from SynPoLib.volume import Job, SliceRecord, Support
from SynPoLib.volume.sink import NOT_SEGMENTED, STOPPED, ResultSink


class _NoBackend:
    """Job.build never calls the backend; the sink never does."""

    preset = "lite"


def _job(config=None, shape=(12, 8, 8), support_slice=2, slices=None):
    volume = np.random.default_rng(0).normal(100, 10, shape).astype(np.float32)
    mask = np.zeros(shape, np.uint8)
    mask[:, 2:6, 2:6] = 1
    support = Support(volume, mask, [support_slice], axis=0)
    return Job.build(_NoBackend(), volume, support, config or preset("lite"), slices=slices)


def _square(job, size=4):
    mask = np.zeros(job.q_geometry.native, bool)
    mask[:size, :size] = True
    return mask


def _offer(direction, index, confidence, mask):
    record = SliceRecord(index=index, support_index=direction.support_index, score=confidence,
                         confidence=confidence)
    return direction.offer(record, mask)


def test_auto_stop_paints_a_short_dip_and_drops_a_long_one():
    job = _job()
    sink = ResultSink(job)
    sink.copy_supports()
    direction = sink.direction(2, range(3, 12))
    confidences = {3: 1.0, 4: 0.5, 5: 1.0, 6: 0.5, 7: 0.4, 8: 0.3, 9: 1.0}
    for index, c in confidences.items():
        if direction.stopped:
            break
        _offer(direction, index, c, _square(job))
    direction.close()
    result = sink.result()
    painted = [int(i) for i in np.flatnonzero(result.mask.any(axis=(1, 2)))]
    assert painted == [2, 3, 4, 5], "one low slice between confident ones is kept; three in a row end it"
    notes = {r.index: r.notes for r in result.records}
    assert all(STOPPED in notes[i] for i in (6, 7, 8))
    assert all(NOT_SEGMENTED in notes[i] for i in (9, 10, 11)), "slices never reached are recorded"
    assert [r.index for r in result.records] == list(range(2, 12))


def test_acceptance_rule_and_what_may_be_carried_on():
    config = preset("lite").updated(**{"quality.min_pixels": 10, "quality.min_score": 0.5})
    job = _job(config)
    sink = ResultSink(job)
    direction = sink.direction(2, [3, 4, 5])
    assert _offer(direction, 3, 0.9, _square(job, 4)) is True
    assert _offer(direction, 4, 0.9, _square(job, 3)) is False, "9 pixels < min_pixels"
    assert _offer(direction, 5, 0.4, _square(job, 4)) is False, "score below min_score"
    direction.close()
    records = {r.index: r for r in sink.result().records}
    assert records[3].accepted and records[3].pixels == 16
    assert not records[4].accepted and records[4].pixels == 0
    assert not records[5].accepted and records[5].pixels == 0


def test_unwanted_slices_are_judged_but_not_recorded_and_cancel_raises():
    job = _job(slices=[5, 6])
    sink = ResultSink(job, cancel=lambda: True)
    direction = sink.direction(2, [3, 4, 5, 6])
    assert _offer(direction, 3, 1.0, _square(job)) is True  # a video mode tracks through 3 and 4
    assert sink.records == []
    direction.close()
    assert sorted(r.index for r in sink.records) == [5, 6]
    with pytest.raises(Cancelled):
        sink.check_cancel()


def test_largest_component_keeps_the_part_touching_the_support():
    config = SynPoConfig().updated(**{"quality.largest_component": True, "quality.auto_stop": False})
    job = _job(config)
    sink = ResultSink(job)
    sink.copy_supports()
    direction = sink.direction(2, [3, 4])
    near = np.zeros(job.q_geometry.native, bool)
    near[2:6, 2:6] = True
    far = np.zeros_like(near)
    far[0, 7] = True
    _offer(direction, 3, 1.0, near)
    _offer(direction, 4, 1.0, far)
    direction.close()
    result = sink.result()
    assert result.mask[3].sum() == 16 and result.mask[4].sum() == 0
    assert any("3D cleanup removed 1 pixels" in n for n in result.record(4).notes)
