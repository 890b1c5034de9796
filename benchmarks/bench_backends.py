#!/usr/bin/env python
"""Speed and memory of the SAM 2.1 (+ DINOv2) backends on this machine's device.

For each backend configuration (SAM 2.1 size + DINOv2 model, or SAM 2.1 alone), in a
fresh process so peak-memory numbers do not mix:

- per-slice time split of a real SynPo run (``segment_volume`` on Colin27, or a
  synthetic volume without it): SAM 2.1 encoder, DINOv2 encoder, mask decoder, and
  SynPo's own work (confidence maps, point selection, refine bookkeeping);
- ms per slice and slices per second of that run;
- peak memory (CUDA: the allocator's peak; CPU/MPS: the process's peak RSS);
- the speed-up of batched over one-by-one encoding, both measured in the same run.

Weights are random (speed does not depend on their values), so nothing is
downloaded. Examples::

    python benchmarks/bench_backends.py                       # tiny/small, 1024 px, current device
    python benchmarks/bench_backends.py --image-size 512      # smaller inputs for a slow CPU
    python benchmarks/bench_backends.py --paper               # every size + the paper's large/ViT-g
    python benchmarks/bench_backends.py --configs large:sinder --device cuda --slices 64 --batch 16

This is a measurement script, not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_CONFIGS = ["tiny:vits14-reg4", "small:vits14-reg4", "tiny:none"]
PAPER_CONFIGS = ["tiny:vits14-reg4", "small:vitb14-reg4", "base_plus:vitl14-reg4", "large:vitl14-reg4",
                 "large:sinder", "large:none"]


def _volume(n_slices: int):
    """Colin27 + AAL left thalamus (real MRI) when installed, else a synthetic blob volume."""
    import numpy as np

    t1, atlas = Path("/usr/share/mricron/templates/ch2.nii.gz"), Path("/usr/share/mricron/templates/aal.nii.gz")
    if t1.is_file() and atlas.is_file():
        import SimpleITK as sitk

        vol = sitk.GetArrayFromImage(sitk.ReadImage(str(t1))).astype(np.float32)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(atlas))) == 77
        ks = np.flatnonzero(mask.any(axis=(1, 2)))
        source = "Colin27 T1, AAL left thalamus"
    else:
        zz, yy, xx = np.mgrid[0:64, 0:160, 0:160]
        mask = ((zz - 32) / 20.0) ** 2 + ((yy - 80) / 30.0) ** 2 + ((xx - 70) / 25.0) ** 2 < 1
        vol = (mask * 100 + np.random.default_rng(0).normal(50, 10, mask.shape)).astype(np.float32)
        ks = np.flatnonzero(mask.any(axis=(1, 2)))
        source = "synthetic ellipsoid"
    mid = int(ks[len(ks) // 2])
    others = [int(k) for k in ks if k != mid]
    order = sorted(others, key=lambda k: abs(k - mid))[:n_slices]
    return vol, mask, mid, sorted(order), source


def _peak_memory(device) -> float:
    import torch

    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB -> MiB


def run_one(config: str, args) -> dict:
    """Measure one configuration in this process."""
    import numpy as np
    import torch

    from SynPoLib import Support, segment_volume
    from SynPoLib.backends.sam2_dinov2 import SAM2DINOv2Backend, estimate_gflop, measured_cpu_gflops

    sam, _, dino = config.partition(":")
    dino = None if dino in ("", "none") else dino
    backend = SAM2DINOv2Backend(sam, dino, device=args.device, precision=args.precision,
                                sam2_image_size=args.image_size, random_weights=True)
    dev = backend._device
    vol, mask, mid, query, source = _volume(args.slices)
    support = Support(volume=vol, mask=mask, slices=[mid], axis=0)

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (256, 256, 3), dtype=np.uint8) for _ in range(args.slices)]
    backend.batcher.max_batch = args.batch
    backend.batcher.size = args.batch
    # warm-up of both batch shapes: kernel selection, allocator growth, lazy inits
    backend.encode(images[:1])
    backend.encode(images[:args.batch])
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)

    def timed(fn):
        from SynPoLib.backends.device import synchronize

        synchronize(dev)
        start = time.perf_counter()
        fn()
        synchronize(dev)
        return time.perf_counter() - start

    one_runs, batched_runs = [], []
    for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
        one_runs.append(timed(lambda: [backend.encode([im]) for im in images]))
        batched_runs.append(timed(lambda: [backend.encode(images[i:i + args.batch])
                                           for i in range(0, len(images), args.batch)]))
    one, batched = min(one_runs), min(batched_runs)

    backend.stopwatch.reset()
    start = time.perf_counter()
    result = segment_volume(backend, vol, support, slices=query, batch_size=args.batch)
    wall = time.perf_counter() - start
    recs = [r for r in result.records if r.support_index >= 0]
    n = len(recs)
    sw = backend.stopwatch.seconds
    # the support slice is encoded once at the start of the run: charge it to the run
    out = {
        "config": config, "device": str(dev), "dtype": backend.describe().rsplit(", ", 1)[-1],
        "image_size": args.image_size, "grid": backend.grid, "slices": n, "batch": args.batch, "data": source,
        "ms_per_slice": 1000 * wall / n, "slices_per_s": n / wall,
        "sam2_encoder_ms": 1000 * sw.get("sam2_encoder", 0.0) / n,
        "dino_encoder_ms": 1000 * sw.get("dino_encoder", 0.0) / n,
        "decoder_ms": 1000 * sw.get("decoder", 0.0) / n,
        "synpo_ms": 1000 * sum(r.timings.get("synpo", 0.0) for r in recs) / n,
        "encode_one_by_one_ms": 1000 * one / len(images), "encode_batched_ms": 1000 * batched / len(images),
        "batched_speedup": one / batched,
        "peak_memory_mib": _peak_memory(dev),
        "gflop_per_slice": estimate_gflop(sam, dino, args.image_size),
    }
    if dev.type == "cpu":
        enc_s = (sw.get("sam2_encoder", 0.0) + sw.get("dino_encoder", 0.0)) / (n + 1)
        out["matmul_gflops"] = measured_cpu_gflops(1.0)
        out["encoder_gflops"] = out["gflop_per_slice"] / max(enc_s, 1e-9)
        out["cpu_efficiency"] = out["encoder_gflops"] / out["matmul_gflops"]
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                   help="comma-separated SAM2SIZE:DINO (DINO 'none' = SAM 2.1 alone); default: %(default)s")
    p.add_argument("--paper", action="store_true", help="every SAM 2.1 size and the paper's large + SINDER ViT-g")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, mps")
    p.add_argument("--precision", default="auto")
    p.add_argument("--image-size", type=int, default=1024, help="SAM 2.1 input side (DINOv2 grid follows); "
                                                                 "1024 = the paper's 64 x 64 grid")
    p.add_argument("--slices", type=int, default=8, help="query slices per run")
    p.add_argument("--batch", type=int, default=4, help="slices per batched encoder call")
    p.add_argument("--repeats", type=int, default=2, help="repeat the encoding comparisons, keep the best")
    p.add_argument("--json", help="also write the results as JSON here")
    p.add_argument("--one", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.one:
        print(json.dumps(run_one(args.one, args)))
        return 0
    configs = PAPER_CONFIGS if args.paper else [c.strip() for c in args.configs.split(",") if c.strip()]
    passthrough = ["--image-size", str(args.image_size), "--slices", str(args.slices), "--batch", str(args.batch),
                   "--repeats", str(args.repeats), "--precision", args.precision]
    if args.device:
        passthrough += ["--device", args.device]
    results = []
    for config in configs:
        started = time.perf_counter()
        proc = subprocess.run([sys.executable, __file__, "--one", config, *passthrough], capture_output=True,
                              text=True, env=dict(os.environ, PYTHONWARNINGS="ignore"))
        if proc.returncode != 0:
            print(f"{config}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        res["bench_seconds"] = time.perf_counter() - started
        results.append(res)
        print(f"{config}: done in {res['bench_seconds']:.0f} s", file=sys.stderr)

    if not results:
        return 1
    r0 = results[0]
    print(f"\ndevice {r0['device']} ({r0['dtype']}), SAM 2.1 input {r0['image_size']} px -> {r0['grid']}x{r0['grid']} "
          f"grid, {r0['slices']} query slices, batch {r0['batch']}, data: {r0['data']}")
    head = (f"{'config':<22}{'ms/slice':>9}{'slice/s':>8}{'sam2 enc':>9}{'dino enc':>9}{'decoder':>8}{'synpo':>7}"
            f"{'1-by-1':>8}{'batched':>8}{'speedup':>8}{'peak MiB':>9}")
    print(head)
    for r in results:
        print(f"{r['config']:<22}{r['ms_per_slice']:>9.0f}{r['slices_per_s']:>8.2f}{r['sam2_encoder_ms']:>9.0f}"
              f"{r['dino_encoder_ms']:>9.0f}{r['decoder_ms']:>8.0f}{r['synpo_ms']:>7.0f}"
              f"{r['encode_one_by_one_ms']:>8.0f}{r['encode_batched_ms']:>8.0f}{r['batched_speedup']:>7.2f}x"
              f"{r['peak_memory_mib']:>9.0f}")
    print("times in ms per slice; sam2/dino enc, decoder, synpo: the split of one segment_volume run; 1-by-1 / "
          "batched: encoding alone; speedup = 1-by-1 / batched, measured in the same run")
    if "cpu_efficiency" in r0:
        for r in results:
            print(f"{r['config']}: encoders reach {r['encoder_gflops']:.0f} GFLOP/s = {r['cpu_efficiency']:.2f} x "
                  f"this CPU's fp32 matmul speed ({r['matmul_gflops']:.0f} GFLOP/s)")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
