"""The paper's backends on the REAL architectures with random weights.

SAM 2.1 is built by sam2's ``build_sam2`` from sam2's own configuration files, DINOv2
by timm; no hub is reachable here, so the weights are random (checkpoint loading is
proven on files in test_checkpoints.py). Most tests use test-sized inputs (SAM 2.1
at 256 px, DINOv2 at 224 px: 16 x 16 grids); the default 64 x 64 grids are checked at
full size once, and for the larger variants on the meta device (shapes without
arithmetic).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SynPoLib import Support, segment_volume
from SynPoLib.backends import create_backend
from SynPoLib.backends.dinov2 import DINO_MODELS, DINOv2Encoder, build_dinov2, dino_spec
from SynPoLib.backends.sam2_image import SAM2_SIZES, build_sam2_model
from SynPoLib.backends.sam2_dinov2 import SAM2DINOv2Backend, estimate_gflop
from SynPoLib.method.synergy import DINO, SAM

SMALL = dict(sam2_size="tiny", sam2_image_size=256, random_weights=True, device="cpu")


@pytest.fixture(scope="module")
def synpo():
    return create_backend("synpo", dino_model="vits14-reg4", **SMALL)


@pytest.fixture(scope="module")
def images():
    rng = np.random.default_rng(7)
    out = []
    for k in range(3):
        im = np.zeros((256, 256), np.float32)
        yy, xx = np.mgrid[0:256, 0:256]
        im += 120 * ((xx - 100 - 10 * k) ** 2 + (yy - 130) ** 2 < 40 ** 2)
        im += rng.normal(60, 10, im.shape)
        out.append(np.repeat(np.clip(im, 0, 255).astype(np.uint8)[..., None], 3, axis=2))
    return out


def _count_images(module: torch.nn.Module, store: list):
    """Forward hook recording how many images each call of a real module processed."""
    return module.register_forward_hook(lambda mod, inputs, output: store.append(int(inputs[0].shape[0])))


def test_backends_are_registered_with_the_paper_preset(synpo):
    assert synpo.name == "synpo" and synpo.preset == "paper"
    assert tuple(synpo.feature_keys) == (SAM, DINO)
    sam_only = create_backend("sam2", **SMALL)
    assert sam_only.name == "sam2" and tuple(sam_only.feature_keys) == (SAM,)
    # built once per process: the same SAM 2.1 module serves both backends
    assert sam_only.sam.model is synpo.sam.model
    assert create_backend("synpo", dino_model="vits14-reg4", **SMALL) is synpo


def test_architectures_come_from_sam2_configs_and_timm(synpo):
    from sam2.modeling.backbones.hieradet import Hiera
    from sam2.modeling.sam2_base import SAM2Base
    from timm.models.vision_transformer import VisionTransformer

    assert isinstance(synpo.sam.model, SAM2Base)
    trunk = synpo.sam.model.image_encoder.trunk
    assert isinstance(trunk, Hiera) and trunk.blocks[0].dim == 96  # Hiera-T: embed_dim 96, stages 1-2-7-2
    assert len(trunk.blocks) == 1 + 2 + 7 + 2
    vit = synpo.dino.model
    assert isinstance(vit, VisionTransformer) and vit.embed_dim == 384 and len(vit.blocks) == 12
    assert vit.num_prefix_tokens == 5  # class + 4 registers


def test_one_encoder_pass_per_slice_and_backbone(synpo, images):
    sam_seen, dino_seen = [], []
    hooks = [_count_images(synpo.sam.model.image_encoder, sam_seen),
             _count_images(synpo.dino.model.patch_embed, dino_seen)]
    before = dict(synpo.encoder_calls.counts)
    try:
        encoded = synpo.encode(images)
        for enc in encoded:  # decoding and refining never re-encode
            pred = synpo.predict(enc, points=np.array([[100.0, 130.0], [20.0, 20.0]]), labels=np.array([1, 0]))
            synpo.predict(enc, points=np.array([[100.0, 130.0]]), labels=np.array([1]),
                          mask_input=pred.low_res[0], multimask=False)
    finally:
        for h in hooks:
            h.remove()
    assert sum(sam_seen) == len(images) and sum(dino_seen) == len(images)
    assert sam_seen == [3] and dino_seen == [3]  # one batched pass
    assert synpo.encoder_calls.counts[SAM] - before.get(SAM, 0) == 3
    assert synpo.encoder_calls.counts[DINO] - before.get(DINO, 0) == 3


def test_sam_grid_is_backbone_fpn_before_no_mem_embed(synpo, images):
    enc = synpo.encode(images[:1])[0]
    sam = enc.features[SAM]
    assert sam.shape == (256, 16, 16) and sam.dtype == np.float32
    embed = enc.state.image_embed[0].float().numpy()
    no_mem = synpo.sam.model.no_mem_embed.reshape(-1, 1, 1).float().numpy()
    assert np.abs(no_mem).max() > 1e-3  # otherwise the test could not tell them apart
    np.testing.assert_allclose(sam, embed - no_mem, atol=1e-5)
    assert not np.allclose(sam, embed, atol=1e-4)
    assert enc.features[DINO].shape == (384, 16, 16)


def test_encoding_and_decoding_match_sam2_image_predictor(synpo, images):
    """Our device-side batch path gives what sam2's own predictor gives."""
    from sam2.sam2_image_predictor import SAM2ImagePredictor

    model = synpo.sam.model
    ref = SAM2ImagePredictor(model)
    ref._bb_feat_sizes = synpo.sam.predictor._bb_feat_sizes
    ref.set_image_batch(list(images[:2]))
    encoded = synpo.encode(images[:2])
    torch.testing.assert_close(encoded[1].state.image_embed[0], ref._features["image_embed"][1], atol=2e-4, rtol=1e-4)
    for ours, theirs in zip(encoded[1].state.high_res_feats, ref._features["high_res_feats"]):
        torch.testing.assert_close(ours[0], theirs[1], atol=2e-4, rtol=1e-4)

    pts, labs = np.array([[90.0, 120.0], [200.0, 40.0]]), np.array([1, 0])
    box = np.array([60.0, 90.0, 150.0, 170.0])
    theirs = ref.predict_batch([None, pts], [None, labs], box_batch=[None, box], multimask_output=True,
                               return_logits=True)
    mine = synpo.predict(encoded[1], points=pts, labels=labs, box=box, multimask=True, roi_size=256)
    np.testing.assert_allclose(mine.logits, theirs[0][1], atol=2e-3)
    np.testing.assert_allclose(mine.iou, theirs[1][1], atol=1e-4)
    np.testing.assert_allclose(mine.low_res, theirs[2][1], atol=2e-3)


