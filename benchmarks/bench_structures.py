"""Benchmark: 8 structures in one run against 1, per mode (wall time, peak memory).

Not a test: it prints figures and writes them as JSON. Colin27 + AAL, the 8 deep grey
structures all drawn on one axial slice (thalamus, caudate, putamen, pallidum, left and
right; slice 74 holds all eight), the lite backend with its stop signal (auto-stop on,
the preset's defaults), the query slices 64..84. Each configuration runs in a fresh
process (one torch thread, the model loaded and warmed up before the clock starts), so
peak memory (RSS) is that configuration's alone; it is reported above the baseline
after the model and the volumes are loaded.

    python benchmarks/bench_structures.py                      # every mode
    python benchmarks/bench_structures.py --modes registration --singles 3

The 8-vs-1 ratio is the time of one run segmenting the eight structures divided by the
time of a one-structure run (the left thalamus: it spans the whole query range, so both
runs encode the same slices; ``--singles`` adds more of the eight, large to small). The
runs of a mode alternate (1, 8, 1, 8, ...: ``--repeats``) and the fastest of each is
kept, so a busy machine slows both alike; CPU seconds (this process's, all threads) are
reported beside wall seconds as the figure a shared machine disturbs least. The target
of issue 14: at most 1.5 in the registration mode.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T1 = "/usr/share/mricron/templates/ch2.nii.gz"
ATLAS = "/usr/share/mricron/templates/aal.nii.gz"
#: AAL labels, in the order one-structure runs are timed (large, medium, small first)
STRUCTURES = {"Thalamus_L": 77, "Putamen_R": 74, "Pallidum_L": 75, "Caudate_L": 71, "Thalamus_R": 78,
              "Putamen_L": 73, "Pallidum_R": 76, "Caudate_R": 72}
SUPPORT = 74
QUERY = range(64, 85)
MODES = ("registration", "slices", "propagate")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(mode: str, labels: list) -> dict:
    """One configuration, in this process: returns seconds and peak RSS above baseline."""
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)
    from SynPoLib import create_backend, preset
    from SynPoLib.volume import segment_structures, structures_from_labelmap

    vol = sitk.GetArrayFromImage(sitk.ReadImage(T1)).astype(np.float32)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(ATLAS))
    backend = create_backend("lite")
    backend.encode([np.zeros((256, 256, 3), np.uint8)])  # warm-up: first-call costs are not the run's
    config = preset("lite").updated(**{"propagation.mode": mode})
    structures = structures_from_labelmap(vol, lab, [SUPPORT], labels=labels, spacing=(1.0, 1.0, 1.0))
    base = _rss_mib()
    encoded = backend.encoder_calls.counts.get("sam", 0)
    t, cpu = time.perf_counter(), time.process_time()
    result = segment_structures(backend, vol, structures, config=config, slices=QUERY)
    seconds, cpu = time.perf_counter() - t, time.process_time() - cpu
    segmented = sum(1 for r in result.results.values() for rec in r.records if np.isfinite(rec.score))
    return {"mode": mode, "labels": labels, "seconds": seconds, "cpu_seconds": cpu,
            "peak_mib_above_base": _rss_mib() - base,
            "encoded_slices": backend.encoder_calls.counts.get("sam", 0) - encoded,
            "segmented_slices": segmented, "given_up_pixels": sum(result.given_up.values())}


def run_child(mode: str, labels: list) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", mode, *map(str, labels)], capture_output=True,
                         text=True, check=True, env=env)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--singles", type=int, default=1,
                   help="one-structure runs timed per mode (of the 8, the left thalamus first; 8: every one)")
    p.add_argument("--repeats", type=int, default=2, help="alternating repetitions; the fastest run counts")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "structures.json"))
    p.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], [int(v) for v in args.child[1:]])))
        return
    rows = []
    eight = list(STRUCTURES.values())
    singles = eight[:max(args.singles, 1)]
    for mode in args.modes:
        runs: dict = {}
        for _ in range(args.repeats):  # alternate, so load disturbs both sides alike
            for key, labels in [("1", [singles[0]]), ("8", eight)] + [(f"1:{l}", [l]) for l in singles[1:]]:
                runs.setdefault(key, []).append(run_child(mode, labels))
        best = {key: min(v, key=lambda r: r["seconds"]) for key, v in runs.items()}
        cpu = {key: min(r["cpu_seconds"] for r in v) for key, v in runs.items()}
        one, together = best["1"], best["8"]
        row = {"mode": mode, "runs": runs, "ratio_8_vs_1": together["seconds"] / one["seconds"],
               "cpu_ratio_8_vs_1": cpu["8"] / cpu["1"],
               "ratio_8_vs_8_apart": together["seconds"] / sum(best[k]["seconds"] for k in best if k != "8")
               if len(best) == 9 else None,
               "peak_mib_8": together["peak_mib_above_base"], "peak_mib_1": one["peak_mib_above_base"]}
        rows.append(row)
        print(f"{mode}: 8 structures {together['seconds']:.1f} s wall / {cpu['8']:.1f} s CPU "
              f"({together['encoded_slices']} slices encoded, {together['segmented_slices']} structure-slices); "
              f"1 structure {one['seconds']:.1f} s / {cpu['1']:.1f} s ({one['encoded_slices']} encoded): ratio "
              f"{row['ratio_8_vs_1']:.2f} wall, {row['cpu_ratio_8_vs_1']:.2f} CPU; peak memory above the loaded "
              f"model {row['peak_mib_8']:.0f} MiB vs {row['peak_mib_1']:.0f} MiB"
              + "".join(f"; {k}: {best[k]['seconds']:.1f} s" for k in best if k.startswith("1:")), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(rows, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
