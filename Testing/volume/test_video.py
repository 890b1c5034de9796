"""Video mode on the REAL SAM 2.1 tiny architecture (random weights).

With random weights a mask means nothing, so these tests check the plumbing and the
geometry, by watching what sam2's own video predictor receives and yields (its real
methods, wrapped to record their arguments): which frames get mask prompts, the order
frames are tracked in, that sam2 never runs the image encoder itself, that each
frame's mask lands on that frame's slice in the right orientation along any axis,
that memory stops growing on a long volume, that augmentation is seeded and that
dynamic matching picks the copy a constructed case calls for.

Models run at 128 or 256 px (feature grids 8 x 8 and 16 x 16) with one torch thread:
the machine is shared and small.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import ellipsoid_volume
from SynPoLib import Support
from SynPoLib.volume.augment import AugmentConfig, apply_jitter, augment_support, best_match, descriptor
from SynPoLib.backends import create_backend
from SynPoLib.backends.sam2_video import InMemoryVideoPredictor, LazyFrames, backbone_out, video_predictor
from SynPoLib.config import SynPoConfig
from SynPoLib.presets import preset
from SynPoLib.method.points import select_points
from SynPoLib.preprocess import apply_window, in_plane_spacing, slice_geometry, take_slice, window_bounds
from SynPoLib.method.segmenter import SynPoSegmenter
from SynPoLib.method.synergy import SAM
from SynPoLib.volume.video import (VideoConfig, VideoSliceRecord, memory_reach, plan_video, segment_volume_video,
                           tracking_state_bytes)
from SynPoLib.volume import Cancelled, SliceRecord, VolumeResult

TINY = dict(sam2_size="tiny", random_weights=True, device="cpu")
#: random weights make every confidence meaningless: plumbing tests paint every slice
NO_STOP = preset("paper").updated(**{"quality.auto_stop": False})


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Two shared cores: several torch threads fighting over them run ten times slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def sam2_128():
    return create_backend("sam2", sam2_image_size=128, **TINY)


@pytest.fixture(scope="module")
def sam2_256():
    return create_backend("sam2", sam2_image_size=256, **TINY)


class Spy:
    """Wraps the real predictor's methods on the instance; ``undo`` removes the wrappers."""

    def __init__(self, predictor: InMemoryVideoPredictor) -> None:
        self.predictor = predictor
        self.mask_prompts = []      # (frame, mask)
        self.point_prompts = []     # (frame, points, labels, returned logits)
        self.passes = []            # {"start", "max", "reverse", "visited", "logits"}
        self.features = []          # frame indices whose features were handed over
        self.calls = []             # method names in call order
        self.retained = []          # tracking outputs held at each yield
        self.state_bytes = []       # tensor bytes in the state at each yield
        self.state = None
        self._names = []
        self._wrap("add_new_mask", self._add_new_mask)
        self._wrap("add_new_points_or_box", self._add_points)
        self._wrap("propagate_in_video", self._propagate)
        self._wrap("propagate_in_video_preflight", self._preflight)
        self._wrap("use_features", self._use_features)

    def _wrap(self, name, make):
        original = getattr(self.predictor, name)
        setattr(self.predictor, name, make(original))
        self._names.append(name)

    def undo(self):
        for name in self._names:
            delattr(self.predictor, name)

    def _add_new_mask(self, original):
        def add_new_mask(state, frame_idx, obj_id, mask):
            self.calls.append("add_new_mask")
            self.mask_prompts.append((frame_idx, np.array(mask, dtype=bool)))
            return original(state, frame_idx, obj_id, mask)
        return add_new_mask

    def _add_points(self, original):
        def add_new_points_or_box(state, frame_idx, obj_id, points=None, labels=None, **kwargs):
            self.calls.append("add_new_points_or_box")
            out = original(state, frame_idx, obj_id, points=points, labels=labels, **kwargs)
            self.point_prompts.append((frame_idx, np.array(points), np.array(labels),
                                       out[2][0, 0].float().cpu().numpy()))
            return out
        return add_new_points_or_box

    def _preflight(self, original):
        def preflight(state):
            self.calls.append("preflight")
            return original(state)
        return preflight

    def _use_features(self, original):
        def use_features(state, frame_idx, features):
            self.features.append(frame_idx)
            return original(state, frame_idx, features)
        return use_features

    def _propagate(self, original):
        def propagate(state, start_frame_idx=None, max_frame_num_to_track=None, reverse=False):
            self.calls.append("propagate_in_video")
            self.state = state
            record = {"start": start_frame_idx, "max": max_frame_num_to_track, "reverse": reverse,
                      "visited": [], "logits": {}}
            self.passes.append(record)
            inner = original(state, start_frame_idx, max_frame_num_to_track, reverse)
            try:
                for frame_idx, obj_ids, masks in inner:
                    record["visited"].append(frame_idx)
                    record["logits"][frame_idx] = masks[0, 0].float().cpu().numpy()
                    self.retained.append(len(state["output_dict_per_obj"][0]["non_cond_frame_outputs"]))
                    self.state_bytes.append(tracking_state_bytes(state))
                    yield frame_idx, obj_ids, masks
            finally:
                inner.close()
        return propagate


