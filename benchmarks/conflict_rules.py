"""Which structure gets a pixel two structures claim? Measured on touching AAL structures.

Not a test. Colin27 + AAL, groups of structures that touch in the atlas (the deep grey
nuclei of each hemisphere, and the mesial temporal ones), all labelled on one axial
slice (the one where the group's smallest structure is largest), segmented in one run
per mode over every slice any of them spans (auto-stop on, the preset's). Each run
keeps its pixels' evidence; every rule then decides the same overlaps
(:func:`SynPoLib.volume.structures.finish`), and "none" leaves them (each structure's
one-structure result, overlaps and all). Reported: mean Dice over the structures, the
pixels claimed twice, and how many of those the rule gave to the structure the atlas
says they belong to.

    python benchmarks/conflict_rules.py [--modes slices registration] [--out results.json]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

T1 = "/usr/share/mricron/templates/ch2.nii.gz"
ATLAS = "/usr/share/mricron/templates/aal.nii.gz"
GROUPS = {
    "deep grey, left": ("Caudate_L", "Putamen_L", "Pallidum_L", "Thalamus_L"),
    "deep grey, right": ("Caudate_R", "Putamen_R", "Pallidum_R", "Thalamus_R"),
    "mesial temporal, left": ("Hippocampus_L", "ParaHippocampal_L", "Amygdala_L"),
    "mesial temporal, right": ("Hippocampus_R", "ParaHippocampal_R", "Amygdala_R"),
}


def main() -> None:
    import SimpleITK as sitk
    import torch

    from SynPoLib import create_backend, preset
    from SynPoLib.backends.cache import CachedBackend
    from SynPoLib.evaluation.datasets import aal_labels
    from SynPoLib.metrics import dice
    from SynPoLib.volume import ConflictRule
    from SynPoLib.volume.structures import finish, run_structures, structures_from_labelmap

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", default=["slices", "registration"])
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "conflict_rules.json"))
    args = p.parse_args()
    torch.set_num_threads(1)
    vol = sitk.GetArrayFromImage(sitk.ReadImage(T1)).astype(np.float32)
    lab = sitk.GetArrayFromImage(sitk.ReadImage(ATLAS))
    names = aal_labels()
    backend = CachedBackend(create_backend("lite"), max_items=400)
    rules = [None] + list(ConflictRule)
    table = {}
    for mode in args.modes:
        config = preset("lite").updated(**{"propagation.mode": mode})
        totals = {str(r.value if r else "none"): [] for r in rules}
        claimed_twice = 0
        right = {str(r.value): 0 for r in rules if r}
        for group, members in GROUPS.items():
            labels = [names[m] for m in members]
            areas = np.array([[(lab[k] == label).sum() for label in labels] for k in range(lab.shape[0])])
            support = int(np.argmax(areas.min(axis=1)))
            span = np.flatnonzero(areas.max(axis=1) > 0)
            query = range(int(span[0]), int(span[-1]) + 1)
            run = run_structures(backend, vol, structures_from_labelmap(vol, lab, [support], labels=labels,
                                                                        spacing=(1.0, 1.0, 1.0)),
                                 config=config, slices=query)
            scored = [q for q in query if q != support]
            masks = {name: r.mask.copy() for name, r in run.results.items()}
            both = sum((masks[n] > 0).astype(np.int32) for n in masks) > 1
            claimed_twice += int(both[scored].sum())
            for rule in rules:
                key = str(rule.value if rule else "none")
                if rule is None:
                    decided = masks
                else:
                    trial = copy.copy(run)
                    trial.results = {n: copy.deepcopy(r) for n, r in run.results.items()}
                    decided = {n: r.mask for n, r in finish(trial, rule).results.items()}
                    for n, label in zip(decided, labels):
                        truth = lab == label
                        right[key] += int((both & (decided[n] > 0) & truth)[scored].sum())
                for n, label in zip(decided, labels):
                    totals[key].append(dice(decided[n][scored] > 0, (lab == label)[scored]))
            print(f"{mode} {group}: support slice {support}, slices {query.start}..{query.stop - 1}, "
                  f"claimed twice {int(both[scored].sum())}: "
                  + ", ".join(f"{k} {np.mean(v[-len(labels):]):.4f}" for k, v in totals.items()), flush=True)
        table[mode] = {"mean_dice": {k: float(np.mean(v)) for k, v in totals.items()},
                       "claimed_twice": claimed_twice,
                       "given_to_the_atlas_structure": right}
        print(f"{mode}: mean Dice over {len(totals['none'])} structures: "
              + ", ".join(f"{k} {v:.4f}" for k, v in table[mode]["mean_dice"].items())
              + f"; pixels claimed twice {claimed_twice}, given to the atlas's structure: "
              + ", ".join(f"{k} {v}" for k, v in right.items()), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(table, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
