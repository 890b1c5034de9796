"""Registration-guided propagation (SynPoLib.registration) on Colin27 + AAL: issue 11's numbers.

Not a test: it measures, and writes one markdown report of tables. Deterministic (one
thread everywhere, fixed seeds); each part stores its numbers as JSON in ``--work`` and
a rerun reuses them (``--fresh`` recomputes). LiteMedSAM embeddings (the stop signal,
the backend fusion, the cross-volume start) are cached as float16 ``.npy`` files under
``--cache``.

    python benchmarks/registration_study.py --out benchmarks/results/registration_study.md
    python benchmarks/registration_study.py --parts p2,tune --out /tmp/t.md

Parts (every Dice is pooled over a structure's scored slices, then averaged over the
16 scoreboard structures; "won" counts structures strictly above copy):

- ``tune``   one-at-a-time variations around the issue's parameters, LEFT 8 only;
- ``p2``     protocol 2 (middle slice supports all others): copy, registration alone,
             + random walker, + backend fusion weights, the backend's box mask alone,
             each slice registered straight to the support; left / right split;
- ``p1``     protocol 1 (3 supports): the protocol's thirds, nearest-support meeting,
             distance-weighted blend of the two chains;
- ``qc``     10 slices past each end: the prototype-cosine stop against the
             relative-confidence stop (SynPoLib.volume.qc), thresholds chosen on the LEFT 8;
- ``cross``  support in another volume: Colin27 -> a copy of it warped by a known smooth
             random deformation + intensity change, and Colin27 -> MNI152 (nilearn);
- ``perf``   per-slice time split and peak memory for N and 5N slices;
- ``montage`` overlay PNGs of the worst structures (``--pictures``).
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
from dataclasses import replace
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import SimpleITK as sitk  # noqa: E402

from SynPoLib import registration as R  # noqa: E402
from SynPoLib.config import GeometryConfig, QualityConfig, SynergyConfig, WindowConfig  # noqa: E402
from SynPoLib.evaluation.datasets import SCOREBOARD_STRUCTURES, aal_labels, colin_subject  # noqa: E402
from SynPoLib.evaluation.protocols import (fsmis_case, qc_case, structure_slices,  # noqa: E402
                                           within_volume_case)
from SynPoLib.io import Volume, read_volume  # noqa: E402
from SynPoLib.metrics import Overlap, overlap  # noqa: E402
from SynPoLib.preprocess import (SliceGeometry, in_plane_spacing, slice_geometry, take_slice,  # noqa: E402
                                 window_bounds, apply_window)
from SynPoLib.volume.qc import ChainState, relative_confidence  # noqa: E402
from SynPoLib.method.refine import mask_score  # noqa: E402
from SynPoLib.method.synergy import prepare_support, query_synergy  # noqa: E402

sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)

AXIS = 0
LEFT = tuple(s for s in SCOREBOARD_STRUCTURES if s.endswith("_L"))
RIGHT = tuple(s for s in SCOREBOARD_STRUCTURES if s.endswith("_R"))
BASE = R.RegistrationConfig()
#: backend fusion weights measured (0: the prior alone; 1: the backend's box mask alone)
FUSION_WEIGHTS = (0.25, 0.5, 1.0)
#: the stop signal the module's default threshold was chosen for: the cosine under the output mask
STOP_SIGNAL = "cos_mask"
#: the stop thresholds swept (cosine; relative confidence)
COSINE_THRESHOLDS = (0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9)
RELATIVE_THRESHOLDS = (0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
#: cross-volume: the picked start is searched this far (mm) around the mapped slice; the
#: default (AffineConfig.start_search_mm = 0) starts at the mapped slice itself
START_SEARCH_MM = 5.0
#: the tune grid: one parameter at a time around BASE
TUNE_GRID = {
    "field_sigma_mm": (1.0, 3.0),
    "iterations": (25, 100),
    "margin_mm": (10.0, 30.0),
}
#: refinement-only variations (the chain is shared): (label, overrides)
REFINE_GRID = (
    ("beta=30", {"walker_beta": 30.0}), ("beta=500", {"walker_beta": 500.0}),
    ("erode 1 / dilate 1 mm", {"dilation_mm": 1.0}), ("erode 1 / dilate 3 mm", {"dilation_mm": 3.0}),
    ("erode 2 / dilate 2 mm", {"erosion_mm": 2.0}),
)


def log(msg: str) -> None:
    print(msg, flush=True)


# ------------------------------------------------------------------------- data


class Subject3D:
    """A volume, its labels, its window and slice geometry, and its cached embeddings."""

    def __init__(self, key: str, volume: Volume, labels: np.ndarray, cache: Path,
                 window: Optional[Tuple[float, float]] = None) -> None:
        self.key = key
        self.volume = volume
        self.array = volume.array
        self.labels = labels
        self.bounds = window or window_bounds(self.array, WindowConfig())
        self.spacing = in_plane_spacing(volume.spacing, AXIS)
        shape = [n for i, n in enumerate(self.array.shape) if i != AXIS]
        self.geometry: SliceGeometry = slice_geometry(tuple(shape), self.spacing, GeometryConfig())
        self.cache = cache / "emb" / f"{key}_ax{AXIS}"
        self._norm: Dict[int, np.ndarray] = {}

    def image(self, i: int) -> np.ndarray:
        if i not in self._norm:
            if len(self._norm) > 400:
                self._norm.clear()
            self._norm[i] = R.normalise_slice(take_slice(self.array, i, AXIS), self.bounds)
        return self._norm[i]

    def mask(self, label: int) -> np.ndarray:
        return self.labels == label

    def features(self, i: int) -> np.ndarray:
        path = self.cache / f"{i}.npy"
        if not path.exists():
            self.cache.mkdir(parents=True, exist_ok=True)
            roi = self.geometry.image_to_roi(apply_window(take_slice(self.array, i, AXIS), self.bounds))
            feats = backend().encode([roi])[0].features["sam"]
            np.save(path, feats.astype(np.float16))
        return np.load(path).astype(np.float32)

    def roi(self, mask: np.ndarray) -> np.ndarray:
        return self.geometry.mask_to_roi(np.asarray(mask) > 0)


_BACKEND = []


def backend():
    if not _BACKEND:
        import torch

        torch.set_num_threads(1)
        from SynPoLib.backends import create_backend

        _BACKEND.append(create_backend("lite"))
    return _BACKEND[0]


_COLIN = []


def colin(cache: Path) -> Subject3D:
    if not _COLIN:
        subject = colin_subject()
        _COLIN.append(Subject3D("colin27", read_volume(subject.image), read_volume(subject.labels).array, cache))
    return _COLIN[0]


def names() -> Dict[str, int]:
    return aal_labels()


# ---------------------------------------------------------------- chain helpers


def backend_probability(subject: Subject3D, index: int, soft: np.ndarray, cfg: R.RegistrationConfig) -> np.ndarray:
    """LiteMedSAM's mask probability on a slice, prompted with the prior's box (grown)."""
    import torch

    from SynPoLib.backends.base import EncodedSlice
    from SynPoLib.method.prompts import grow_box, mask_box

    inside = soft > cfg.threshold
    if not inside.any():
        return np.zeros_like(soft)
    geo = subject.geometry
    box_roi = subject.roi(inside)
    if not box_roi.any():
        return np.zeros_like(soft)
    box = grow_box(mask_box(box_roi), cfg.backend_box_margin, geo.valid())
    feats = subject.features(index)
    enc = EncodedSlice(features={"sam": feats}, state=torch.from_numpy(feats)[None])
    pred = backend().predict(enc, box=box, multimask=False, roi_size=geo.roi_size)
    logits = geo.logits_to_native(pred.logits[0])
    return (1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))).astype(np.float32)


def add(acc: Dict[str, Overlap], key: str, pred: np.ndarray, ref: np.ndarray) -> None:
    acc[key] = acc.get(key, Overlap(0, 0, 0)) + overlap(pred, ref)


def summarise(per: Dict[str, Dict[str, float]], methods: Sequence[str], structures=SCOREBOARD_STRUCTURES,
              copy: str = "copy") -> Dict[str, dict]:
    out = {}
    for m in methods:
        vals = np.array([per[s][m] for s in structures])
        row = {"mean": float(vals.mean())}
        if copy in per[structures[0]]:
            row["won"] = int(sum(per[s][m] > per[s][copy] for s in structures))
        out[m] = row
    return out


# ------------------------------------------------------------------ protocol 2


def run_p2(cache: Path, cfg: R.RegistrationConfig, structures=SCOREBOARD_STRUCTURES, fusion=True,
           refine_variants: Sequence[Tuple[str, dict]] = (), straight=True) -> Dict[str, Dict[str, float]]:
    """Per structure: Dice of copy, registration alone, + walker, fusion weights, variants."""
    sub, lab = colin(cache), names()
    per = {}
    seconds = {R.REGISTRATION: [], R.REFINEMENT: []}
    for s in structures:
        ref = sub.mask(lab[s])
        case = within_volume_case(s, sub.key, sub.labels, label=lab[s])
        sup = case.support_slices[0]
        acc: Dict[str, Overlap] = {}
        variants = [(name, replace(cfg, **kw)) for name, kw in refine_variants]
        for step, _ in R.propagate_supports(sub.image, {sup: ref[sup]}, min(case.scored), max(case.scored),
                                            sub.spacing, cfg):
            q = step.index
            add(acc, "copy", ref[sup], ref[q])
            add(acc, "registration", step.soft > cfg.threshold, ref[q])
            add(acc, "registration+walker", step.mask, ref[q])
            for k in seconds:
                seconds[k].append(step.seconds[k])
            for name, vcfg in variants:
                add(acc, name, R.refine_mask(sub.image(q), step.soft, sub.spacing, vcfg), ref[q])
            if fusion:
                prob = backend_probability(sub, q, step.soft, cfg)
                for w in FUSION_WEIGHTS:
                    fused = R.fuse_prior(step.soft, prob, w)
                    key = "backend box alone" if w == 1.0 else f"fusion w={w:g}"
                    mask = (fused > 0.5) if w == 1.0 else R.refine_mask(sub.image(q), fused, sub.spacing, cfg)
                    add(acc, key, mask, ref[q])
            if straight:
                soft = R.register_and_warp(sub.image(q), sub.image(sup), ref[sup].astype(np.float32),
                                           sub.spacing, cfg)
                add(acc, "straight to support", R.refine_mask(sub.image(q), soft, sub.spacing, cfg), ref[q])
        per[s] = {k: v.dice for k, v in acc.items()}
        log(f"  p2 {s}: " + ", ".join(f"{k} {v:.3f}" for k, v in per[s].items()))
    per["_seconds"] = {k: float(np.mean(v)) for k, v in seconds.items()}
    return per


def part_tune(cache: Path) -> dict:
    """Left 8 only: each chain parameter moved alone, and refinement-only variations."""
    out = {"base": run_p2(cache, BASE, LEFT, fusion=False, refine_variants=REFINE_GRID, straight=False)}
    for name, values in TUNE_GRID.items():
        for v in values:
            label = f"{name}={v:g}"
            log(f"tune {label}")
            out[label] = run_p2(cache, replace(BASE, **{name: v}), LEFT, fusion=False, straight=False)
    return out


def part_p2(cache: Path) -> dict:
    return run_p2(cache, BASE)


# ------------------------------------------------------------------ protocol 1


def legs_from_assignment(case) -> List[R.Leg]:
    """The protocol's thirds as legs: each support walks over the slices it serves."""
    legs = []
    amap = case.assignment_map
    for s in case.support_slices:
        mine = [q for q, t in amap.items() if t == s]
        down = tuple(sorted((q for q in mine if q < s), reverse=True))
        up = tuple(sorted(q for q in mine if q > s))
        first, last = case.support_slices[0], case.support_slices[-1]
        if down:
            legs.append(R.Leg(s, down, outward=s == first))
        if up:
            legs.append(R.Leg(s, up, outward=s == last))
    return legs