@pytest.fixture
def spy_on():
    spies = []

    def attach(backend):
        spy = Spy(video_predictor(backend))
        spies.append(spy)
        return spy

    yield attach
    for spy in spies:
        spy.undo()


def count_forward(module, store):
    return module.register_forward_hook(lambda mod, inputs, output: store.append(int(inputs[0].shape[0])))


# ----------------------------------------------------------------------------- the plan
def test_plan_middle_support_goes_both_ways_and_visits_each_slice_once():
    layout = plan_video(list(range(9)), [4], 9, 9, same_volume=True)
    assert [f.query for f in layout.frames] == list(range(9))
    assert layout.support_frame == {4: 4}
    assert [(p.reverse, p.frames) for p in layout.passes] == [
        (True, (4, 3, 2, 1, 0)), (False, (4, 5, 6, 7, 8))]


def test_plan_k_shot_splits_at_the_midpoint_and_inserts_foreign_supports():
    # same volume, supports 2 and 8 of 0..10: 5 is equidistant and goes to the lower one
    layout = plan_video(list(range(11)), [8, 2], 11, 11, same_volume=True)
    assert [(p.support, p.reverse, p.frames) for p in layout.passes] == [
        (2, True, (2, 1, 0)), (2, False, (2, 3, 4, 5)), (8, True, (8, 7, 6)), (8, False, (8, 9, 10))]
    # another volume of 21 slices: slice 5 sits at 2.5 of the query's 0..10, slice 15 at 7.5
    layout = plan_video(list(range(11)), [5, 15], 11, 21, same_volume=False)
    kinds = [("S%d" % f.support) if f.support is not None else f.query for f in layout.frames]
    assert kinds == [0, 1, 2, "S5", 3, 4, 5, 6, 7, "S15", 8, 9, 10]
    tracked = sorted(layout.frames[i].query for p in layout.passes for i in p.frames[1:])
    assert tracked == list(range(11))
    for p in layout.passes:
        assert layout.frames[p.frames[0]].support == p.support and layout.frames[p.frames[0]].query is None


def test_plan_covers_the_slices_between_support_and_wanted_range():
    layout = plan_video([6, 7], [2], 10, 10, same_volume=True)
    assert [f.query for f in layout.frames] == [2, 3, 4, 5, 6, 7]
    assert [(p.reverse, p.frames) for p in layout.passes] == [(False, (0, 1, 2, 3, 4, 5))]


def test_plan_follows_a_given_assignment():
    # the FSMIS chunks of an evaluation: slice 5 belongs to support 8, not to the nearer 2
    assignment = {q: (2 if q < 5 else 8) for q in range(11) if q not in (2, 8)}
    layout = plan_video(list(range(11)), [2, 8], 11, 11, same_volume=True, assignment=assignment)
    assert [(p.support, p.reverse, p.frames) for p in layout.passes] == [
        (2, True, (2, 1, 0)), (2, False, (2, 3, 4)), (8, True, (8, 7, 6, 5)), (8, False, (8, 9, 10))]
    # a slice cut off from its support by another support's slices cannot be tracked
    with pytest.raises(ValueError, match="not contiguous"):
        plan_video(list(range(11)), [2, 8], 11, 11, same_volume=True, assignment={**assignment, 1: 8})