def test_predict_shapes_mask_input_resizing_and_roi_coordinates(synpo, images):
    enc = synpo.encode(images[:1])[0]
    pred = synpo.predict(enc, points=np.array([[100.0, 130.0]]), labels=np.array([1]), multimask=True)
    assert pred.logits.shape == (3, 256, 256) and pred.iou.shape == (3,)
    assert pred.low_res.shape == (3, 64, 64)  # 4 x the 16 x 16 grid of the test model
    # a 256 x 256 mask prompt (the seam's size) is resized to the model's low-res size
    big = np.kron(pred.low_res[0], np.ones((4, 4), np.float32))
    assert big.shape == (256, 256)
    a = synpo.predict(enc, points=np.array([[100.0, 130.0]]), labels=np.array([1]), mask_input=big, multimask=False)
    b = synpo.predict(enc, points=np.array([[100.0, 130.0]]), labels=np.array([1]), mask_input=pred.low_res[0],
                      multimask=False)
    assert a.logits.shape == (1, 256, 256)
    assert np.corrcoef(a.logits.ravel(), b.logits.ravel())[0, 1] > 0.99
    # ROI coordinates scale with the ROI: the same relative point on a 128-px ROI
    half = synpo.predict(enc, points=np.array([[50.0, 65.0]]), labels=np.array([1]), roi_size=128)
    assert half.logits.shape == (3, 128, 128)
    np.testing.assert_allclose(half.iou, pred.iou, atol=1e-4)
    with pytest.raises(ValueError, match="labels"):
        synpo.predict(enc, points=np.array([[1.0, 2.0]]), labels=np.array([1, 0]))


def test_batched_encoding_equals_one_by_one_and_survives_oom(synpo, images):
    images = images[:2]
    one_by_one = [synpo.encode([im])[0] for im in images]
    model = synpo.sam.model
    real = model.forward_image
    seen = []

    def tight_memory(batch):  # a device that only fits one slice at a time
        seen.append(batch.shape[0])
        if batch.shape[0] > 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.00 GiB")
        return real(batch)

    model.forward_image = tight_memory
    synpo.batcher.size, backoffs = 64, synpo.batcher.backoffs
    try:
        batched = synpo.encode(images)
    finally:
        del model.forward_image
        synpo.batcher.size = 1_000_000
    assert seen[:2] == [2, 1] and synpo.batcher.backoffs == backoffs + 1
    for a, b in zip(batched, one_by_one):
        np.testing.assert_allclose(a.features[SAM], b.features[SAM], atol=1e-4)
        np.testing.assert_allclose(a.features[DINO], b.features[DINO], atol=1e-4)


