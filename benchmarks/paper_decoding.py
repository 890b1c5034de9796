"""The paper path's first decode, both ways, on the real SAM 2.1 + DINOv2 architectures.

Not a test: it measures and prints one Markdown table (``--out`` also writes it).

    python benchmarks/paper_decoding.py [--out benchmarks/results/paper_decoding.md]

sam2 1.1.0 uses its three multimask tokens for prompts of 0-1 points only
(``multimask_max_pt_num: 1``) and advises one mask for several points; the paper
prompts 3 positives + 4 negatives and asks for 3 masks. SynPo now decodes both ways
from the same embedding and lets the prototype score choose among the 3 + 1
(``prompt.single_mask_too``). Without weights (none are reachable here) the
architectures run with random weights: this shows that both decodes run, what they
cost, and how often each wins; it says nothing about which is better with the real
weights. Colin27's left thalamus, its middle axial slice as support, every other
structure slice as query; SAM 2.1 tiny at 256 px + DINOv2 ViT-S/14 (registers).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)

    import SimpleITK as sitk
    import torch

    torch.set_num_threads(1)
    from SynPoLib import Support, create_backend
    from SynPoLib.config import SynPoConfig
    from SynPoLib.method.segmenter import SynPoSegmenter
    from SynPoLib.volume.types import Job

    vol = sitk.GetArrayFromImage(sitk.ReadImage("/usr/share/mricron/templates/ch2.nii.gz")).astype(np.float32)
    mask = sitk.GetArrayFromImage(sitk.ReadImage("/usr/share/mricron/templates/aal.nii.gz")) == 77
    ks = [int(k) for k in np.flatnonzero(mask.any(axis=(1, 2)))]
    mid = ks[len(ks) // 2]
    backend = create_backend("synpo", dino_model="vits14-reg4", sam2_size="tiny", sam2_image_size=256,
                             random_weights=True, device="cpu")
    rows = {}
    for label, single in (("3 masks (the paper)", False), ("3 masks + 1 mask (SynPo)", True)):
        cfg = SynPoConfig().updated(**{"prompt.single_mask_too": single})
        job = Job.build(backend, vol, Support(vol, mask, [mid]), cfg)
        segmenter = SynPoSegmenter(backend, cfg)
        image, mask_roi = job.support_roi(mid)
        context = segmenter.prepare_support(backend.encode([image])[0], mask_roi, job.s_geometry.valid())
        chosen, decode, first_decode, notes = Counter(), [], [], []
        fallback, gap = Counter(), []
        for q in [k for k in ks if k != mid]:
            encoded = backend.encode([job.query_roi(q)])[0]
            calls = []

            def hook(module, a, kw, out, calls=calls):
                calls.append(time.perf_counter())
            handle = backend.sam.model.sam_mask_decoder.register_forward_hook(hook, with_kwargs=True)
            try:
                result = segmenter.segment(encoded, context, job.q_geometry.valid())
            finally:
                handle.remove()
            decode.append(result.timings["decode"])
            first_decode.append(len(calls))
            text = " ".join(result.notes)
            if single:  # the first decode again, both ways: is the one mask new, and how does it score?
                from SynPoLib.method.refine import mask_score

                pts, labs = result.points.coords, result.points.labels
                multi = backend.predict(encoded, points=pts, labels=labs, multimask=True)
                one = backend.predict(encoded, points=pts, labels=labs, multimask=False)
                sam_map = segmenter.confidence(encoded, context).sam
                same = any(np.allclose(one.logits[0], m, atol=1e-5) for m in multi.logits)
                fallback[same] += 1
                gap.append(mask_score(one.logits[0] > 0, sam_map)
                           - max(mask_score(m > 0, sam_map) for m in multi.logits))
            chosen["the one-mask decode" if "kept the one-mask decode" in text else
                   ("a multimask output" if "decoded" in text else "a multimask output (one decode)")] += 1
            notes.append(text)
        rows[label] = {"slices": len(decode), "decode_ms": 1000 * float(np.mean(decode)),
                       "decoder_calls": float(np.mean(first_decode)), "chosen": dict(chosen),
                       "one_mask_is_a_multimask_output": fallback[True], "one_mask_new": fallback[False],
                       "score_gap": [float(np.min(gap)), float(np.median(gap)), float(np.max(gap))] if gap else None}
        print(label, rows[label], flush=True)
    lines = ["# The first decode both ways (benchmarks/paper_decoding.py)", "",
             "SAM 2.1 tiny (256 px) + DINOv2 ViT-S/14 reg4, RANDOM weights, CPU, one thread; Colin27 left thalamus, "
             "paper preset (3 positives + 4 negatives, 2 refine rounds). Decoder calls and time per slice include "
             "the refine rounds.", "",
             "| first decode | slices | decoder calls / slice | decoder ms / slice | mask kept |", "|---|---|---|---|---|"]
    for label, r in rows.items():
        kept = ", ".join(f"{k}: {v}" for k, v in sorted(r["chosen"].items()))
        lines.append(f"| {label} | {r['slices']} | {r['decoder_calls']:.1f} | {r['decode_ms']:.0f} | {kept} |")
    both = rows["3 masks + 1 mask (SynPo)"]
    lines += ["", f"The one-mask decode was identical to one of the three multimask outputs on "
                  f"{both['one_mask_is_a_multimask_output']} of {both['slices']} slices (sam2's "
                  "`dynamic_multimask_via_stability`, on in `build_sam2`, falls back to the best multimask output "
                  "when the single mask is unstable) and new on the other "
                  f"{both['one_mask_new']}; its prototype score minus the best multimask output's: min / median / "
                  "max " + " / ".join(f"{v:+.3f}" for v in both["score_gap"]) + "."]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