# ----------------------------------------------------------------------------- predictor
def test_predictor_shares_the_backend_weights_and_builds_sam2s_state(sam2_128, tmp_path):
    from PIL import Image
    from sam2.sam2_video_predictor import SAM2VideoPredictor

    predictor = video_predictor(sam2_128)
    assert isinstance(predictor, SAM2VideoPredictor) and predictor.image_size == 128
    assert video_predictor(sam2_128) is predictor
    ours = dict(predictor.named_parameters())
    theirs = dict(sam2_128.sam.model.named_parameters())
    assert ours.keys() == theirs.keys()
    assert all(ours[k].data_ptr() == theirs[k].data_ptr() for k in ours)  # one copy of the weights

    # sam2's own state for a (real, JPEG) two-frame video has the same keys as ours
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8)).save(tmp_path / f"{i}.jpg")
    reference = predictor.init_state(str(tmp_path), offload_video_to_cpu=True)
    frames = LazyFrames(3, lambda i: torch.zeros(3, 128, 128))
    state = predictor.init_state_from_frames(frames, (256, 256))
    assert state.keys() == reference.keys()
    for key in state:
        if key not in ("images", "num_frames", "video_height", "video_width", "cached_features"):
            assert type(state[key]) is type(reference[key]), key
    assert state["num_frames"] == 3 and frames.reads == 0  # no warm-up encoder pass

    # the encoder output rebuilt from the backend's encoding is the image encoder's
    roi = np.repeat(rng.integers(0, 255, (256, 256), dtype=np.uint8)[..., None], 3, axis=2)
    encoded = sam2_128.encode([roi])[0]
    lazy = LazyFrames(1, lambda i: sam2_128.sam.transforms(torch.from_numpy(roi).permute(2, 0, 1)[None] / 255.0)[0])
    with torch.inference_mode():
        direct = predictor.forward_image(lazy[0][None])
    rebuilt = backbone_out(predictor, encoded)
    for a, b in zip(rebuilt["backbone_fpn"] + rebuilt["vision_pos_enc"],
                    direct["backbone_fpn"] + direct["vision_pos_enc"]):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lite_backend_is_refused_with_a_clear_error(lite_backend, blob):
    volume, mask = blob
    support = Support(volume=volume, mask=mask, slices=[8], axis=0)
    with pytest.raises(TypeError, match="sam2 or synpo backend.*lite"):
        segment_volume_video(lite_backend, volume, support, config=NO_STOP)