def part_p1(cache: Path) -> dict:
    sub, lab = colin(cache), names()
    per = {}
    for s in SCOREBOARD_STRUCTURES:
        ref = sub.mask(lab[s])
        case = fsmis_case(s, sub.key, sub.labels, sub.key, sub.labels, label=lab[s])
        scored = set(case.scored)
        supports = {t: ref[t] for t in case.support_slices}
        first, last = min(scored), max(scored)
        acc: Dict[str, Overlap] = {}
        for q, t in case.assignment:
            add(acc, "copy", ref[t], ref[q])
        # the protocol's thirds
        for leg in legs_from_assignment(case):
            stream = ((q, sub.image(q)) for q in leg.slices)
            for step in R.propagate_chain(stream, sub.image(leg.support), ref[leg.support].astype(np.float32),
                                          sub.spacing, BASE, support=leg.support):
                add(acc, "thirds", step.mask, ref[step.index])
        for rule in R.MeetingRule:
            cfg = replace(BASE, meeting=rule)
            seen = set()
            for step, _ in R.propagate_supports(sub.image, supports, first, last, sub.spacing, cfg):
                if step.index in scored:
                    seen.add(step.index)
                    add(acc, rule.value, step.mask, ref[step.index])
                    add(acc, f"{rule.value} (registration alone)", step.soft > BASE.threshold, ref[step.index])
            assert seen == scored, (s, sorted(scored - seen))
        per[s] = {k: v.dice for k, v in acc.items()}
        log(f"  p1 {s}: " + ", ".join(f"{k} {v:.3f}" for k, v in per[s].items()))
    return per


