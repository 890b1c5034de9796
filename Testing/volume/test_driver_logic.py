"""The volume driver's own decisions on a deterministic backend (Testing/fake_backend.py).

Native slices are 256 x 256 with unit spacing, so a slice IS the method's ROI image:
what the backend is shown can be compared with the volume voxel for voxel. Caught
here: the support read one slice off (its image or its mask), the propagate mode's
guide being ignored, a query slice served by the wrong support.
"""

from __future__ import annotations

import numpy as np
import pytest

from fake_backend import FakeBackend, rectangle

from SynPoLib.config import Mode, SynPoConfig
from SynPoLib.method.prompts import mask_box
from SynPoLib.method.segmenter import SynPoSegmenter
from SynPoLib.volume import Support, segment_volume
from SynPoLib.volume.slices import prepare_supports
from SynPoLib.volume.types import Job

R = 256
N = 7
#: the structure moves 12 pixels right and grows 4 pixels taller per slice: every slice,
#: its image and its mask, differs from its neighbours
STEP, GROW = 12, 4
WINDOW = (0.0, 255.0)


def moving_volume():
    volume = np.full((N, R, R), 30.0, np.float32)
    mask = np.zeros((N, R, R), bool)
    for k in range(N):
        mask[k] = rectangle((R, R), 100, 40 + STEP * k, 48 + GROW * k, 64)
        volume[k][mask[k]] = 220.0
        volume[k, 250:, :10 * (k + 1)] = 120.0  # a stamp: slice k shows k + 1 grey blocks in a corner
    return volume, mask


def config(**edits) -> SynPoConfig:
    return SynPoConfig().updated(**{"refine.rounds": 0, "quality.auto_stop": False, "window.window": WINDOW,
                                    **edits})


def grey(image: np.ndarray) -> np.ndarray:
    assert image.shape == (R, R, 3) and (image[..., 0] == image[..., 2]).all()
    return image[..., 0]


@pytest.mark.parametrize("s", [0, 3, 6])
def test_the_support_is_the_labelled_slice_image_and_mask(s):
    volume, mask = moving_volume()
    backend = FakeBackend()
    support = Support(volume=volume, mask=mask, slices=[s], window=WINDOW)
    job = Job.build(backend, volume, support, config())
    image, mask_roi = job.support_roi(s)
    np.testing.assert_array_equal(grey(image), volume[s].astype(np.uint8))  # window (0, 255): the voxels
    np.testing.assert_array_equal(mask_roi, mask[s])
    contexts = prepare_supports(job, SynPoSegmenter(backend, job.config))
    assert list(contexts) == [s]
    np.testing.assert_array_equal(grey(backend.encoded[0]), volume[s].astype(np.uint8))
    np.testing.assert_array_equal(contexts[s].mask_roi, mask[s])
    rows, cols = np.nonzero(mask[s])
    assert contexts[s].centroid_xy == pytest.approx((cols.mean(), rows.mean()))


def test_each_query_slice_is_shown_as_itself_and_served_by_its_nearest_support():
    volume, mask = moving_volume()
    backend = FakeBackend()
    result = segment_volume(backend, volume, Support(volume=volume, mask=mask, slices=[1, 5]), config=config())
    # encoded: the two supports first, then each query slice outward from its support
    supports, queries = backend.encoded[:2], backend.encoded[2:]
    np.testing.assert_array_equal(grey(supports[0]), volume[1].astype(np.uint8))
    np.testing.assert_array_equal(grey(supports[1]), volume[5].astype(np.uint8))
    shown = [int(np.argmax([np.array_equal(grey(q), volume[k].astype(np.uint8)) for k in range(N)])) for q in queries]
    assert shown == [2, 3, 0, 6, 4]  # support 1: up (2, 3) then down (0); support 5: up (6) then down (4)
    served = {r.index: r.support_index for r in result.records}
    assert served == {0: 1, 1: -1, 2: 1, 3: 1, 4: 5, 5: -1, 6: 5}  # ties (3) go to the lower support
    for k in range(N):  # the fake decoder's right answer is the bright structure itself
        np.testing.assert_array_equal(result.mask[k] > 0, mask[k])


def test_propagate_prompts_each_slice_with_the_previous_slices_result():
    volume, mask = moving_volume()
    backend = FakeBackend()
    s = 3
    cfg = config(**{"propagation.mode": Mode.PROPAGATE})
    result = segment_volume(backend, volume, Support(volume=volume, mask=mask, slices=[s]), config=cfg)
    assert len(backend.calls) == N - 1  # one decoder call per query slice (no refine)
    support_h, support_w = 48 + GROW * s, 64
    order = [4, 5, 6, 2, 1, 0]  # outward from the support: up, then down
    for k, call in zip(order, backend.calls):
        previous = k - 1 if k > s else k + 1
        # the guide's box, not the paper's points: no point reaches the decoder
        assert call["box"] is not None and call["points"] is None, k
        x0, y0, x1, y1 = call["box"]
        prev_box = mask_box(result.mask[previous] > 0)
        # centred on the previous slice's result, the support's size grown 10 % a side
        assert (x0 + x1) / 2 == pytest.approx((prev_box[0] + prev_box[2]) / 2, abs=0.5), k
        assert (y0 + y1) / 2 == pytest.approx((prev_box[1] + prev_box[3]) / 2, abs=0.5), k
        assert x1 - x0 == pytest.approx((support_w - 1) * 1.2, abs=1.0)
        assert y1 - y0 == pytest.approx((support_h - 1) * 1.2, abs=1.0)
    # the paper's mode prompts the same slices with points and no box
    plain = FakeBackend()
    segment_volume(plain, volume, Support(volume=volume, mask=mask, slices=[s]), config=config())
    assert all(call["box"] is None and call["points"] is not None for call in plain.calls)