# ----------------------------------------------------------------------------- end to end
def test_video_mode_end_to_end_from_a_middle_support(sam2_256, spy_on):
    volume, mask = ellipsoid_volume((7, 40, 48), seed=3)
    volume_before, mask_before = volume.copy(), mask.copy()
    support = Support(volume=volume, mask=mask, slices=[3], axis=0)
    spy = spy_on(sam2_256)
    encoder_seen, sam2_encoder_seen = [], []
    hooks = [count_forward(sam2_256.sam.model.image_encoder, encoder_seen),
             count_forward(spy.predictor.image_encoder, sam2_encoder_seen)]
    calls_before = sam2_256.encoder_calls.counts.get(SAM, 0)
    events = []
    try:
        result = segment_volume_video(sam2_256, volume, support, config=NO_STOP, augment=AugmentConfig(n=2), progress=events.append)
    finally:
        for h in hooks:
            h.remove()

    # prompts: the support and its 2 copies, each a mask prompt on the support's frame 3
    assert [frame for frame, _ in spy.mask_prompts] == [3, 3, 3]
    cfg = SynPoConfig()
    geometry = slice_geometry((40, 48), (1.0, 1.0), cfg.geometry)
    np.testing.assert_array_equal(spy.mask_prompts[0][1], geometry.mask_to_roi(mask[3]))
    assert not np.array_equal(spy.mask_prompts[1][1], spy.mask_prompts[0][1])
    # both directions from the middle support, each slice tracked exactly once
    assert [(p["start"], p["max"], p["reverse"]) for p in spy.passes] == [(3, 3, True), (3, 3, False)]
    assert spy.passes[0]["visited"] == [3, 2, 1, 0]
    assert spy.passes[1]["visited"] == [3, 4, 5, 6]
    tracked = [f for p in spy.passes for f in p["visited"][1:]]
    assert sorted(tracked) == [0, 1, 2, 4, 5, 6]
    # one encoder pass per query slice and per support copy, all by the backend; sam2
    # never ran its image encoder, and never read a frame from the lazy frames
    assert sum(encoder_seen) == 6 + 3
    assert sam2_256.encoder_calls.counts[SAM] - calls_before == 9
    assert sam2_encoder_seen == []
    assert spy.state["images"].reads == 0
    assert spy.features == [3, 3, 3, 2, 1, 0, 4, 5, 6]  # features handed over before each frame

    # the result: every slice once, in the right place, nothing written to the inputs
    assert isinstance(result, VolumeResult) and result.mask.shape == volume.shape and result.mask.dtype == np.uint8
    np.testing.assert_array_equal(result.mask[3], mask[3])
    logits = {f: lg for p in spy.passes for f, lg in p["logits"].items() if f != 3}
    for s in (0, 1, 2, 4, 5, 6):
        np.testing.assert_array_equal(result.mask[s], geometry.logits_to_native(logits[s]) > 0)
    assert [r.index for r in result.records] == list(range(7))
    for r in result.records:
        assert isinstance(r, VideoSliceRecord) and isinstance(r, SliceRecord)
        if r.index == 3:
            assert r.support_index == -1 and r.notes == ("support slice",)
            continue
        assert r.support_index == 3 and r.direction == ("backward" if r.index < 3 else "forward")
        assert 0.0 <= r.iou <= 1.0 and 0.0 <= r.object_score <= 1.0 and r.augmentation in (0, 1, 2)
        assert r.pixels == int(result.mask[r.index].sum())
        assert np.isfinite(r.score) or r.pixels == 0
        assert set(r.timings) == {"encode", "decode", "synpo"}
        assert r.to_dict()["direction"] == r.direction
    assert [e.done for e in events] == list(range(1, 8)) and all(e.total == 7 for e in events)
    assert [e.record.index for e in events] == [3, 2, 1, 0, 4, 5, 6]
    np.testing.assert_array_equal(volume, volume_before)
    np.testing.assert_array_equal(mask, mask_before)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_each_frame_lands_on_its_slice_along_any_axis(sam2_128, spy_on, axis):
    """Another volume, anisotropic voxels, two supports: inputs and outputs per slice."""
    shape, spacing = (5, 7, 9), (2.0, 1.0, 1.5)
    rng = np.random.default_rng(axis)
    query = rng.normal(100, 30, shape).astype(np.float32)
    query[1:4, 2:5, 2:8] += 120  # off-centre, not symmetric: a flip would show
    support_volume = rng.normal(100, 30, shape).astype(np.float32)
    support_mask = np.zeros(shape, bool)
    support_mask[1:5, 1:6, 1:8] = True
    support_mask[1:5, 1:3, 1:3] = False  # an L-shaped notch
    n = shape[axis]
    slices = [1, n - 2]
    support = Support(volume=support_volume, mask=support_mask, slices=slices, axis=axis, spacing=spacing)
    spy = spy_on(sam2_128)
    images = []
    original_encode = sam2_128.encode

    def encode(batch):
        images.append([np.array(im) for im in batch])
        return original_encode(batch)

    sam2_128.encode = encode
    try:
        result = segment_volume_video(sam2_128, query, support, config=NO_STOP, augment=None, query_spacing=spacing)
    finally:
        del sam2_128.encode

    cfg = SynPoConfig()
    rest = [shape[i] for i in range(3) if i != axis]
    q_geometry = slice_geometry(tuple(rest), in_plane_spacing(spacing, axis), cfg.geometry)
    q_window = window_bounds(query, cfg.window)
    s_window = window_bounds(support_volume, cfg.window)
    layout = plan_video(list(range(n)), slices, n, n, same_volume=False)
    # mask prompts: each support's own mask, in its orientation, on its inserted frame
    assert [f for f, _ in spy.mask_prompts] == [layout.support_frame[s] for s in slices]
    for (frame, prompt), s in zip(spy.mask_prompts, slices):
        np.testing.assert_array_equal(prompt, q_geometry.mask_to_roi(take_slice(support_mask, s, axis)))
    for (frame, _), s in zip(spy.mask_prompts, slices):
        np.testing.assert_array_equal(images[slices.index(s)][0][..., 0], q_geometry.image_to_roi(
            apply_window(take_slice(support_volume, s, axis), s_window))[..., 0])
    # inputs: the image encoded before frame f is tracked is frame f's slice
    tracked_frames = spy.features[len(slices):]
    for frame, batch in zip(tracked_frames, images[len(slices):]):
        index = layout.frames[frame].query
        expected = q_geometry.image_to_roi(apply_window(take_slice(query, index, axis), q_window))
        np.testing.assert_array_equal(batch[0], expected)
    # outputs: the mask of frame f is written on frame f's slice, mapped back to the native grid
    logits = {f: lg for p in spy.passes for f, lg in p["logits"].items() if layout.frames[f].support is None}
    assert sorted(layout.frames[f].query for f in logits) == list(range(n))
    for frame, lg in logits.items():
        index = layout.frames[frame].query
        np.testing.assert_array_equal(take_slice(result.mask, index, axis), q_geometry.logits_to_native(lg) > 0)
        assert result.record(index).support_index == min(slices, key=lambda s: (abs(s - index), s))