# ------------------------------------------------------------------------ QC


def part_qc(cache: Path) -> dict:
    """Signals per slice of both directions, chains run without stopping (the chain does
    not depend on the stop, so every threshold is simulated from one pass)."""
    sub, lab = colin(cache), names()
    syn_cfg = SynergyConfig()
    out = {}
    for s in SCOREBOARD_STRUCTURES:
        ref = sub.mask(lab[s])
        case = qc_case(s, sub.key, sub.labels, label=lab[s])
        sup = case.support_slices[0]
        sup_roi = sub.roi(ref[sup])
        feats = sub.features(sup)
        proto = R.support_prototype(feats, sup_roi)
        synergy = prepare_support({"sam": feats}, sup_roi, syn_cfg)
        self_map = query_synergy({"sam": feats}, synergy, syn_cfg, sub.geometry.roi_size).sam
        self_score = mask_score(sup_roi, self_map)
        rows = []
        for step, leg in R.propagate_supports(sub.image, {sup: ref[sup]}, min(case.scored), max(case.scored),
                                              sub.spacing, BASE):
            q = step.index
            f = sub.features(q)
            prior_roi = sub.roi(step.soft > BASE.threshold)
            mask_roi = sub.roi(step.mask)
            sam_map = query_synergy({"sam": f}, synergy, syn_cfg, sub.geometry.roi_size).sam
            ov = overlap(step.mask, ref[q])
            rows.append({
                "slice": q, "direction": 1 if q > sup else -1, "inside": bool(ref[q].any()),
                "pixels": int(step.mask.sum()), "tp": ov.tp, "fp": ov.fp, "fn": ov.fn,
                "cos_prior": R.prototype_cosine(proto, f, prior_roi),
                "cos_mask": R.prototype_cosine(proto, f, mask_roi),
                "relative": relative_confidence(mask_score(mask_roi, sam_map), self_score),
            })
        out[s] = {"support": sup, "support_fn": 0, "rows": rows}
        ins = [r for r in rows if r["inside"]]
        outs = [r for r in rows if not r["inside"]]
        log(f"  qc {s}: cos inside {np.mean([r['cos_prior'] for r in ins]):.3f} "
            f"outside {np.mean([r['cos_prior'] for r in outs]):.3f}")
    return out


