"""Device choice, precision and the out-of-memory back-off (SynPoLib.backends.device)."""

from __future__ import annotations

import pytest
import torch

from SynPoLib.backends.device import (AUTO_GPU_BATCH, AdaptiveBatcher, DeviceError, DeviceMemoryError, autocast_dtype,
                             is_out_of_memory, resolve_device, suggested_batch_size)


def test_auto_prefers_cuda_then_mps_then_cpu():
    dev = resolve_device(None)
    if torch.cuda.is_available():
        assert dev.type == "cuda"
    elif torch.backends.mps.is_available():
        assert dev.type == "mps"
    else:
        assert dev.type == "cpu"
    assert resolve_device("auto") == dev
    assert resolve_device("cpu") == torch.device("cpu")


def test_requested_device_that_is_absent_is_an_error_not_a_fallback():
    if torch.cuda.is_available():
        with pytest.raises(DeviceError, match="only"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")
    else:
        with pytest.raises(DeviceError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(DeviceError, match="unknown device"):
        resolve_device("tpu9")


def test_precision_per_device():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None  # fp32 on CPU
    assert autocast_dtype(cpu, "bf16") is torch.bfloat16
    assert autocast_dtype(cpu, "fp32") is None
    # "auto": bfloat16 where the GPU has it, float32 (not float16) where it does not
    cuda = torch.device("cuda")
    assert autocast_dtype(cuda, "auto", bf16_supported=True) is torch.bfloat16
    assert autocast_dtype(cuda, "auto", bf16_supported=False) is None
    assert autocast_dtype(torch.device("mps"), "auto") is None
    assert autocast_dtype(cuda, "fp16", bf16_supported=False) is torch.float16  # on request only
    if torch.cuda.is_available():  # the device's own answer decides
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
        assert autocast_dtype(cuda) is expected
    with pytest.raises(ValueError, match="precision"):
        autocast_dtype(cpu, "int8")


def test_batch_size_suggestion():
    assert suggested_batch_size(torch.device("cpu")) == 1
    assert suggested_batch_size(torch.device("cuda")) == AUTO_GPU_BATCH
    assert suggested_batch_size(torch.device("cpu"), 5) == 5
    with pytest.raises(ValueError):
        suggested_batch_size(torch.device("cpu"), 0)


def test_out_of_memory_is_recognised():
    assert is_out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory (MPS allocated: 1 GB)"))
    assert is_out_of_memory(RuntimeError("[enforce fail] DefaultCPUAllocator: can't allocate memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


def test_batcher_halves_on_oom_keeps_order_and_remembers_the_size():
    calls = []

    def fn(chunk):
        calls.append(len(chunk))
        if len(chunk) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return [x * 10 for x in chunk]

    batcher = AdaptiveBatcher(torch.device("cpu"), max_batch=16)
    out = batcher.run(list(range(11)), fn)
    assert out == [x * 10 for x in range(11)]
    assert calls[:3] == [11, 5, 2]  # 11 fails, 5 fails, 2 fits
    assert batcher.backoffs == 2 and batcher.size == 2
    calls.clear()
    assert batcher.run([1, 2, 3, 4], fn) == [10, 20, 30, 40]
    assert calls == [2, 2]  # the learnt size is kept for later calls


def test_batcher_gives_a_clear_error_when_one_item_does_not_fit():
    def fn(chunk):
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(DeviceMemoryError, match="one slice does not fit.*--backend lite"):
        AdaptiveBatcher(torch.device("cpu")).run([1, 2], fn)


def test_batcher_does_not_swallow_other_errors():
    def fn(chunk):
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        AdaptiveBatcher(torch.device("cpu")).run([1, 2], fn)