# ----------------------------------------------------------------------------- augmentation and matching
def _support_roi(shape=(5, 60, 80)):
    volume, mask = ellipsoid_volume(shape, centre=(2, 22, 30), radii=(3, 12, 20))
    geometry = slice_geometry(shape[1:])
    window = window_bounds(volume)
    return volume, mask, geometry, window


def test_augmentation_is_seeded_and_moves_image_and_mask_together():
    volume, mask, geometry, window = _support_roi()
    image, mask_roi = geometry.image_to_roi(apply_window(volume[2], window)), geometry.mask_to_roi(mask[2])
    cfg = AugmentConfig(n=3, seed=7)
    a = augment_support(image, mask_roi, geometry.scaled, cfg, key=2)
    b = augment_support(image, mask_roi, geometry.scaled, cfg, key=2)
    assert len(a) == 4 and a[0].jitter.is_identity and not any(c.jitter.is_identity for c in a[1:])
    np.testing.assert_array_equal(a[0].image, image)
    for x, y in zip(a, b):
        assert x.jitter == y.jitter
        np.testing.assert_array_equal(x.image, y.image)
        np.testing.assert_array_equal(x.mask, y.mask)
    other_seed = augment_support(image, mask_roi, geometry.scaled, AugmentConfig(n=3, seed=8), key=2)
    other_slice = augment_support(image, mask_roi, geometry.scaled, cfg, key=3)
    assert other_seed[1].jitter != a[1].jitter and other_slice[1].jitter != a[1].jitter
    rows, cols = geometry.scaled
    for copy in a[1:]:
        assert not np.array_equal(copy.mask, mask_roi) and copy.mask.any()
        assert not copy.mask[rows:].any() and not copy.mask[:, cols:].any()  # padding stays padding
        assert not copy.image[rows:].any() and not copy.image[:, cols:].any()
        grey = copy.image[..., 0].astype(float)
        assert grey[copy.mask].mean() > grey[:rows, :cols][~copy.mask[:rows, :cols]].mean() + 60  # blob under mask
    with pytest.raises(ValueError, match="empty"):
        augment_support(image, np.zeros_like(mask_roi), geometry.scaled, cfg)
    with pytest.raises(ValueError, match="n must be >= 0"):
        AugmentConfig(n=-1)


