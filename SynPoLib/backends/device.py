"""Where the models run, in which precision, and how many slices go through at once.

- :func:`resolve_device`: CUDA, then Apple MPS, then CPU, unless the user names one.
- :func:`autocast_dtype` / :func:`autocast`: bfloat16 on GPUs that have it, full
  float32 everywhere else: on other GPUs (float16 is unmeasured with these models)
  and on the CPU (CPU autocast is slower than fp32 for these models and changes their
  numbers for nothing).
- :class:`AdaptiveBatcher`: runs encoder batches sized to the free accelerator memory,
  and halves the batch on an out-of-memory error instead of crashing; the size it
  settles on is kept for the next calls.

Nothing here changes process-wide torch settings (TF32, thread counts): SynPo runs
inside Slicer next to other code that owns those.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple, TypeVar

import torch

from ..errors import DeviceError, DeviceMemoryError

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

#: accepted ``precision`` values
PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: share of the free accelerator memory an encoder batch may plan to use [G]: the
#: rest absorbs the allocator's fragmentation and the decoder's own buffers
MEMORY_HEADROOM = 0.8

#: batch size the first encoder call on an accelerator tries before anything was
#: measured [G]; it is halved at once on an out-of-memory error
FIRST_GPU_BATCH = 8

#: query slices per driver batch when the user asks for "auto" on a GPU [G]; the
#: backend still splits them into memory-sized encoder batches
AUTO_GPU_BATCH = 16



def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def resolve_device(requested: Optional[str] = None) -> torch.device:
    """The device to run on: ``requested`` if usable, else CUDA > MPS > CPU.

    ``requested`` may be None or "auto", "cpu", "cuda", "cuda:N", "mps" (and "meta",
    for shape-only checks). A device this machine lacks is an error, never a silent
    fallback: the user asked for it for a reason.
    """
    text = (requested or "auto").strip().lower()
    if text == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(text)
    except RuntimeError:
        raise DeviceError(f"unknown device {requested!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {requested!r} requested but CUDA is not available here "
                              "(no NVIDIA GPU, or torch was installed without CUDA): use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"device {requested!r} requested but only {torch.cuda.device_count()} "
                              "CUDA device(s) exist")
    elif device.type == "mps" and not _mps_available():
        raise DeviceError(f"device {requested!r} requested but Apple MPS is not available here: use --device cpu")
    elif device.type not in ("cpu", "cuda", "mps", "meta"):
        raise DeviceError(f"unsupported device {requested!r}: use auto, cpu, cuda, cuda:N or mps")
    return device


def resolve_device_or_fallback(requested: Optional[str] = None) -> Tuple[torch.device, Optional[str]]:
    """As :func:`resolve_device`, but a device this machine lacks falls back to what
    "auto" picks, with the reason: for a saved choice (a Slicer scene saved on another
    computer), where failing would leave the user nothing to fix but the scene."""
    try:
        return resolve_device(requested), None
    except DeviceError as exc:
        return resolve_device("auto"), str(exc)


def autocast_dtype(device: torch.device, precision: str = "auto",
                   bf16_supported: Optional[bool] = None) -> Optional[torch.dtype]:
    """The autocast dtype for ``device`` (None: run in float32).

    "auto" is bfloat16 where the device supports it and float32 everywhere else: SAM 2.1
    and DINOv2 were released for bfloat16 / float32, and their float16 numbers have
    not been measured here (float16's range is narrower than bfloat16's: attention
    logits may overflow). ``bf16_supported`` overrides the device's own answer
    (``torch.cuda.is_bf16_supported``); Apple MPS counts as unsupported (its bfloat16
    depends on the macOS release). "fp16" stays available on request.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type not in ("cuda", "mps"):
        return None
    if bf16_supported is None:
        bf16_supported = device.type == "cuda" and bool(torch.cuda.is_bf16_supported())
    return torch.bfloat16 if bf16_supported else None


def autocast(device: torch.device, dtype: Optional[torch.dtype]):
    """``torch.autocast`` on ``device`` in ``dtype``, or nothing when dtype is None."""
    if dtype is None or device.type not in ("cuda", "mps", "cpu"):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def synchronize(device: torch.device) -> None:
    """Wait for queued kernels, so wall-clock timings mean what they say."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def free_memory(device: torch.device) -> Optional[int]:
    """Bytes an allocation could still get on ``device`` (None where unknown: CPU, MPS).

    Memory the caching allocator holds but does not use counts as free.
    """
    if device.type != "cuda":
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return int(free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))


def empty_cache(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (CUDA, MPS or CPU allocator)."""
    if isinstance(exc, torch.OutOfMemoryError):
        return True
    if isinstance(exc, RuntimeError):
        text = str(exc).lower()
        return ("out of memory" in text or "can't allocate memory" in text
                or "mps backend out of memory" in text)
    return False


