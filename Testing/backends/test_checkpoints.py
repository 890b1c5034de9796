"""Checkpoint files in every accepted format, loaded the way users load them.

Random state dicts are written to real files in each format (SAM 2 ``.pt`` with a
``model`` key as Meta ships it, or bare; DINOv2 in timm's ``.safetensors`` and in the
ORIGINAL DINOv2 layout that SINDER and facebookresearch checkpoints use) and read
back through the backend constructor (the path ``synpo segment --sam2-checkpoint /
--dino-checkpoint`` takes). Strict keys, compared tensors, and broken files that must
fail naming the file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from SynPoLib.backends import create_backend
from SynPoLib.backends.dinov2 import DINO_MODELS, build_dinov2, dino_spec, load_dinov2_state
from SynPoLib.backends.sam2_image import build_sam2_model
from SynPoLib.backends.weights import WeightsError

TEST_SIZE = dict(sam2_size="tiny", sam2_image_size=256, device="cpu", cache=False)

#: the original DINOv2 architectures (facebookresearch/dinov2 hub definitions):
#: embed dim, depth, SwiGLU feed-forward (ViT-g) or plain MLP
ORIGINAL = {"vits14": (384, 12, False), "vitb14": (768, 12, False), "vitl14": (1024, 24, False),
            "vitg14": (1536, 40, True)}


def original_dinov2_state(arch: str, registers: bool, seed: int = 0, meta: bool = False) -> dict:
    """A random state dict in the ORIGINAL DINOv2 layout (518-px model: 37 x 37 + 1 positions).

    Written from the original model definition, not from timm, so the test can catch
    a converter that does not understand real checkpoints.
    """
    dim, depth, swiglu = ORIGINAL[arch]
    gen = torch.Generator().manual_seed(seed)

    def t(*shape):
        return torch.empty(*shape, device="meta") if meta else torch.randn(*shape, generator=gen) * 0.02

    state = {"cls_token": t(1, 1, dim), "pos_embed": t(1, 1 + 37 * 37, dim), "mask_token": t(1, dim),
             "patch_embed.proj.weight": t(dim, 3, 14, 14), "patch_embed.proj.bias": t(dim)}
    if registers:
        state["register_tokens"] = t(1, 4, dim)
    hidden = 4 * dim
    for i in range(depth):
        p = f"blocks.{i}."
        state.update({p + "norm1.weight": t(dim), p + "norm1.bias": t(dim),
                      p + "attn.qkv.weight": t(3 * dim, dim), p + "attn.qkv.bias": t(3 * dim),
                      p + "attn.proj.weight": t(dim, dim), p + "attn.proj.bias": t(dim),
                      p + "ls1.gamma": t(dim), p + "norm2.weight": t(dim), p + "norm2.bias": t(dim),
                      p + "ls2.gamma": t(dim)})
        if swiglu:  # SwiGLUFFNFused: hidden = (int(4 D * 2 / 3) + 7) // 8 * 8
            h = (int(hidden * 2 / 3) + 7) // 8 * 8
            state.update({p + "mlp.w12.weight": t(2 * h, dim), p + "mlp.w12.bias": t(2 * h),
                          p + "mlp.w3.weight": t(dim, h), p + "mlp.w3.bias": t(dim)})
        else:
            state.update({p + "mlp.fc1.weight": t(hidden, dim), p + "mlp.fc1.bias": t(hidden),
                          p + "mlp.fc2.weight": t(dim, hidden), p + "mlp.fc2.bias": t(dim)})
    state.update({"norm.weight": t(dim), "norm.bias": t(dim)})
    return state


@pytest.fixture(scope="module")
def sam2_state():
    """A random SAM 2.1 tiny state (built at the released 1024-px size)."""
    return {k: v.clone() for k, v in build_sam2_model("tiny", seed=3).state_dict().items()}


# ------------------------------------------------------------------ SAM 2.1

def test_sam2_pt_with_model_key_loads_strictly(tmp_path, sam2_state):
    path = tmp_path / "sam2.1_hiera_tiny.pt"
    torch.save({"model": sam2_state}, path)
    backend = create_backend("sam2", sam2_checkpoint=path, **TEST_SIZE)
    loaded = backend.sam.model.state_dict()
    assert set(loaded) == set(sam2_state)
    key = "image_encoder.trunk.blocks.3.attn.qkv.weight"
    torch.testing.assert_close(loaded[key], sam2_state[key], rtol=0, atol=0)
    torch.testing.assert_close(loaded["no_mem_embed"], sam2_state["no_mem_embed"], rtol=0, atol=0)
    # and the loaded weights are what encodes: a random model differs
    random_model = build_sam2_model("tiny", image_size=256, seed=4)
    assert not torch.equal(random_model.state_dict()[key], loaded[key])
    assert backend.checkpoints["sam2"] == path


def test_sam2_bare_state_dict_is_accepted(tmp_path, sam2_state):
    path = tmp_path / "bare.pth"
    torch.save(sam2_state, path)
    model = build_sam2_model("tiny", image_size=256, checkpoint=path)
    key = "sam_mask_decoder.iou_prediction_head.layers.0.weight"
    torch.testing.assert_close(model.state_dict()[key], sam2_state[key], rtol=0, atol=0)


def test_sam2_missing_extra_or_wrong_size_keys_are_refused(tmp_path, sam2_state):
    missing = dict(sam2_state)
    missing.pop("sam_mask_decoder.iou_token.weight")
    path = tmp_path / "missing.pt"
    torch.save({"model": missing}, path)
    with pytest.raises(WeightsError, match=r"missing\.pt.*1 missing keys.*sam_mask_decoder\.iou_token\.weight"):
        build_sam2_model("tiny", image_size=256, checkpoint=path)
    extra = dict(sam2_state, bogus=torch.zeros(1))
    path = tmp_path / "extra.pt"
    torch.save({"model": extra}, path)
    with pytest.raises(WeightsError, match=r"extra\.pt.*unexpected keys.*bogus"):
        build_sam2_model("tiny", image_size=256, checkpoint=path)
    path = tmp_path / "tiny-as-small.pt"
    torch.save({"model": sam2_state}, path)
    with pytest.raises(WeightsError, match=r"tiny-as-small\.pt.*--sam2-size"):
        build_sam2_model("small", image_size=256, checkpoint=path)


def test_truncated_and_garbage_files_fail_naming_the_file(tmp_path, sam2_state):
    whole = tmp_path / "whole.pt"
    torch.save({"model": sam2_state}, whole)
    data = whole.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(WeightsError, match=r"cannot read checkpoint .*truncated\.pt \(corrupt, truncated"):
        create_backend("sam2", sam2_checkpoint=truncated, **TEST_SIZE)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(np.random.default_rng(0).bytes(4096))
    with pytest.raises(WeightsError, match=r"garbage\.pt"):
        build_sam2_model("tiny", image_size=256, checkpoint=garbage)
    with pytest.raises(WeightsError, match=r"does not exist: .*nowhere\.pt"):
        create_backend("sam2", sam2_checkpoint=tmp_path / "nowhere.pt", **TEST_SIZE)


# ------------------------------------------------------------------ DINOv2

@pytest.mark.parametrize("registers", [False, True])
def test_dinov2_original_format_pth_loads_through_timm_converter(tmp_path, registers):
    arch = "vits14"
    state = original_dinov2_state(arch, registers, seed=5)
    path = tmp_path / ("sinder-like.pth" if not registers else "dinov2_vits14_reg4_pretrain.pth")
    torch.save(state, path)
    key = arch + ("-reg4" if registers else "")
    # at the checkpoint's own 37 x 37 grid every tensor is comparable
    net = build_dinov2(key, grid=37, checkpoint=path)
    loaded = net.state_dict()
    torch.testing.assert_close(loaded["blocks.7.attn.qkv.weight"], state["blocks.7.attn.qkv.weight"], rtol=0, atol=0)
    torch.testing.assert_close(loaded["blocks.2.ls1.gamma"], state["blocks.2.ls1.gamma"], rtol=0, atol=0)
    if registers:  # timm's no-embed-class layout: registers separate, class position folded in
        torch.testing.assert_close(loaded["reg_token"], state["register_tokens"], rtol=0, atol=0)
        torch.testing.assert_close(loaded["cls_token"], state["cls_token"] + state["pos_embed"][:, :1], rtol=0, atol=0)
        torch.testing.assert_close(loaded["pos_embed"], state["pos_embed"][:, 1:], rtol=0, atol=0)
    else:
        torch.testing.assert_close(loaded["pos_embed"], state["pos_embed"], rtol=0, atol=0)
    assert "mask_token" not in loaded
    # through the backend (what --dino-checkpoint does): position embedding resampled to the grid
    backend = create_backend("synpo", dino_model=key, dino_checkpoint=path, random_weights=True, **TEST_SIZE)
    vit = backend.dino.model
    assert tuple(vit.patch_embed.grid_size) == (16, 16)
    assert vit.pos_embed.shape[1] == 16 * 16 + (0 if registers else 1)
    torch.testing.assert_close(vit.state_dict()["blocks.11.mlp.fc2.weight"], state["blocks.11.mlp.fc2.weight"],
                               rtol=0, atol=0)


def test_dinov2_timm_safetensors_loads(tmp_path):
    from safetensors.torch import save_file

    source = build_dinov2("vits14-reg4", grid=37, seed=9)
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    path = tmp_path / "model.safetensors"
    save_file(state, str(path))
    net = build_dinov2("vits14-reg4", grid=37, checkpoint=path, seed=1)
    for k in ("reg_token", "blocks.5.attn.proj.weight", "norm.bias"):
        torch.testing.assert_close(net.state_dict()[k], state[k], rtol=0, atol=0)


def test_dinov2_wrong_variant_or_broken_file_is_refused(tmp_path):
    path = tmp_path / "vits.pth"
    torch.save(original_dinov2_state("vits14", registers=False), path)
    with pytest.raises(WeightsError, match=r"vits\.pth.*--dino-model"):
        build_dinov2("vitb14", grid=16, checkpoint=path)
    with pytest.raises(WeightsError, match=r"vits\.pth.*0 register tokens.*has 4.*--dino-model"):
        build_dinov2("vits14-reg4", grid=16, checkpoint=path)
    broken = tmp_path / "model.safetensors"
    broken.write_bytes(b"\x00" * 100)
    with pytest.raises(WeightsError, match=r"cannot read checkpoint .*model\.safetensors"):
        build_dinov2("vits14", grid=16, checkpoint=broken)
    data = path.read_bytes()
    cut = tmp_path / "cut.pth"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match=r"cut\.pth \(corrupt, truncated"):
        build_dinov2("vits14", grid=16, checkpoint=cut)


@pytest.mark.parametrize("key", [k for k in sorted(DINO_MODELS) if k != "sinder"])
def test_original_layout_of_every_variant_maps_onto_timm(key):
    """Key and shape compatibility for S/B/L/g (SwiGLU w12/w3 for g), on the meta device.

    Loading a 4.5 GB ViT-g file would not fit a unit test; the conversion and the
    strict key/shape check are the same function the file loader calls.
    """
    spec = dino_spec(key)
    arch = key.split("-")[0]
    net = build_dinov2(key, grid=64, device=torch.device("meta"))
    state = original_dinov2_state(arch, registers="reg4" in spec.timm_name, meta=True)
    load_dinov2_state(net, state, f"original {arch}")  # raises on any key or shape mismatch
    assert net.pos_embed.shape[1] == 64 * 64 + (0 if "reg4" in spec.timm_name else 1)