def test_dynamic_matching_picks_the_copy_with_the_querys_pose(sam2_128):
    """A neighbouring slice posed like copy k (its own anatomy and noise) matches copy k."""
    volume, mask, geometry, window = _support_roi()
    image, mask_roi = geometry.image_to_roi(apply_window(volume[2], window)), geometry.mask_to_roi(mask[2])
    cfg = AugmentConfig(n=4, rotation_deg=30, translate=0.2, scale=(0.7, 1.3), seed=3)
    copies = augment_support(image, mask_roi, geometry.scaled, cfg, key=2)
    rows, cols = geometry.scaled
    neighbour = geometry.image_to_roi(apply_window(volume[3], window))
    queries = []
    for copy in copies:
        grey, _ = apply_jitter(neighbour[:rows, :cols, 0], mask_roi[:rows, :cols], copy.jitter)
        q = np.zeros_like(neighbour)
        q[:rows, :cols] = grey[..., None]
        queries.append(q)
    encoded = sam2_128.encode([c.image for c in copies] + queries)
    bank = [descriptor(e.features[SAM], cfg.match_grid) for e in encoded[:5]]
    for k, enc in enumerate(encoded[5:]):
        best, sims = best_match(descriptor(enc.features[SAM], cfg.match_grid), bank)
        assert best == k, (k, sims)
    assert best_match(bank[0], [bank[0], bank[0]])[0] == 0  # ties go to the support itself


def test_video_run_matches_each_query_slice_to_the_copy_it_was_posed_as(sam2_128):
    """End to end: query slice k is a neighbouring slice in copy k's pose (copies are seeded)."""
    side = 256  # native slices at the ROI size: the ROI image is the slice itself
    volume, mask = ellipsoid_volume((5, side, side), centre=(2, 100, 120), radii=(3, 50, 80), seed=1)
    window = (0.0, 255.0)
    cfg = AugmentConfig(n=4, rotation_deg=30, translate=0.2, scale=(0.7, 1.3), seed=5)
    geometry = slice_geometry((side, side))
    image = geometry.image_to_roi(apply_window(volume[2], window))
    copies = augment_support(image, geometry.mask_to_roi(mask[2]), geometry.scaled, cfg, key=2)
    query = np.stack([apply_jitter(apply_window(volume[3], window), mask[3], c.jitter)[0] for c in copies])
    support = Support(volume=volume, mask=mask, slices=[2], axis=0, window=window)
    result = segment_volume_video(sam2_128, query.astype(np.float32), support, config=NO_STOP, augment=cfg, query_window=window)
    assert [r.augmentation for r in result.records] == [0, 1, 2, 3, 4]


# ----------------------------------------------------------------------------- memory
def test_memory_stays_bounded_on_a_long_volume(sam2_128, spy_on):
    """Tracking outputs stop at what SAM 2 reads; dropping the rest changes nothing."""
    n, s = 40, 2
    volume, mask = ellipsoid_volume((n, 24, 24), radii=(18, 8, 8), seed=2)
    support = Support(volume=volume, mask=mask, slices=[s], axis=0)
    spy = spy_on(sam2_128)
    windowed = segment_volume_video(sam2_128, volume, support, config=NO_STOP, augment=None)
    reach = memory_reach(spy.predictor)
    assert reach == 15  # SAM 2.1: 16 object pointers (15 back), 7 mask memories (6 back)
    forward, tracked = spy.passes[-1], n - 1 - s
    assert forward["visited"] == list(range(s, n)) and len(spy.retained) == (s + 1) + (tracked + 1)
    # at most the window plus the frame just tracked (dropped from after its yield)
    assert max(spy.retained) == reach + 1
    # state size: constant once the window is full, however long the volume
    plateau = spy.state_bytes[-(tracked - reach):]
    assert max(plateau) == min(plateau) == spy.state_bytes[-1]
    assert spy.state["images"].reads == 0  # no frame tensor was ever made

    keep_all = segment_volume_video(sam2_128, volume, support, config=NO_STOP, augment=None, video=VideoConfig(memory_window=10 ** 6))
    assert max(spy.retained[-(tracked + 1):]) == tracked  # everything kept this time ...
    assert spy.state_bytes[-1] > max(plateau)
    np.testing.assert_array_equal(windowed.mask, keep_all.mask)  # ... and the same result
    np.testing.assert_allclose([r.iou for r in windowed.records], [r.iou for r in keep_all.records], atol=1e-6)
    assert [r.pixels for r in windowed.records] == [r.pixels for r in keep_all.records]


