"""The support in another volume, through the product's path: ``segment_volume`` with a
query that is not the support's volume (the registration mode's 3-D affine start).

Not a test: it measures and prints one Markdown report (``--out`` also writes it).

    python benchmarks/cross_volume.py --out benchmarks/results/cross_volume.md

Pairs (built by ``benchmarks/registration_study.py``'s builders): Colin27 -> a copy of it
moved by a known affine + smooth random B-spline deformation with gamma and a bias
field (exact labels), and Colin27 -> nilearn's MNI152 T1 with AAL resampled onto it
(approximate labels). Support: each scoreboard structure's middle axial slice in
Colin27; scored: every query slice that holds the structure. Rows:

- ``registration``: the lite preset, auto-stop off (every scored slice segmented);
- ``registration, auto-stop``: the lite preset as a user runs it, over the structure's
  slices and 10 more past each end (outside slices painted and structure slices missed
  are counted; Dice over the structure's slices);
- ``synpo (slices)``: the paper's mode with the lite prompts (supports placed by
  relative position along the axis);
- ``copy-after-affine``: the support slice's mask copied through the support volume and
  moved by the same affine transform (> 0.5);
- ``copy, no registration``: the same without the transform.

One LiteMedSAM (cached encoder passes shared by the rows), one CPU thread.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))


#: the auto-stop row runs this many slices past each end of the structure
MARGIN = 10


def lite_affine():
    from SynPoLib import preset

    return preset("lite").affine


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("STUDY_CACHE", "/work/scratch11")))
    ap.add_argument("--out", type=Path)
    ap.add_argument("--pairs", default="warped colin27,mni152")
    ap.add_argument("--structures", default=None, help="comma-separated (default: the 16 of the scoreboard)")
    args = ap.parse_args(argv)

    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    import registration_study as study
    from SynPoLib import Support, create_backend, preset, registration as core, segment_volume
    from SynPoLib.backends.cache import CachedBackend
    from SynPoLib.config import Mode
    from SynPoLib.evaluation.datasets import SCOREBOARD_STRUCTURES
    from SynPoLib.evaluation.protocols import structure_slices, within_volume_case
    from SynPoLib.metrics import Overlap, overlap
    from SynPoLib.preprocess import take_slice

    # The affine is deterministic (seeded sampling, one thread): the mode's own call is
    # answered from this run's first one instead of repeating 20 s per structure and row.
    computed = {}
    register = core.register_affine

    def register_once(fixed, moving, cfg=lite_affine(), abort=None, report=None):
        key = (id(fixed.array), id(moving.array), cfg)
        if key not in computed:
            info = {}
            computed[key] = (register(fixed, moving, cfg, abort=abort, report=info), info)
        if report is not None:
            report.update(computed[key][1])
        return computed[key][0]

    core.register_affine = register_once
    structures = args.structures.split(",") if args.structures else list(SCOREBOARD_STRUCTURES)
    colin = study.colin(args.cache)
    lab = study.names()
    backend = CachedBackend(create_backend("lite"), max_items=400)
    lite = preset("lite")
    configs = {"registration": lite.updated(**{"quality.auto_stop": False}),
               "registration, auto-stop": lite,
               "synpo (slices)": lite.updated(**{"quality.auto_stop": False, "propagation.mode": Mode.SLICES})}
    builders = {"warped colin27": study.warped_colin, "mni152": study.mni152}
    lines = ["# The support in another volume, through segment_volume (benchmarks/cross_volume.py)", "",
             "Colin27 (support: each structure's middle axial slice) -> another volume; Dice pooled over the query "
             "slices holding the structure, mean over structures; 'won' = above copy-after-affine.", ""]
    for pair in args.pairs.split(","):
        volume, labels, info = builders[pair](args.cache)
        support_vol = colin.volume
        transform_report: dict = {}
        t = time.perf_counter()
        transform = core.register_affine(volume, support_vol, lite.affine, report=transform_report)
        affine_s = time.perf_counter() - t
        per = {}
        for s in structures:
            q_slices = structure_slices(labels, lab[s], 0)
            if len(q_slices) < 2:
                continue
            ref = labels == lab[s]
            s_mask = colin.labels == lab[s]
            sup = within_volume_case(s, "colin", colin.labels, label=lab[s]).support_slices[0]
            support = Support(colin.array, s_mask, [sup], spacing=support_vol.spacing, origin=support_vol.origin,
                              direction=support_vol.direction)
            acc = {}
            n = volume.array.shape[0]
            wide = list(range(max(0, q_slices[0] - MARGIN), min(n, q_slices[-1] + MARGIN + 1)))
            for name, cfg in configs.items():
                t = time.perf_counter()
                stops = cfg.quality.auto_stop
                result = segment_volume(backend, volume.array, support, config=cfg, slices=wide if stops else q_slices,
                                        query_spacing=volume.spacing, query_origin=volume.origin,
                                        query_direction=volume.direction, same_volume=False)
                total = Overlap(0, 0, 0)
                for q in q_slices:
                    total = total + overlap(result.mask[q] > 0, ref[q])
                acc[name] = total.dice
                if stops:
                    acc["outside painted"] = sum(1 for q in wide if not ref[q].any() and result.mask[q].any())
                    acc["outside"] = sum(1 for q in wide if not ref[q].any())
                    acc["inside missed"] = sum(1 for q in q_slices if not result.mask[q].any())
                if name == "registration":
                    start = [r for r in result.records if any("chain start" in n for n in r.notes)]
                    acc["start"] = start[0].index if start else None
                    acc["seconds"] = time.perf_counter() - t
            prism = core.map_support_mask(s_mask[sup], sup, 0, support_vol, volume, transform)
            unmoved = core.map_support_mask(s_mask[sup], sup, 0, support_vol, volume, sitk.Transform())
            for name, moved in (("copy-after-affine", prism), ("copy, no registration", unmoved)):
                total = Overlap(0, 0, 0)
                for q in q_slices:
                    total = total + overlap(take_slice(moved, q, 0) > 0.5, ref[q])
                acc[name] = total.dice
            acc["query middle"] = q_slices[len(q_slices) // 2]
            per[s] = acc
            print(f"{pair} {s}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                               for k, v in acc.items()), flush=True)
        methods = ["registration", "registration, auto-stop", "synpo (slices)", "copy-after-affine",
                   "copy, no registration"]
        lines += [f"## Colin27 -> {pair} ({len(per)} structures; affine {affine_s:.0f} s from the "
                  f"{transform_report.get('start')} start)", "", f"Built: {info}", "",
                  "| method | mean Dice | won vs copy-after-affine |", "|---|---|---|"]
        for m in methods:
            vals = [per[s][m] for s in per]
            won = sum(per[s][m] > per[s]["copy-after-affine"] for s in per)
            lines.append(f"| {m} | {np.mean(vals):.3f} | {won}/{len(per)} |")
        lines += ["", f"Auto-stop, run over {MARGIN} slices past each end of the structure: "
                      f"{np.mean([per[s]['outside painted'] for s in per]):.1f} of "
                      f"{np.mean([per[s]['outside'] for s in per]):.1f} outside slices painted, "
                      f"{np.mean([per[s]['inside missed'] for s in per]):.1f} of "
                      f"{np.mean([len(structure_slices(labels, lab[s], 0)) for s in per]):.1f} structure slices "
                      "missed (means over structures); its Dice above is over the structure's slices."]
        lines += ["", "| structure | " + " | ".join(methods) + " | start slice | query middle |",
                  "|---|" + "---|" * (len(methods) + 2)]
        for s, acc in per.items():
            lines.append(f"| {s} | " + " | ".join(f"{acc[m]:.3f}" for m in methods)
                         + f" | {acc['start']} | {acc['query middle']} |")
        lines.append("")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