def suggested_batch_size(device: torch.device, requested: Optional[int] = None) -> int:
    """Query slices per driver batch: the user's number, else 1 on CPU and more on GPUs.

    On a CPU the encoders already use every core for one slice, so batching buys
    little and delays the first result; on a GPU a batch fills the device.
    """
    if requested is not None:
        if int(requested) < 1:
            raise ValueError(f"batch size must be >= 1, got {requested}")
        return int(requested)
    return 1 if device.type in ("cpu", "meta") else AUTO_GPU_BATCH


@dataclass
class AdaptiveBatcher:
    """Runs ``fn`` over items in batches that fit the device, halving on OOM.

    On CUDA the peak memory of each successful batch is measured, and the next batch
    is sized to ``MEMORY_HEADROOM`` of the free memory at that per-item cost. On other
    devices the size stays at ``max_batch`` unless an allocation fails.
    """

    device: torch.device
    #: upper bound of one encoder batch (None: no bound beyond memory)
    max_batch: Optional[int] = None
    #: the batch size the next call starts with
    size: int = 0
    #: measured peak bytes per item (CUDA), 0 until measured
    bytes_per_item: float = 0.0
    #: number of out-of-memory back-offs so far
    backoffs: int = 0
    history: List[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        if self.size <= 0:
            first = FIRST_GPU_BATCH if self.device.type in ("cuda", "mps") else (self.max_batch or 1_000_000)
            self.size = min(first, self.max_batch or first)

    def _plan(self, remaining: int) -> int:
        n = min(self.size, remaining)
        if self.max_batch is not None:
            n = min(n, self.max_batch)
        return max(n, 1)

    def _learn(self, n: int, peak_bytes: int, base_bytes: int) -> None:
        if self.device.type != "cuda" or n <= 0:
            return
        per_item = max(peak_bytes - base_bytes, 1) / n
        self.bytes_per_item = max(self.bytes_per_item, per_item)
        free = free_memory(self.device)
        if free is None:
            return
        fits = int(free * MEMORY_HEADROOM / self.bytes_per_item)
        cap = self.max_batch or max(fits, 1)
        self.size = max(1, min(fits, cap))

    def run(self, items: Sequence[T], fn: Callable[[Sequence[T]], List[R]]) -> List[R]:
        """``fn`` on consecutive batches of ``items``; results in the items' order."""
        out: List[R] = []
        i = 0
        while i < len(items):
            n = self._plan(len(items) - i)
            chunk = items[i:i + n]
            base = 0
            if self.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(self.device)
                base = torch.cuda.memory_allocated(self.device)
            try:
                result = fn(chunk)
            except Exception as exc:  # noqa: BLE001 - only allocation failures are handled
                if not is_out_of_memory(exc):
                    raise
                empty_cache(self.device)
                if n == 1:
                    raise DeviceMemoryError(
                        f"one slice does not fit in the memory of {self.device}: use a smaller model "
                        "(--sam2-size, --dino-model), --device cpu, or --backend lite") from exc
                self.size = max(1, n // 2)
                self.backoffs += 1
                log.warning("out of memory with %d slices per batch on %s; retrying with %d", n,
                            self.device, self.size)
                continue
            if len(result) != len(chunk):
                raise RuntimeError(f"batch function returned {len(result)} results for {len(chunk)} items")
            out.extend(result)
            self.history.append(n)
            if self.device.type == "cuda":
                self._learn(n, torch.cuda.max_memory_allocated(self.device), base)
            i += n
        return out


class Stopwatch:
    """Accumulates seconds per named stage, synchronising the device around each."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.seconds: dict = {}
        self.counts: dict = {}

    @contextlib.contextmanager
    def __call__(self, name: str, n: int = 1):
        synchronize(self.device)
        start = time.perf_counter()
        try:
            yield
        finally:
            synchronize(self.device)
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self.counts[name] = self.counts.get(name, 0) + n

    def reset(self) -> None:
        self.seconds.clear()
        self.counts.clear()


__all__ = ["AUTO_GPU_BATCH", "AdaptiveBatcher", "DeviceError", "DeviceMemoryError", "PRECISIONS", "Stopwatch",
           "autocast", "autocast_dtype", "empty_cache", "free_memory", "is_out_of_memory", "resolve_device",
           "suggested_batch_size", "synchronize"]