# ----------------------------------------------------------------------------- hybrid
@pytest.fixture(scope="module")
def synpo_128():
    return create_backend("synpo", sam2_image_size=128, dino_model="vits14-reg4", **TINY)


def test_hybrid_adds_synpo_points_on_each_tracked_frame(synpo_128, spy_on):
    volume, mask = ellipsoid_volume((5, 32, 40), seed=4)
    support = Support(volume=volume, mask=mask, slices=[2], axis=0)
    spy = spy_on(synpo_128)
    always = VideoConfig(hybrid_min_object_logit=-np.inf)
    result = segment_volume_video(synpo_128, volume, support, config=NO_STOP, augment=None, hybrid=True, video=always)

    assert [f for f, *_ in spy.point_prompts] == [1, 0, 3, 4]
    # each correction is encoded into memory before the next frame is tracked
    after_points = [spy.calls[i + 1] for i, c in enumerate(spy.calls) if c == "add_new_points_or_box"]
    assert after_points == ["preflight"] * 4
    # the points are SynPo's, picked from the confidence map of that slice
    cfg = SynPoConfig()
    segmenter = SynPoSegmenter(synpo_128, cfg)
    geometry = slice_geometry((32, 40), (1.0, 1.0), cfg.geometry)
    window = window_bounds(volume, cfg.window)
    encode = lambda s: synpo_128.encode([geometry.image_to_roi(apply_window(volume[s], window))])[0]  # noqa: E731
    context = segmenter.prepare_support(encode(2), geometry.mask_to_roi(mask[2]), geometry.valid())
    for frame, points, labels, logits in spy.point_prompts:
        maps = segmenter.confidence(encode(frame), context)
        expected = select_points(maps.syn, context.synergy.mu, context.synergy.sigma, cfg.points, geometry.valid())
        np.testing.assert_array_equal(points, expected.coords)
        np.testing.assert_array_equal(labels, expected.labels)
        assert (labels == 1).sum() == cfg.points.n_positive
        record = result.record(frame)
        np.testing.assert_allclose(record.points, geometry.points_to_native(expected.coords))
        # the corrected mask is the one written
        np.testing.assert_array_equal(result.mask[frame], geometry.logits_to_native(logits) > 0)

    # gated by SAM 2's object head: above every possible logit, no points at all
    spy.point_prompts.clear()
    never = VideoConfig(hybrid_min_object_logit=np.inf)
    plain = segment_volume_video(synpo_128, volume, support, config=NO_STOP, augment=None, hybrid=True, video=never)
    assert spy.point_prompts == []
    assert all(len(r.points) == 0 for r in plain.records)


# ----------------------------------------------------------------------------- control
def test_cancel_end_direction_and_bad_input(sam2_128, spy_on):
    volume, mask = ellipsoid_volume((7, 24, 28), seed=5)
    support = Support(volume=volume, mask=mask, slices=[3], axis=0)
    seen = []

    def cancel():
        return len(seen) >= 3

    with pytest.raises(Cancelled):
        segment_volume_video(sam2_128, volume, support, config=NO_STOP, augment=None, progress=seen.append, cancel=cancel)
    assert len(seen) == 3

    spy = spy_on(sam2_128)
    result = segment_volume_video(sam2_128, volume, support, config=NO_STOP, augment=None, end_direction=lambda record: True)
    assert [p["visited"] for p in spy.passes] == [[3, 2], [3, 4]]  # one slice per direction, then stop
    ended = [r.index for r in result.records if r.notes == ("direction ended",)]
    assert ended == [0, 1, 5, 6]
    assert not result.mask[[0, 1, 5, 6]].any() and len(result.records) == 7

    with pytest.raises(ValueError, match="3-D"):
        segment_volume_video(sam2_128, volume[0], support, config=NO_STOP)
    with pytest.raises(ValueError, match="outside"):
        segment_volume_video(sam2_128, volume, support, config=NO_STOP, slices=[9])
    with pytest.raises(ValueError, match="memory_window"):
        VideoConfig(memory_window=0)