def simulate_stop(rows: List[dict], signal: Optional[str], threshold: float, stop_after: int) -> dict:
    """Apply a stop rule (ChainState) to a structure's QC rows: painted / missed counts, Dice."""
    painted = {}
    for direction in (1, -1):
        seq = sorted((r for r in rows if r["direction"] == direction), key=lambda r: r["slice"] * direction)
        if signal is None:
            painted.update({r["slice"]: True for r in seq})
            continue
        state = ChainState(QualityConfig(auto_stop=True, stop_threshold=threshold, stop_after=stop_after))
        for r in seq:
            if state.stopped:
                painted[r["slice"]] = False
                continue
            final, dropped = state.push(r["slice"], r[signal], r["pixels"], None)
            painted.update({i: True for i, _ in final})
            painted.update({i: False for i, _ in dropped})
        painted.update({i: True for i, _ in state.finish()})
    tp = fp = fn = 0
    outside_painted = inside_missed = 0
    inside_tp = inside_fp = inside_fn = 0
    for r in rows:
        on = painted[r["slice"]] and r["pixels"] > 0
        ref_pixels = r["tp"] + r["fn"]
        if on:
            tp, fp, fn = tp + r["tp"], fp + r["fp"], fn + r["fn"]
        else:
            fn += ref_pixels
        if r["inside"]:
            if on:
                inside_tp, inside_fp, inside_fn = inside_tp + r["tp"], inside_fp + r["fp"], inside_fn + r["fn"]
            else:
                inside_fn += ref_pixels
                inside_missed += 1
        elif on:
            outside_painted += 1
    dice = lambda a, b, c: 2 * a / max(2 * a + b + c, 1)  # noqa: E731
    return {"outside_painted": outside_painted, "inside_missed": inside_missed,
            "n_outside": sum(not r["inside"] for r in rows), "n_inside": sum(r["inside"] for r in rows),
            "dice_range": dice(tp, fp, fn), "dice_inside": dice(inside_tp, inside_fp, inside_fn)}


def qc_table(qc: dict, structures, signal, threshold, stop_after=3) -> dict:
    res = [simulate_stop(qc[s]["rows"], signal, threshold, stop_after) for s in structures]
    return {k: float(np.mean([r[k] for r in res])) for k in res[0]}


# --------------------------------------------------------------- cross-volume


