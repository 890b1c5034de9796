#!/usr/bin/env python
"""Peak memory of the video mode on a short and a long synthetic volume.

Each measurement runs in a fresh process (peak RSS is per process): SAM 2.1 (random
weights: memory does not depend on their values) is built and warmed up on a 3-slice
volume, then the video mode segments an N-slice volume from a middle support. It
reports the process's peak RSS and how much the run added to it, its current RSS
after 16 slices and at the end, and the largest size of sam2's inference state
(tensor bytes, exact), for:

- ``windowed``: the default (tracking outputs kept only as far back as SAM 2 reads);
- ``keep-all``: ``VideoConfig(memory_window=10**6)``, i.e. every frame's output kept,
  as sam2's own propagation does;
- ``sam2 init_state``: what sam2's stock loader holds before tracking even starts for
  the same N frames (a JPEG folder read into one float tensor at the model's size),
  which the in-memory frames avoid.

Examples::

    python benchmarks/bench_video_memory.py                          # 16 vs 256 slices, 256 px
    python benchmarks/bench_video_memory.py --image-size 512 --slices 16 128

This is a measurement script, not a test (Testing/volume/test_video.py asserts the bound).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def _rss_mib() -> float:
    """Current resident set size (Linux)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def _watch_state(predictor, sizes: list) -> None:
    """Record the tensor bytes of sam2's inference state at every tracked frame."""
    from SynPoLib.volume.video import tracking_state_bytes

    original = predictor.propagate_in_video

    def propagate(state, *args, **kwargs):
        for item in original(state, *args, **kwargs):
            sizes.append(tracking_state_bytes(state))
            yield item

    predictor.propagate_in_video = propagate


def _volume(n: int):
    import numpy as np

    zz, yy, xx = np.mgrid[0:n, 0:64, 0:64]
    mask = ((zz - (n - 1) / 2) / (0.45 * n)) ** 2 + ((yy - 32) / 14.0) ** 2 + ((xx - 28) / 18.0) ** 2 < 1
    vol = (mask * 120 + np.random.default_rng(0).normal(60, 10, mask.shape)).astype(np.float32)
    return vol, mask


def child_video(n: int, image_size: int, keep_all: bool) -> dict:
    import torch

    torch.set_num_threads(1)
    from SynPoLib import Support
    from SynPoLib.backends import create_backend
    from SynPoLib.volume.video import VideoConfig, segment_volume_video

    backend = create_backend("sam2", sam2_size="tiny", sam2_image_size=image_size, random_weights=True,
                             device="cpu")
    video = VideoConfig(memory_window=10 ** 6) if keep_all else VideoConfig()
    warm, warm_mask = _volume(3)
    segment_volume_video(backend, warm, Support(volume=warm, mask=warm_mask, slices=[1], axis=0), video=video)
    from SynPoLib.backends.sam2_video import video_predictor

    sizes: list = []
    _watch_state(video_predictor(backend), sizes)
    before = _peak_mib()
    vol, mask = _volume(n)
    rss = []
    start = time.perf_counter()
    result = segment_volume_video(backend, vol, Support(volume=vol, mask=mask, slices=[n // 2], axis=0), video=video,
                                  progress=lambda event: rss.append(_rss_mib()))
    seconds = time.perf_counter() - start
    assert len(result.records) == n
    return {"peak_mib": _peak_mib(), "added_mib": _peak_mib() - before, "s_per_slice": seconds / n,
            "state_mib": max(sizes) / 2 ** 20, "rss_early": rss[min(16, n - 1)], "rss_end": rss[-1]}


def child_stock(n: int, image_size: int) -> dict:
    import numpy as np
    import torch
    from PIL import Image

    torch.set_num_threads(1)
    from SynPoLib.backends.sam2_video import build_video_predictor

    predictor = build_video_predictor("tiny", image_size)
    with tempfile.TemporaryDirectory() as folder:
        rng = np.random.default_rng(0)
        for i in range(n):
            Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(f"{folder}/{i}.jpg")
        warm = tempfile.mkdtemp()
        Image.fromarray(np.zeros((256, 256, 3), np.uint8)).save(f"{warm}/0.jpg")
        predictor.init_state(warm, offload_video_to_cpu=True)
        before = _peak_mib()
        state = predictor.init_state(folder, offload_video_to_cpu=True)
        frames_mib = state["images"].numel() * state["images"].element_size() / 2 ** 20
    return {"peak_mib": _peak_mib(), "added_mib": _peak_mib() - before, "frames_mib": frames_mib}


def _run_child(args: list) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", type=int, nargs="+", default=[16, 256])
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, n, size = args.child[0], int(args.child[1]), int(args.child[2])
        result = child_stock(n, size) if kind == "stock" else child_video(n, size, kind == "keep-all")
        print(json.dumps(result))
        return
    print(f"SAM 2.1 tiny, random weights, {args.image_size} px, CPU, 1 thread; middle support; "
          "peak RSS of a fresh process, and what the N-slice run added to it")
    print("| N slices | mode | peak RSS (MiB) | added by the run (MiB) | RSS at slice 16 -> at the end (MiB) "
          "| sam2 tracking state, max (MiB) | s / slice |")
    print("|---|---|---|---|---|---|---|")
    for n in args.slices:
        for kind in ("windowed", "keep-all", "stock"):
            r = _run_child([kind, str(n), str(args.image_size)])
            label = {"windowed": "video mode (windowed)", "keep-all": "video mode, every output kept",
                     "stock": f"sam2 init_state only (frames: {r.get('frames_mib', 0):.0f} MiB)"}[kind]
            if kind == "stock":
                extra = "- | - | -"
            else:
                extra = (f"{r['rss_early']:.0f} -> {r['rss_end']:.0f} | {r['state_mib']:.2f} | "
                         f"{r['s_per_slice']:.2f}")
            print(f"| {n} | {label} | {r['peak_mib']:.0f} | {r['added_mib']:.1f} | {extra} |", flush=True)


if __name__ == "__main__":
    main()