def test_frames_encoded_ahead_in_batches_give_the_same_result(sam2_128):
    volume, mask = ellipsoid_volume((7, 24, 28), seed=6)
    support = Support(volume=volume, mask=mask, slices=[3], axis=0)
    sizes = []
    original = sam2_128.encode

    def encode(batch):
        sizes.append(len(batch))
        return original(batch)

    one = segment_volume_video(sam2_128, volume, support, config=NO_STOP, augment=None)
    sam2_128.encode = encode
    try:
        batched = segment_volume_video(sam2_128, volume, support, config=NO_STOP, augment=None, batch_size=4)
    finally:
        del sam2_128.encode
    assert sizes == [1, 3, 3]  # the support, then each direction's 3 slices at once
    assert (one.mask == batched.mask).mean() > 0.999  # batched convolutions may differ in the last bits
    np.testing.assert_allclose([r.iou for r in one.records], [r.iou for r in batched.records], atol=1e-3)


def test_auto_stop_holds_back_and_ends_each_direction(sam2_128):
    """Quality control in the video mode: with an unreachable threshold and k = 1, the
    first tracked slice of each direction is left unpainted and the rest is skipped."""
    volume, mask = ellipsoid_volume(shape=(9, 20, 20))
    support = Support(volume, mask, [4])
    cfg = NO_STOP.updated(**{"quality.auto_stop": True, "quality.stop_threshold": 2.0, "quality.stop_after": 1})
    result = segment_volume_video(sam2_128, volume, support, config=cfg, augment=None)
    assert np.flatnonzero(result.mask.any(axis=(1, 2))).tolist() == [4]
    notes = {r.index: " ".join(r.notes) for r in result.records}
    assert "below the confidence threshold" in notes[3] and "below the confidence threshold" in notes[5]
    assert all("auto-stop: not segmented" in notes[i] for i in (0, 1, 2, 6, 7, 8))
    assert np.isfinite(result.record(3).confidence) and np.isnan(result.record(0).score)


def test_several_structures_in_the_video_mode_run_one_after_another_as_alone(sam2_128):
    """No shared runner in the video mode (SAM 2 tracks one object per state here): each
    structure runs as it would alone, overlaps decided afterwards (by depth: the video mode
    gives no per-pixel evidence)."""
    from SynPoLib.volume import Structure, segment_structures, segment_volume

    volume, a = ellipsoid_volume((7, 24, 28), centre=(3, 7, 8), radii=(3, 4, 5), seed=6)
    vol_b, b = ellipsoid_volume((7, 24, 28), centre=(3, 16, 19), radii=(3, 4, 5), seed=7)
    volume = np.where(b, vol_b, volume).astype(np.float32)
    cfg = NO_STOP.updated(**{"propagation.mode": "video"})
    alone = [segment_volume(sam2_128, volume, Support(volume, m, [3]), config=cfg).mask for m in (a, b)]
    together = segment_structures(sam2_128, volume, [Structure("a", Support(volume, a, [3])),
                                                     Structure("b", Support(volume, b, [3]))], config=cfg)
    both = (alone[0] > 0) & (alone[1] > 0)
    assert (alone[0][~both] > 0).any() and (alone[1][~both] > 0).any(), "the comparison covers painted voxels"
    for name, mask in zip("ab", alone):
        got = together[name].mask > 0
        np.testing.assert_array_equal(got[~both], mask[~both] > 0)  # identical wherever nothing was claimed twice
    assert not ((together["a"].mask > 0) & (together["b"].mask > 0)).any()
