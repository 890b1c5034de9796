"""Benchmark of the registration mode (SynPoLib.volume.registration) on real data.

Not a test: it measures and prints one Markdown table (``--out`` also writes it).

    python benchmarks/bench_registration.py [--out benchmarks/results/bench_registration.md]

The left thalamus of Colin27 (AAL 77) labelled on its middle axial slice, the mode as
the lite preset runs it (auto-stop off, so every slice of the range is processed), the
real LiteMedSAM for the stop signal's encoder pass, one CPU thread. Two sizes, each in
a fresh process:

- N: the structure's slab (its slices and 2 more at each end);
- 5N: the same slab resampled to 5 x as many, 5 x thinner slices (same anatomy).

Per slice: the time split between registration (Demons + warp), refinement (random
walker) and the encoder pass of the stop signal (+ the cosine). Memory: the peak RSS
growth above the baseline measured after loading the model and a warm-up slice, and
the peak of numpy / Python allocations (tracemalloc) minus the output mask.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T1 = "/usr/share/mricron/templates/ch2.nii.gz"
ATLAS = "/usr/share/mricron/templates/aal.nii.gz"
THALAMUS_L = 77
FACTORS = (1, 5)


def child(factor: int) -> dict:
    """One size in this (fresh) process."""
    import SimpleITK as sitk
    import torch
    from scipy import ndimage

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    from SynPoLib import Support, create_backend, preset, segment_volume

    vol = sitk.GetArrayFromImage(sitk.ReadImage(T1)).astype(np.float32)
    mask = sitk.GetArrayFromImage(sitk.ReadImage(ATLAS)) == THALAMUS_L
    ks = np.flatnonzero(mask.any(axis=(1, 2)))
    lo, hi = int(ks[0]) - 2, int(ks[-1]) + 2
    slab, labels = vol[lo:hi + 1], mask[lo:hi + 1]
    spacing = (1.0, 1.0, 1.0)
    if factor > 1:
        slab = ndimage.zoom(slab, (factor, 1, 1), order=1).astype(np.float32)
        labels = ndimage.zoom(labels.astype(np.float32), (factor, 1, 1), order=1) > 0.5
        spacing = (1.0 / factor, 1.0, 1.0)
    middle = slab.shape[0] // 2
    config = preset("lite").updated(**{"quality.auto_stop": False})
    backend = create_backend("lite")
    support = Support(slab, labels, [middle], spacing=spacing)
    segment_volume(backend, slab, support, config=config, slices=[middle + 1])  # warm-up: load, first calls
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    tracemalloc.start()
    t = time.perf_counter()
    result = segment_volume(backend, slab, support, config=config)
    wall = time.perf_counter() - t
    _, traced = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    recs = [r for r in result.records if r.support_index >= 0]
    keys = ("registration", "refinement", "encode", "synpo")
    split = {k: float(np.mean([r.timings.get(k, 0.0) for r in recs])) for k in keys}
    return {"factor": factor, "slices": len(recs), "wall_s": wall, "per_slice": split,
            "baseline_mib": baseline, "peak_mib": peak, "growth_mib": peak - baseline,
            "traced_mib": traced / 2 ** 20, "output_mib": result.mask.nbytes / 2 ** 20}


def table(rows) -> str:
    lines = ["| slices | registration s | refinement s | encoder (stop signal) s | cosine ms | "
             "peak RSS growth above the post-load baseline MiB | traced peak minus output mask MiB | output mask MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        s = r["per_slice"]
        lines.append(f"| {r['slices']} (x{r['factor']}) | {s['registration']:.3f} | {s['refinement']:.3f} | "
                     f"{s['encode']:.2f} | {1000 * s['synpo']:.1f} | {r['growth_mib']:.1f} | "
                     f"{r['traced_mib'] - r['output_mib']:.1f} | {r['output_mib']:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, help="also write the table here (Markdown)")
    ap.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.child)))
        return 0
    rows = []
    for factor in FACTORS:
        done = subprocess.run([sys.executable, __file__, "--child", str(factor)], capture_output=True, text=True,
                              check=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(f"x{factor}: {rows[-1]}", flush=True)
    text = ("# Registration mode: time split and memory (benchmarks/bench_registration.py)\n\n"
            "Colin27 left thalamus slab, lite preset (registration mode), auto-stop off, one CPU thread; "
            "per-slice means; each size in a fresh process.\n\n" + table(rows) + "\n")
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
