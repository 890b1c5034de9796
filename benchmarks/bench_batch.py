#!/usr/bin/env python
"""Throughput of ``synpo batch``: cases per minute with 1 and 2 workers, model load vs case.

A cohort of real volumes (crops of Colin27 and of nilearn's MNI152 T1 around the left
thalamus, ``--slices`` slices each, alternating) is segmented from one labelled Colin27
slice (AAL label 77) with the lite backend, once per engine configuration, each into a
fresh folder:

- ``ray`` with 1 and 2 actors (1 CPU each) on a local Ray cluster of ``--cpus`` CPUs;
- ``local`` in this process (1 thread) and with 2 worker processes (1 thread each).

Reported per configuration: wall time, cases per minute, the workers' model-load time,
the mean per-case time and its split (encoder, decoder, SynPo's own work, reading,
writing, the montage), and the scaling from 1 to 2 workers. From those figures the
write-up projects a 4-GPU node and a 16-node cluster on paper: wall = L + ceil(C / W) *
t_case for C cases on W workers with load time L (paid once per worker).

Numbers go to ``--out`` (``batch.json``) and are printed as a markdown table. This is a
measurement script, not a test: on a shared machine, run it when the CPUs are quiet
(it prints the load average before and after).

    python benchmarks/bench_batch.py --cases 8 --slices 6
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("OMP_NUM_THREADS", "1")

TEMPLATES = Path("/usr/share/mricron/templates")


def build_cohort(folder: Path, cases: int, slices: int) -> dict:
    """Crops of Colin27 / MNI152 at shifted places around the left thalamus; the support."""
    import SimpleITK as sitk
    from nilearn.datasets import load_mni152_template

    folder.mkdir(parents=True, exist_ok=True)
    colin = sitk.ReadImage(str(TEMPLATES / "ch2.nii.gz"))
    aal = sitk.ReadImage(str(TEMPLATES / "aal.nii.gz"))
    mni_file = folder / "mni152.nii.gz"
    load_mni152_template(resolution=1).to_filename(str(mni_file))
    mni = sitk.ReadImage(str(mni_file))
    k_mid = 81  # the left thalamus spans k 70..91 in Colin27
    support_region = (slice(55, 103), slice(83, 131), slice(k_mid - slices // 2, k_mid - slices // 2 + slices))
    sitk.WriteImage(colin[support_region], str(folder / "support.nii.gz"))
    sitk.WriteImage(aal[support_region], str(folder / "support_labels.nii.gz"))
    rows = ["output,query,reference"]
    for n in range(cases):
        di, dj, dk = (n % 3) - 1, (n // 3) % 3 - 1, (n % 2)
        i0, j0, k0 = 55 + di, 83 + dj, k_mid - slices // 2 + dk
        if n % 2 == 0:
            region = (slice(i0, i0 + 48), slice(j0, j0 + 48), slice(k0, k0 + slices))
            sitk.WriteImage(colin[region], str(folder / f"colin{n}.nii.gz"))
            sitk.WriteImage(aal[region], str(folder / f"colin{n}_labels.nii.gz"))
            rows.append(f"colin{n},colin{n}.nii.gz,colin{n}_labels.nii.gz")
        else:
            mi, mj, mk = mni.TransformPhysicalPointToIndex(colin.TransformIndexToPhysicalPoint((i0, j0, k0)))
            sitk.WriteImage(mni[mi:mi + 48, mj:mj + 48, mk:mk + slices], str(folder / f"mni{n}.nii.gz"))
            rows.append(f"mni{n},mni{n}.nii.gz,")
    (folder / "cohort.csv").write_text("\n".join(rows) + "\n")
    return {"manifest": str(folder / "cohort.csv"), "support": str(folder / "support.nii.gz"),
            "support_mask": str(folder / "support_labels.nii.gz"), "support_slice": [slices // 2]}


def run_config(cohort: dict, out: Path, engine: str, workers: int) -> dict:
    from SynPoLib.files import BatchRequest, run_batch

    shared = {"support": cohort["support"], "support_mask": cohort["support_mask"],
              "support_slice": cohort["support_slice"], "label": 77, "backend": "lite"}
    request = BatchRequest(manifest=cohort["manifest"], out=str(out), shared=shared, engine=engine, workers=workers,
                           cpus_per_worker=1)
    started = time.perf_counter()
    outcome = run_batch(request)
    wall = time.perf_counter() - started
    records = [r for r in outcome.records.values() if r and r.get("state") == "done"]
    assert len(records) == len(outcome.records), "every case of the benchmark must finish"
    loads = {r["worker"]["name"]: r["worker"]["load_seconds"] for r in records}

    def mean(key):
        return statistics.mean(float(r["seconds"].get(key, 0.0)) for r in records)

    slices = statistics.mean(int(r["slices"]) for r in records)
    return {
        "engine": engine, "workers": workers, "cases": len(records), "wall_s": round(wall, 2),
        "cases_per_min": round(len(records) / wall * 60, 2),
        "load_s": round(statistics.mean(loads.values()), 2), "per_case_s": round(mean("total"), 2),
        # CPU seconds a case costs its worker (all threads): what an idle machine would take per core
        "cpu_per_case_s": round(mean("cpu"), 2),
        "cases_per_min_per_core_idle": round(60 / mean("cpu"), 2),
        "encode_s": round(mean("slices_encode"), 2), "decode_s": round(mean("slices_decode"), 2),
        "synpo_s": round(mean("slices_synpo"), 2), "montage_s": round(mean("montage"), 2),
        "read_write_s": round(mean("read_write") + mean("hash"), 2), "query_slices": round(slices, 1),
        "dice_mean": round(statistics.mean(r["dice"] for r in records if r.get("dice") is not None), 3),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=8)
    parser.add_argument("--slices", type=int, default=6, help="slices per volume")
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    parser.add_argument("--out", default=str(ROOT / "bench-output" / "batch"))
    parser.add_argument("--configs", default="ray:1,ray:2,local:1,local:2")
    args = parser.parse_args(argv)
    out = Path(args.out)
    cohort = build_cohort(out / "cohort", args.cases, args.slices)
    results = {"load_average_before": os.getloadavg(), "cpus": os.cpu_count(), "configs": []}
    ray_started = None
    for item in args.configs.split(","):
        engine, workers = item.split(":")
        if engine == "ray" and ray_started is None:
            import ray

            t0 = time.perf_counter()
            ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
            ray_started = round(time.perf_counter() - t0, 2)
            results["ray_init_s"] = ray_started
        row = run_config(cohort, out / f"{engine}-{workers}", engine, int(workers))
        print(json.dumps(row), flush=True)
        results["configs"].append(row)
    results["load_average_after"] = os.getloadavg()
    (out / "batch.json").write_text(json.dumps(results, indent=1))
    print("\n| engine | workers | cases | wall (s) | cases/min | model load (s) | per case (s) | CPU per case (s) "
          "| encoder (s) | decoder + SynPo (s) | read/write + montage (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results["configs"]:
        print(f"| {r['engine']} | {r['workers']} | {r['cases']} | {r['wall_s']} | {r['cases_per_min']} | {r['load_s']} "
              f"| {r['per_case_s']} | {r['cpu_per_case_s']} | {r['encode_s']} | {round(r['decode_s'] + r['synpo_s'], 2)} "
              f"| {round(r['read_write_s'] + r['montage_s'], 2)} |")
    print(f"\nload average before {results['load_average_before']}, after {results['load_average_after']}; "
          f"Ray start {results.get('ray_init_s')} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