def test_grids_must_match():
    with pytest.raises(ValueError, match="feature grids differ.*16 x 16.*grid of 16"):
        SAM2DINOv2Backend("tiny", "vits14", sam2_image_size=256, dino_grid=64, random_weights=True)
    with pytest.raises(ValueError, match="unknown DINOv2"):
        SAM2DINOv2Backend("tiny", "vitx14", sam2_image_size=256, random_weights=True)
    with pytest.raises(ValueError, match="sam2 backend uses SAM 2.1 alone"):
        create_backend("sam2", dino_model="vits14", cache=False, **SMALL)


def test_synergy_pipeline_end_to_end(colin, synpo):
    vol, labels = colin
    mask = labels == 77  # left thalamus (AAL)
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    mid = int(ks[len(ks) // 2])
    support = Support(volume=vol, mask=mask, slices=[mid], axis=0)
    query = [mid - 4, mid + 3, mid + 6]
    sam_seen, dino_seen = [], []
    hooks = [_count_images(synpo.sam.model.image_encoder, sam_seen),
             _count_images(synpo.dino.model.patch_embed, dino_seen)]
    before = dict(synpo.encoder_calls.counts)
    try:
        result = segment_volume(synpo, vol, support, slices=query + [mid], batch_size=2)
    finally:
        for h in hooks:
            h.remove()
    # the support slice (copied as labelled) is encoded once for its prototypes,
    # every query slice once: 1 + 3 images per backbone
    assert sum(sam_seen) == 4 and sum(dino_seen) == 4
    assert sam_seen == [1, 2, 1] and dino_seen == [1, 2, 1]  # support, then batches of 2
    assert synpo.encoder_calls.counts[SAM] - before.get(SAM, 0) == 4
    assert result.mask.shape == vol.shape and result.mask.dtype == np.uint8
    assert np.array_equal(result.mask[mid] > 0, mask[mid])
    recs = {r.index: r for r in result.records}
    assert set(recs) == set(query + [mid])
    for q in query:
        r = recs[q]
        assert r.support_index == mid
        assert (r.labels == 1).sum() >= 1  # positives from the fused map
        assert np.all(r.points >= 0) and np.all(r.points[:, 0] < vol.shape[2]) and np.all(r.points[:, 1] < vol.shape[1])
        assert r.timings["encode"] > 0 and r.timings["decode"] > 0
        assert np.isfinite(r.iou)
    # the confidence map fuses both backbones with the paper's weights: on the real features
    # of a query slice, the paper's map is 0.8 S D + 0.1 S + 0.1 D of the maps each backbone
    # gives alone (deltas (0, 1, 0) and (0, 0, 1)), and the two backbones' maps differ
    from SynPoLib.config import SynergyConfig, SynPoConfig
    from SynPoLib.method.segmenter import SynPoSegmenter
    from SynPoLib.volume.types import Job

    job = Job.build(synpo, vol, support, SynPoConfig())
    query_enc = synpo.encode([job.query_roi(query[0])])[0]
    image, mask_roi = job.support_roi(mid)
    support_enc = synpo.encode([image])[0]

    def confidence(sd, s, d):
        segmenter = SynPoSegmenter(synpo, SynPoConfig().replace(synergy=SynergyConfig(sd, s, d)))
        return segmenter.confidence(query_enc, segmenter.prepare_support(support_enc, mask_roi)).syn

    sam_map, dino_map, fused = confidence(0.0, 1.0, 0.0), confidence(0.0, 0.0, 1.0), confidence(0.8, 0.1, 0.1)
    np.testing.assert_allclose(fused, 0.8 * sam_map * dino_map + 0.1 * sam_map + 0.1 * dino_map, atol=1e-5)
    assert np.corrcoef(sam_map.ravel(), dino_map.ravel())[0, 1] < 0.99  # two backbones, two maps
    assert np.abs(fused - sam_map).max() > 0.05 and np.abs(fused - dino_map).max() > 0.05


def test_sam_only_pipeline(colin):
    vol, labels = colin
    mask = labels == 77
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    mid = int(ks[len(ks) // 2])
    backend = create_backend("sam2", **SMALL)
    result = segment_volume(backend, vol, Support(volume=vol, mask=mask, slices=[mid]), slices=[mid + 2])
    rec = result.records[0]
    assert rec.index == mid + 2 and rec.support_index == mid and len(rec.points) >= 1


def test_default_grids_are_64x64_at_full_size():
    """SAM 2.1 tiny at 1024 px and DINOv2-S at 896 px, real arithmetic, one slice."""
    backend = SAM2DINOv2Backend("tiny", "vits14", random_weights=True, device="cpu")
    image = np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8)
    enc = backend.encode([image])[0]
    assert enc.features[SAM].shape == (256, 64, 64)
    assert enc.features[DINO].shape == (384, 64, 64)
    assert backend.dino.input_size == 896 and backend.sam.image_size == 1024
    pred = backend.predict(enc, points=np.array([[128.0, 128.0]]), labels=np.array([1]))
    assert pred.low_res.shape == (3, 256, 256)  # the seam's 256 x 256 low-res size at full size


@pytest.mark.parametrize("key", sorted(DINO_MODELS))
def test_dinov2_variants_give_64x64_grids_with_their_channels(key):
    """Every variant's real architecture, run on the meta device (shapes only)."""
    spec = dino_spec(key)
    net = build_dinov2(key, grid=64, device=torch.device("meta"))
    enc = DINOv2Encoder(net)
    assert enc.input_size == 896
    assert enc.num_prefix_tokens == (5 if "reg4" in spec.timm_name else 1)
    out = enc.encode(torch.empty(2, 3, 256, 256, device="meta"))
    assert tuple(out.shape) == (2, spec.channels, 64, 64)
    expected = {"s": 384, "b": 768, "l": 1024, "g": 1536}[key[3]] if key != "sinder" else 1536
    assert spec.channels == expected == net.embed_dim


@pytest.mark.parametrize("size", sorted(SAM2_SIZES))
def test_sam2_sizes_give_a_256x64x64_stride16_map(size):
    model = build_sam2_model(size, device=torch.device("meta"))
    out = model.forward_image(torch.empty(1, 3, 1024, 1024, device="meta"))
    assert tuple(out["backbone_fpn"][-1].shape) == (1, 256, 64, 64)
    assert [tuple(f.shape[-2:]) for f in out["backbone_fpn"]] == [(256, 256), (128, 128), (64, 64)]


def test_flop_table_matches_the_architecture():
    """The CPU time estimate's FLOP table is what torch counts on the real model."""
    from torch.utils.flop_counter import FlopCounterMode

    model = build_sam2_model("tiny", device=torch.device("meta"))
    counter = FlopCounterMode(display=False)
    with counter:
        model.forward_image(torch.empty(1, 3, 1024, 1024, device="meta"))
    assert counter.get_total_flops() / 1e9 == pytest.approx(estimate_gflop("tiny", None), rel=0.01)
    net = build_dinov2("vits14", grid=64, device=torch.device("meta"))
    counter = FlopCounterMode(display=False)
    with counter:
        net.forward_features(torch.empty(1, 3, 896, 896, device="meta"))
    both = estimate_gflop("tiny", "vits14")
    assert (counter.get_total_flops() / 1e9) == pytest.approx(both - estimate_gflop("tiny", None), rel=0.01)


# ------------------------------------------------------------ the paper path, against sam2 1.1.0


def _decoder_calls(model, store):
    """Forward hook on SAM 2's mask decoder recording each call's multimask_output."""
    def hook(module, args, kwargs, output):
        store.append(bool(kwargs["multimask_output"] if "multimask_output" in kwargs else args[4]))
    return model.sam_mask_decoder.register_forward_hook(hook, with_kwargs=True)


def _thalamus(colin):
    vol, labels = colin
    mask = labels == 77
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    return vol, mask, int(ks[len(ks) // 2])


def test_several_points_decode_three_masks_and_one_and_the_prototype_chooses(colin, synpo):
    """sam2 1.1.0 uses its multimask tokens for prompts of 0-1 points only
    (multimask_max_pt_num: 1) and advises one mask for several points: with the paper's
    3 positives + 4 negatives the first decode is done both ways from one embedding and
    the prototype score chooses among the 3 + 1 masks."""
    from SynPoLib.config import SynPoConfig
    from SynPoLib.method.refine import mask_score
    from SynPoLib.method.segmenter import SynPoSegmenter
    from SynPoLib.volume.types import Job

    assert synpo.multimask_max_points == synpo.sam.model.multimask_max_pt_num == 1
    vol, mask, mid = _thalamus(colin)
    cfg = SynPoConfig().updated(**{"refine.rounds": 0})
    job = Job.build(synpo, vol, Support(volume=vol, mask=mask, slices=[mid]), cfg)
    segmenter = SynPoSegmenter(synpo, cfg)
    image, mask_roi = job.support_roi(mid)
    context = segmenter.prepare_support(synpo.encode([image])[0], mask_roi, job.s_geometry.valid())
    encoded = synpo.encode([job.query_roi(mid + 3)])[0]
    calls = []
    hook = _decoder_calls(synpo.sam.model, calls)
    try:
        result = segmenter.segment(encoded, context, job.q_geometry.valid())
    finally:
        hook.remove()
    assert len(result.points.coords) == 7 and calls == [True, False]
    assert any(n.startswith("decoded 3 masks and 1") for n in result.notes)
    # the kept mask is the one of the four most like the support prototype
    points, labels = result.points.coords, result.points.labels
    multi = synpo.predict(encoded, points=points, labels=labels, multimask=True)
    single = synpo.predict(encoded, points=points, labels=labels, multimask=False)
    candidates = list(multi.logits) + list(single.logits)
    sam_map = segmenter.confidence(encoded, context).sam
    best = int(np.argmax([mask_score(c > 0, sam_map) for c in candidates]))
    np.testing.assert_allclose(result.logits, candidates[best], atol=1e-4)
    # one point: the multimask tokens serve it, one decode
    one = SynPoSegmenter(synpo, cfg.updated(**{"points.n_negative": 0, "points.n_positive": 1}))
    calls.clear()
    hook = _decoder_calls(synpo.sam.model, calls)
    try:
        one.segment(encoded, context, job.q_geometry.valid())
    finally:
        hook.remove()
    assert calls == [True]
    # switched off: the paper's plain multimask decode
    off = SynPoSegmenter(synpo, cfg.updated(**{"prompt.single_mask_too": False}))
    calls.clear()
    hook = _decoder_calls(synpo.sam.model, calls)
    try:
        off.segment(encoded, context, job.q_geometry.valid())
    finally:
        hook.remove()
    assert calls == [True]


def test_keep_aspect_padding_is_no_part_of_the_support_background(colin, synpo):
    """Colin27's axial slices are 217 x 181: keep_aspect pads them into the square. The
    support background Gaussian that places the negatives is fitted on the tokens that
    show the slice only."""
    from SynPoLib.config import SynPoConfig
    from SynPoLib.method.segmenter import SynPoSegmenter
    from SynPoLib.method.synergy import mask_to_grid, valid_to_grid
    from SynPoLib.volume.slices import prepare_supports
    from SynPoLib.volume.types import Job

    vol, mask, mid = _thalamus(colin)
    job = Job.build(synpo, vol, Support(volume=vol, mask=mask, slices=[mid]), SynPoConfig())
    valid = job.s_geometry.valid()
    assert not valid.all()  # there is padding
    context = prepare_supports(job, SynPoSegmenter(synpo, job.config))[mid]
    grid = (synpo.grid, synpo.grid)
    _, mask_roi = job.support_roi(mid)
    shows = valid_to_grid(valid, grid)
    background = shows & ~mask_to_grid(mask_roi, grid, job.config.synergy.mask_threshold)
    assert 0 < shows.sum() < shows.size
    assert context.synergy.background.size == int(background.sum())
    # the Gaussian is the one of those tokens' fused scores, not of the padding's
    everything = SynPoSegmenter(synpo, job.config).prepare_support(synpo.encode([job.support_roi(mid)[0]])[0],
                                                                   mask_roi)
    assert everything.synergy.background.size > context.synergy.background.size
    assert context.synergy.mu == pytest.approx(float(np.mean(context.synergy.background)), abs=1e-5)


def test_auto_precision_is_fp32_on_the_cpu_and_where_bf16_is_missing():
    from SynPoLib.backends.device import autocast_dtype

    backend = create_backend("sam2", **SMALL)
    assert backend.dtype is None  # the CPU: float32
    assert autocast_dtype(torch.device("cuda"), "auto", bf16_supported=False) is None