def warped_colin(cache: Path, seed: int = 11) -> Tuple[Volume, np.ndarray, dict]:
    """Colin27 moved by a known global affine + smooth random B-spline deformation, with
    gamma 0.8 and a smooth multiplicative bias field; AAL moved by the same transform
    (nearest neighbour), so the labels stay exact. Deterministic (seeded)."""
    sub = colin(cache)
    image = sub.volume.to_image(sub.array.astype(np.float32))
    labels = sub.volume.to_image(sub.labels.astype(np.int16))
    rng = np.random.default_rng(seed)
    centre = image.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in image.GetSize()])
    affine = sitk.Euler3DTransform(centre, *np.deg2rad([4.0, -3.0, 5.0]), (4.0, -3.0, 5.0))
    affine = sitk.AffineTransform(affine.GetMatrix(), affine.GetTranslation(), centre)
    affine.Scale((1.05, 0.97, 1.02))
    bspline = sitk.BSplineTransformInitializer(image, [5, 5, 5], 3)
    params = rng.normal(0.0, 3.0, len(bspline.GetParameters()))  # mm, per control point and axis
    bspline.SetParameters(params.tolist())
    transform = sitk.CompositeTransform([affine, bspline])
    moved = sitk.Resample(image, image, transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    moved_labels = sitk.Resample(labels, labels, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkInt16)
    arr = sitk.GetArrayFromImage(moved)
    scaled = np.clip(arr / max(float(arr.max()), 1e-6), 0, 1) ** 0.8
    k, j, i = np.meshgrid(*[np.linspace(-1, 1, n) for n in arr.shape], indexing="ij")
    bias = np.exp(0.25 * k - 0.2 * j * i + 0.15 * i ** 2).astype(np.float32)
    out = (scaled * bias * 1000.0).astype(np.float32)
    vol = Volume(array=out, spacing=sub.volume.spacing, origin=sub.volume.origin, direction=sub.volume.direction)
    info = {"bspline_sigma_mm": 3.0, "mesh": 5, "rotation_deg": [4.0, -3.0, 5.0], "translation_mm": [4.0, -3.0, 5.0],
            "scale": [1.05, 0.97, 1.02], "gamma": 0.8, "bias": "exp(0.25 k - 0.2 j i + 0.15 i^2), coords in [-1, 1]",
            "seed": seed}
    return vol, sitk.GetArrayFromImage(moved_labels), info


def mni152(cache: Path) -> Tuple[Volume, np.ndarray, dict]:
    """nilearn's MNI152 T1 (1 mm, from the wheel's data), AAL resampled onto it (nearest,
    physical identity: both are in MNI space): an approximate reference."""
    from nilearn.datasets import load_mni152_template

    path = cache / "mni152_t1_1mm.nii.gz"
    if not path.exists():
        load_mni152_template(resolution=1).to_filename(str(path))
    vol = read_volume(path)
    aal = sitk.ReadImage(str(colin_subject().labels))
    on_mni = sitk.Resample(aal, vol.to_image(), sitk.Transform(), sitk.sitkNearestNeighbor, 0, aal.GetPixelID())
    return vol, sitk.GetArrayFromImage(on_mni), {"source": "nilearn.datasets.load_mni152_template(resolution=1)"}


def part_cross(cache: Path) -> dict:
    """Support slice (middle structure slice) in Colin27; query = another volume."""
    sub, lab = colin(cache), names()
    out = {}
    for pair, build in (("warped colin27", warped_colin), ("mni152", mni152)):
        volume, labels, info = build(cache)
        query = Subject3D(pair.replace(" ", "_"), volume, labels, cache)
        t = time.perf_counter()
        transform = R.register_affine(volume, sub.volume)
        affine_seconds = time.perf_counter() - t
        log(f"cross {pair}: affine {affine_seconds:.0f} s")
        per = {}
        for s in SCOREBOARD_STRUCTURES:
            ref = query.mask(lab[s])
            q_slices = structure_slices(labels, lab[s], AXIS)
            if len(q_slices) < 2:
                continue
            s_mask = sub.mask(lab[s])
            sup = within_volume_case(s, sub.key, sub.labels, label=lab[s]).support_slices[0]
            prism = R.map_support_mask(s_mask[sup], sup, AXIS, sub.volume, volume, transform)
            mapped = R.mapped_slice(s_mask[sup], sup, AXIS, sub.volume, volume, transform)
            acc: Dict[str, Overlap] = {}
            first, last = q_slices[0], q_slices[-1]
            # copy without registration: the support slice's prism at the same physical place
            unmoved = R.map_support_mask(s_mask[sup], sup, AXIS, sub.volume, volume, sitk.Transform())
            for q in q_slices:
                add(acc, "copy-after-affine", take_slice(prism, q, AXIS) > 0.5, ref[q])
                add(acc, "copy, no registration", take_slice(unmoved, q, AXIS) > 0.5, ref[q])
            del unmoved
            proto = R.support_prototype(sub.features(sup), sub.roi(s_mask[sup]))
            centre = int(round(mapped))
            radius = int(np.ceil(START_SEARCH_MM / float(volume.spacing[AXIS])))
            scores = {}
            for q in range(max(0, centre - radius), min(volume.array.shape[AXIS], centre + radius + 1)):
                start = take_slice(prism, q, AXIS) > 0.5
                if start.any():
                    scores[q] = R.prototype_cosine(proto, query.features(q), query.roi(start))
            picked = R.choose_start_slice(scores, mapped)
            starts = {"chain from the mapped slice": centre, "chain from the picked slice": picked}  # labels kept
            for name, q0 in starts.items():
                soft0 = np.asarray(take_slice(prism, q0, AXIS), np.float32)
                if q0 in q_slices:
                    add(acc, name, R.refine_mask(query.image(q0), soft0, query.spacing, BASE), ref[q0])
                got = {q0}
                for step, _ in R.propagate_supports(query.image, {q0: soft0}, min(first, q0), max(last, q0),
                                                    query.spacing, BASE):
                    if step.index in q_slices:
                        add(acc, name, step.mask, ref[step.index])
                        got.add(step.index)
                assert set(q_slices) <= got
            per[s] = {k: v.dice for k, v in acc.items()}
            per[s].update({"mapped": float(mapped), "picked": int(picked),
                           "true_middle": int(q_slices[len(q_slices) // 2])})
            log(f"  cross {pair} {s}: " + ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}"
                                                     for k, v in per[s].items()))
        out[pair] = {"info": info, "affine_seconds": affine_seconds, "per": per}
    return out


# ------------------------------------------------------------------------ perf


def perf_child(factor: int) -> dict:
    """In a fresh process: the left thalamus chain (both directions from its middle slice)
    on Colin27 resampled to ``factor`` x as many slices (thinner slices, same anatomy)."""
    sub = colin(Path(os.environ["STUDY_CACHE"]))
    ref = sub.mask(names()["Thalamus_L"])
    slices = structure_slices(sub.labels, names()["Thalamus_L"], AXIS)
    lo, hi = slices[0] - 2, slices[-1] + 2
    arr = sub.array[lo:hi + 1].astype(np.float32)
    msk = ref[lo:hi + 1].astype(np.float32)
    if factor > 1:
        from scipy import ndimage

        arr = ndimage.zoom(arr, (factor, 1, 1), order=1)
        msk = ndimage.zoom(msk, (factor, 1, 1), order=1) > 0.5
    n = arr.shape[0]
    mid = n // 2
    bounds = sub.bounds
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    tracemalloc.start()
    times = {R.REGISTRATION: 0.0, R.REFINEMENT: 0.0}
    count = 0
    painted = np.zeros(arr.shape, bool)  # the output mask, as a driver holds it
    t = time.perf_counter()
    for step, _ in R.propagate_supports(lambda i: R.normalise_slice(arr[i], bounds), {mid: msk[mid]}, 0, n - 1,
                                        sub.spacing, BASE):
        painted[step.index] = step.mask
        count += 1
        for k in times:
            times[k] += step.seconds[k]
    wall = time.perf_counter() - t
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"slices": count, "wall": wall, "per_slice": {k: v / count for k, v in times.items()},
            "tracemalloc_peak_mb": peak / 2 ** 20, "output_mask_mb": painted.nbytes / 2 ** 20,
            "rss_growth_mb": (rss1 - rss0) / 1024.0}


def part_perf(cache: Path) -> dict:
    out = {}
    env = dict(os.environ, STUDY_CACHE=str(cache), OMP_NUM_THREADS="1")
    for factor in (1, 5):
        res = subprocess.run([sys.executable, __file__, "--perf-child", str(factor)], env=env, check=True,
                             capture_output=True, text=True)
        out[f"x{factor}"] = json.loads(res.stdout.strip().splitlines()[-1])
        log(f"perf x{factor}: {out[f'x{factor}']}")
    # the stop signal's encoder pass (LiteMedSAM, one CPU thread), three slices
    sub = colin(cache)
    backend()
    times = []
    mask_roi = sub.roi(sub.mask(names()["Thalamus_L"])[80])
    proto = R.support_prototype(sub.features(80), mask_roi)
    backend().encode([sub.geometry.image_to_roi(apply_window(take_slice(sub.array, 80, AXIS), sub.bounds))])  # warm-up
    for i in (76, 78, 82, 84):
        roi = sub.geometry.image_to_roi(apply_window(take_slice(sub.array, i, AXIS), sub.bounds))
        t = time.perf_counter()
        feats = backend().encode([roi])[0].features["sam"]
        encode = time.perf_counter() - t
        t = time.perf_counter()
        R.prototype_cosine(proto, feats, mask_roi)
        times.append((encode, time.perf_counter() - t))
    out["encoder_seconds"] = float(np.mean([a for a, _ in times]))
    out["cosine_seconds"] = float(np.mean([b for _, b in times]))
    return out


# --------------------------------------------------------------------- montage


def part_montage(cache: Path, pictures: Path, structures: Sequence[str]) -> dict:
    """Overlay PNGs (green: registration + random walker, dashed yellow: AAL) of protocol 2
    and protocol 1 (nearest-support meeting) for ``structures``."""
    from SynPoLib.overlay import display_orientation, save_montage

    sub, lab = colin(cache), names()
    pictures.mkdir(parents=True, exist_ok=True)
    written = {}
    for s in structures:
        ref = sub.mask(lab[s])
        for protocol in ("p2", "p1"):
            if protocol == "p2":
                case = within_volume_case(s, sub.key, sub.labels, label=lab[s])
            else:
                case = fsmis_case(s, sub.key, sub.labels, sub.key, sub.labels, label=lab[s])
            supports = {t: ref[t] for t in case.support_slices}
            out = np.zeros(ref.shape, np.uint8)
            titles = {}
            for t in supports:
                out[t] = ref[t]
                titles[t] = f"{t} (support)"
            for step, _ in R.propagate_supports(sub.image, supports, min(case.scored), max(case.scored),
                                                sub.spacing, BASE):
                out[step.index] = step.mask
                titles[step.index] = (f"{step.index}: {overlap(step.mask, ref[step.index]).dice:.2f} "
                                      f"(copy {overlap(ref[case.assignment_map[step.index]], ref[step.index]).dice:.2f})"
                                      if step.index in case.assignment_map else str(step.index))
            path = pictures / f"{protocol}_{s}.png"
            save_montage(path, sub.array, out, AXIS, sorted(set(case.scored) | set(supports)), sub.bounds,
                         reference=ref, titles=titles, columns=8,
                         title=f"{s} {protocol}: registration + random walker (green) vs AAL (yellow); Dice (copy)",
                         orientation=display_orientation(sub.volume.direction, AXIS))
            written[f"{protocol} {s}"] = str(path)
    return written


# ---------------------------------------------------------------------- report


def fmt(x: float) -> str:
    return f"{x:.3f}"


def report(results: dict) -> str:
    lines = ["# Registration-guided propagation: measured tables (benchmarks/registration_study.py)", ""]
    lines += ["Colin27 + AAL, axial, 16 scoreboard structures; pooled Dice per structure, mean over structures; "
              "'won' = structures strictly above copy. Parameters: `RegistrationConfig()` defaults "
              "unless a row says otherwise; chosen on the LEFT 8 structures only.", ""]
    if "tune" in results:
        tune = results["tune"]
        lines += ["## Tuning (left 8 only)", "", "| variation | registration alone | + random walker |", "|---|---|---|"]
        base = tune["base"]
        lines.append(f"| defaults | {fmt(np.mean([base[s]['registration'] for s in LEFT]))} | "
                     f"{fmt(np.mean([base[s]['registration+walker'] for s in LEFT]))} |")
        for name, _ in REFINE_GRID:
            lines.append(f"| walker {name} | (same chain) | {fmt(np.mean([base[s][name] for s in LEFT]))} |")
        for label, per in tune.items():
            if label == "base":
                continue
            lines.append(f"| {label} | {fmt(np.mean([per[s]['registration'] for s in LEFT]))} | "
                         f"{fmt(np.mean([per[s]['registration+walker'] for s in LEFT]))} |")
        lines.append("")
    if "p2" in results:
        p2 = results["p2"]
        methods = [m for m in p2[SCOREBOARD_STRUCTURES[0]]]
        lines += ["## Protocol 2 (middle slice supports all other structure slices)", "",
                  "| method | mean (16) | won vs copy | left 8 | right 8 (untouched) |", "|---|---|---|---|---|"]
        for m in methods:
            allv = summarise(p2, [m])[m]
            left = np.mean([p2[s][m] for s in LEFT])
            right = np.mean([p2[s][m] for s in RIGHT])
            rwon = sum(p2[s][m] > p2[s]["copy"] for s in RIGHT)
            lines.append(f"| {m} | {fmt(allv['mean'])} | {allv.get('won', '-')}/16 | {fmt(left)} | "
                         f"{fmt(right)} ({rwon}/8 won) |")
        lines += ["", "Per structure:", "", "| structure | " + " | ".join(methods) + " |",
                  "|---|" + "---|" * len(methods)]
        for s in SCOREBOARD_STRUCTURES:
            lines.append(f"| {s} | " + " | ".join(fmt(p2[s][m]) for m in methods) + " |")
        sec = p2["_seconds"]
        lines += ["", f"Time per slice (one thread): registration {sec[R.REGISTRATION]:.3f} s, "
                      f"random walker {sec[R.REFINEMENT]:.3f} s.", ""]
    if "p1" in results:
        p1 = results["p1"]
        methods = list(p1[SCOREBOARD_STRUCTURES[0]])
        lines += ["## Protocol 1 (FSMIS: supports at 1/6, 1/2, 5/6; copy serves the protocol's thirds)", "",
                  "| method | mean (16) | won vs copy | left 8 | right 8 |", "|---|---|---|---|---|"]
        for m in methods:
            allv = summarise(p1, [m])[m]
            lines.append(f"| {m} | {fmt(allv['mean'])} | {allv.get('won', '-')}/16 | "
                         f"{fmt(np.mean([p1[s][m] for s in LEFT]))} | {fmt(np.mean([p1[s][m] for s in RIGHT]))} |")
        lines += ["", "| structure | " + " | ".join(methods) + " |", "|---|" + "---|" * len(methods)]
        for s in SCOREBOARD_STRUCTURES:
            lines.append(f"| {s} | " + " | ".join(fmt(p1[s][m]) for m in methods) + " |")
        lines.append("")
    if "qc" in results:
        qc = results["qc"]
        lines += ["## Quality control: 10 slices past each end, where the structure ends", "",
                  "Stop after 3 consecutive low slices (SynPoLib.volume.qc.ChainState). Signals: `cos_prior` = cosine "
                  "between the support prototype and the prototype under the propagated mask (soft > 0.5), "
                  "`cos_mask` = the same under the refined mask, `relative` = SynPoLib.volume.qc's relative "
                  "confidence (mean similarity in the refined mask / the support's own).", "",
                  "| signal | threshold | outside painted L8 | inside missed L8 | Dice range L8 | "
                  "outside painted R8 | inside missed R8 | Dice range R8 | Dice structure R8 |",
                  "|---|---|---|---|---|---|---|---|---|"]
        rows = [("none", None, 0.0)]
        rows += [("cos_prior", "cos_prior", t) for t in COSINE_THRESHOLDS]
        rows += [("cos_mask", "cos_mask", t) for t in COSINE_THRESHOLDS]
        rows += [("relative", "relative", t) for t in RELATIVE_THRESHOLDS]
        for label, signal, t in rows:
            lt, rt = qc_table(qc, LEFT, signal, t), qc_table(qc, RIGHT, signal, t)
            lines.append(f"| {label} | {'-' if signal is None else f'{t:g}'} | {lt['outside_painted']:.1f} | "
                         f"{lt['inside_missed']:.1f} | {fmt(lt['dice_range'])} | {rt['outside_painted']:.1f} | "
                         f"{rt['inside_missed']:.1f} | {fmt(rt['dice_range'])} | {fmt(rt['dice_inside'])} |")
        n_out = np.mean([qc_table(qc, [s], None, 0)["n_outside"] for s in SCOREBOARD_STRUCTURES])
        n_in = np.mean([qc_table(qc, [s], None, 0)["n_inside"] for s in SCOREBOARD_STRUCTURES])
        lines += ["", f"Per structure: {n_out:.1f} queried slices lie outside, {n_in:.1f} inside (support excluded).",
                  ""]
        chosen = qc_table(qc, SCOREBOARD_STRUCTURES, STOP_SIGNAL, BASE.stop_threshold)
        rel = qc_table(qc, SCOREBOARD_STRUCTURES, "relative", QualityConfig().stop_threshold)
        lines += ["Choice (LEFT 8 only): the signal and threshold with <= 2 outside slices painted and the "
                  "fewest inside slices missed.", "",
                  f"All 16, the defaults: cosine stop ({STOP_SIGNAL}) at {BASE.stop_threshold:g}: {chosen['outside_painted']:.1f} "
                  f"outside painted, {chosen['inside_missed']:.1f} inside missed, Dice over the range "
                  f"{fmt(chosen['dice_range'])}; relative-confidence stop at {QualityConfig().stop_threshold:g}: "
                  f"{rel['outside_painted']:.1f} / {rel['inside_missed']:.1f} / {fmt(rel['dice_range'])}.", ""]
        lines += [f"Per structure, {STOP_SIGNAL} at {BASE.stop_threshold:g}:", "",
                  "| structure | outside painted | inside missed | Dice range |", "|---|---|---|---|"]
        for s in SCOREBOARD_STRUCTURES:
            r = simulate_stop(qc[s]["rows"], STOP_SIGNAL, BASE.stop_threshold, QualityConfig().stop_after)
            lines.append(f"| {s} | {r['outside_painted']}/{r['n_outside']} | {r['inside_missed']}/{r['n_inside']} | "
                         f"{fmt(r['dice_range'])} |")
        lines.append("")
    if "cross" in results:
        lines += ["## Support in another volume (3-D affine, then the chain)", ""]
        for pair, res in results["cross"].items():
            per = res["per"]
            structs = list(per)
            methods = [m for m in per[structs[0]] if m not in ("mapped", "picked", "true_middle")]
            lines += [f"### Colin27 -> {pair} ({len(structs)} structures; affine {res['affine_seconds']:.0f} s)", "",
                      "Support: the middle structure slice of Colin27; scored: every query slice holding the "
                      "structure. Picked slice: the best prototype cosine within "
                      f"+-{START_SEARCH_MM:g} mm of the mapped slice.", "",
                      f"Built: {json.dumps(res['info'])}", "",
                      "| method | mean Dice | won vs copy-after-affine |", "|---|---|---|"]
            for m in methods:
                vals = [per[s][m] for s in structs]
                won = sum(per[s][m] > per[s]["copy-after-affine"] for s in structs)
                lines.append(f"| {m} | {fmt(np.mean(vals))} | {won}/{len(structs)} |")
            lines += ["", "| structure | " + " | ".join(methods) + " | mapped slice | picked | query middle |",
                      "|---|" + "---|" * (len(methods) + 3)]
            for s in structs:
                lines.append(f"| {s} | " + " | ".join(fmt(per[s][m]) for m in methods)
                             + f" | {per[s]['mapped']:.1f} | {per[s]['picked']} | {per[s]['true_middle']} |")
            lines.append("")
    if "perf" in results:
        p = results["perf"]
        lines += ["## Time and memory (one CPU thread)", "",
                  "| slices | registration s/slice | random walker s/slice | peak (tracemalloc) MB | "
                  "of which the output mask MB | the chain's own MB | RSS growth MB |", "|---|---|---|---|---|---|---|"]
        for k in ("x1", "x5"):
            r = p[k]
            lines.append(f"| {r['slices']} ({k}) | {r['per_slice'][R.REGISTRATION]:.3f} | "
                         f"{r['per_slice'][R.REFINEMENT]:.3f} | {r['tracemalloc_peak_mb']:.1f} | "
                         f"{r['output_mask_mb']:.1f} | {r['tracemalloc_peak_mb'] - r['output_mask_mb']:.1f} | "
                         f"{r['rss_growth_mb']:.1f} |")
        lines += ["", "The left thalamus's chain (both directions from its middle slice); x5: the same slab "
                      "resampled to 5 x as many (thinner) slices. Peak: numpy / Python allocations during the "
                      "chain (SimpleITK's own buffers are not traced; the RSS growth, each size in a fresh "
                      "process, is dominated by first-use library allocations).", "",
                  f"Stop signal: LiteMedSAM encoder {p['encoder_seconds']:.2f} s/slice (after a warm-up), cosine "
                  f"{p['cosine_seconds'] * 1000:.1f} ms/slice.", ""]
    return "\n".join(lines) + "\n"


PARTS = ("tune", "p2", "p1", "qc", "cross", "perf", "montage")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default=",".join(PARTS))
    ap.add_argument("--cache", type=Path, default=Path(os.environ.get("STUDY_CACHE", "/work/scratch11")))
    ap.add_argument("--work", type=Path, default=None, help="JSON results (default: CACHE/study)")
    ap.add_argument("--out", type=Path, default=None, help="markdown report")
    ap.add_argument("--pictures", type=Path, default=None, help="montage PNGs (default: CACHE/pictures)")
    ap.add_argument("--montage", default="Amygdala_L,Hippocampus_R,Thalamus_L,Amygdala_R")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--perf-child", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.perf_child is not None:
        print(json.dumps(perf_child(args.perf_child)))
        return 0
    work = args.work or args.cache / "study"
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for part in [p for p in args.parts.split(",") if p]:
        if part not in PARTS:
            raise SystemExit(f"unknown part {part!r}; choose from {', '.join(PARTS)}")
        path = work / f"{part}.json"
        if path.exists() and not args.fresh:
            results[part] = json.loads(path.read_text())
            continue
        log(f"== {part}")
        t = time.perf_counter()
        if part == "montage":
            res = part_montage(args.cache, args.pictures or args.cache / "pictures", args.montage.split(","))
        else:
            res = globals()[f"part_{part}"](args.cache)
        path.write_text(json.dumps(res, indent=1))
        results[part] = res
        log(f"== {part} done in {time.perf_counter() - t:.0f} s")
    text = report(results)
    if args.out:
        args.out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
