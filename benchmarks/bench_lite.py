"""Benchmark of the lite backend on real data: time split, CMSM scaling, peak memory.

Not a test: it prints figures. Ratios are measured within one run, since this kind of
machine is noisy; absolute times only describe the machine they came from.

    python benchmarks/bench_lite.py            # all three parts
    python benchmarks/bench_lite.py --part split

1. Per query slice: encoder, decoder and SynPo's own work (CMSM + PSM + NRM + mapping
   back), on Colin27 with the thalamus as support. Target: own work <= 10 %.
2. CMSM time with 4096 support foreground tokens against 16. Target: within 1.5x.
3. Memory (RSS, each range in a fresh process) for a short and a 5x longer slice range
   of the same volume. The figure that catches a leak is the growth above the baseline
   after the volume and the model are loaded, per slice: MiB per 100 slices between the
   two ranges (target: ~0; the output mask is the only thing that should grow, and it
   is allocated up front). The peak ratio long / short (target <= 1.2) is printed
   beside it, but the model's own footprint hides a leak of a few MiB in it.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T1 = "/usr/share/mricron/templates/ch2.nii.gz"
ATLAS = "/usr/share/mricron/templates/aal.nii.gz"
THALAMUS_L = 77


def _slices_config():
    """The lite preset in the paper's mode (this benchmark measures SynPo's modules;
    the registration mode has benchmarks/bench_registration.py)."""
    from SynPoLib import preset
    from SynPoLib.config import Mode

    return preset("lite").updated(**{"propagation.mode": Mode.SLICES})


def load():
    import SimpleITK as sitk

    vol = sitk.GetArrayFromImage(sitk.ReadImage(T1)).astype(np.float32)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(ATLAS))
    return vol, lab == THALAMUS_L


def part_split(n_slices: int) -> dict:
    from SynPoLib import Support, create_backend, segment_volume

    SLICES = _slices_config()
    vol, mask = load()
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    middle = int(slices[len(slices) // 2])
    query = [int(s) for s in slices if s != middle][:n_slices]
    backend = create_backend("lite")
    segment_volume(backend, vol, Support(vol, mask, [middle]), slices=query[:1], config=SLICES)  # warm-up
    t = time.perf_counter()
    result = segment_volume(backend, vol, Support(vol, mask, [middle]), slices=query, config=SLICES)
    wall = time.perf_counter() - t
    recs = [r for r in result.records if r.support_index >= 0]
    split = {k: float(np.mean([r.timings[k] for r in recs])) for k in ("encode", "decode", "synpo")}
    total = sum(split.values())
    print(f"\n[1] per-slice time split, lite backend, {len(recs)} thalamus slices (wall {wall:.1f} s)")
    for k, v in split.items():
        print(f"    {k:7s} {1000 * v:8.1f} ms  {100 * v / total:5.1f} %")
    print(f"    total   {1000 * total:8.1f} ms   SynPo's own work {100 * split['synpo'] / total:.1f} % "
          f"(target <= 10 %)")
    return {"slices": len(recs), "ms": {k: 1000 * v for k, v in split.items()},
            "own_share": split["synpo"] / total}


def part_cmsm(repeats: int) -> dict:
    from SynPoLib.config import SynergyConfig
    from SynPoLib.method.synergy import SAM, prepare_support, query_synergy

    rng = np.random.default_rng(0)
    grid = 96  # 9216 cells: room for 4096 foreground tokens and a background
    feats = rng.standard_normal((256, grid, grid)).astype(np.float32)
    query = rng.standard_normal((256, grid, grid)).astype(np.float32)
    cfg = SynergyConfig()
    roi = 4 * grid

    def mask_with(n_tokens: int) -> np.ndarray:
        side = int(round(np.sqrt(n_tokens)))
        m = np.zeros((roi, roi), bool)
        m[: side * 4, : side * 4] = True  # side x side feature cells
        return m

    times = {}
    for n in (16, 4096):
        m = mask_with(n)
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            sup = prepare_support({SAM: feats}, m, cfg)
            query_synergy({SAM: query}, sup, cfg, roi)
            best = min(best, time.perf_counter() - t)
        assert sup.prototypes[SAM].n_foreground == n
        times[n] = best
    ratio = times[4096] / times[16]
    print(f"\n[2] CMSM (support + query maps, {grid}x{grid} grid, C=256), best of {repeats}:")
    print(f"    16 tokens {1000 * times[16]:.1f} ms, 4096 tokens {1000 * times[4096]:.1f} ms, "
          f"ratio {ratio:.2f} (target <= 1.5)")
    return {"ms_16": 1000 * times[16], "ms_4096": 1000 * times[4096], "ratio": ratio}


def _resident_mib() -> float:
    """The process's resident memory now (Linux /proc), else its peak so far."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * resource.getpagesize() / 2 ** 20
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _memory_child(n_slices: int) -> None:
    """Run one range in this (fresh) process and print its memory figures in MiB as JSON.

    The baseline is taken after the volume, the model and one warm-up slice (the
    encoder's first call allocates its work buffers once), so what follows is what
    the run itself holds on to.
    """
    import gc

    from SynPoLib import Support, create_backend, segment_volume

    vol, mask = load()
    backend = create_backend("lite")
    slices = np.flatnonzero(mask.any(axis=(1, 2)))
    middle = int(slices[len(slices) // 2])
    segment_volume(backend, vol, Support(vol, mask, [middle]), slices=[middle + 1])  # warm-up
    gc.collect()
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    base_now = _resident_mib()
    lo = max(0, middle - n_slices // 2)
    query = [s for s in range(lo, lo + n_slices + 1) if s != middle][:n_slices]
    result = segment_volume(backend, vol, Support(vol, mask, [middle]), slices=query, config=_slices_config())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gc.collect()
    now = _resident_mib()
    del result
    print(json.dumps({"slices": len(query), "baseline_mib": base, "peak_mib": peak,
                      "resident_before_mib": base_now, "resident_after_mib": now}))


def part_memory(short: int) -> dict:
    out = {}
    for n in (short, 5 * short):
        done = subprocess.run([sys.executable, __file__, "--memory-child", str(n)], capture_output=True,
                              text=True, check=True)
        out[n] = json.loads(done.stdout.strip().splitlines()[-1])
    ratio = out[5 * short]["peak_mib"] / out[short]["peak_mib"]
    growth = {n: v["peak_mib"] - v["baseline_mib"] for n, v in out.items()}
    held = {n: v["resident_after_mib"] - v["resident_before_mib"] for n, v in out.items()}
    n_short, n_long = out[short]["slices"], out[5 * short]["slices"]
    per_100 = 100.0 * (growth[5 * short] - growth[short]) / max(n_long - n_short, 1)
    held_per_100 = 100.0 * (held[5 * short] - held[short]) / max(n_long - n_short, 1)
    print("\n[3] memory (RSS, fresh process each; baseline = after volume, model and one warm-up slice):")
    for n, v in out.items():
        print(f"    {v['slices']:3d} slices: peak {v['peak_mib']:.0f} MiB, {growth[n]:+.1f} MiB above the baseline "
              f"{v['baseline_mib']:.0f} MiB; resident after the run {held[n]:+.1f} MiB")
    print(f"    growth per 100 slices: peak {per_100:+.1f} MiB, resident {held_per_100:+.1f} MiB (a leak shows here; "
          f"the output mask is allocated up front)")
    print(f"    peak long / short = {ratio:.3f} (target <= 1.2)")
    return {"short": out[short], "long": out[5 * short], "ratio": ratio, "peak_growth_mib": growth,
            "peak_growth_mib_per_100_slices": per_100, "resident_growth_mib_per_100_slices": held_per_100}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=("split", "cmsm", "memory", "all"), default="all")
    p.add_argument("--slices", type=int, default=10, help="query slices for the split, and the short range")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.memory_child:
        _memory_child(args.memory_child)
        return
    figures = {}
    if args.part in ("split", "all"):
        figures["split"] = part_split(args.slices)
    if args.part in ("cmsm", "all"):
        figures["cmsm"] = part_cmsm(args.repeats)
    if args.part in ("memory", "all"):
        figures["memory"] = part_memory(args.slices)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1))


if __name__ == "__main__":
    main()
