"""Registration-guided propagation of a soft mask along a slice axis (issue 11).

A labelled support slice is carried to its neighbours one slice at a time: the next
slice q (fixed) is registered with the previous slice p (moving) by SimpleITK's
diffeomorphic Demons on a crop around the previous mask, and the previous *soft* mask
is moved through the displacement field (linear interpolation, never thresholded
inside the chain). Each slice's output is the soft mask refined by scikit-image's
random walker, seeded inside the eroded mask and outside the dilated one; refined
masks are never fed back into the chain.

Where the structure ends, registration does not know: it moves the mask on forever.
:func:`prototype_cosine` is SynPo's own similarity (the backend's image embedding
averaged under the support mask, against the same average under the propagated mask),
and :class:`SynPoLib.volume.qc.ChainState` turns it into a stop after ``stop_after`` low
slices (the registration mode, :mod:`SynPoLib.volume.registration`).

Everything here is a pure function on numpy arrays (plus SimpleITK images built and
dropped inside). Lengths are in millimetres and converted with the in-plane pixel
spacing, so thick-slice and anisotropic volumes behave as 1 mm ones do. Registration
and the random walker are SimpleITK's and scikit-image's, not ours.

Numbers quoted beside defaults were measured on Colin27 + AAL (16 scoreboard
structures, axial, ``benchmarks/registration_study.py``; ``docs/registration-study.md``).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import (Callable, Collection, Dict, Hashable, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Tuple)

import numpy as np
from scipy import ndimage

from .config import AffineConfig, MeetingRule, RegistrationConfig
from .preprocess import apply_window
from .method.synergy import build_prototype, mask_to_grid

#: the two time-split keys of every :class:`ChainStep`
REGISTRATION = "registration"
REFINEMENT = "refinement"


# --------------------------------------------------------------------------- helpers


def normalise_slice(image: np.ndarray, bounds: Tuple[float, float]) -> np.ndarray:
    """A native slice in [0, 1] with the volume's one window (the encoder's grey levels)."""
    return apply_window(image, bounds).astype(np.float32) / np.float32(255.0)


def mm_to_pixels(length_mm: float, spacing: Sequence[float]) -> Tuple[float, float]:
    """A length in mm as (rows, cols) pixels for an in-plane (row, col) spacing."""
    row, col = (float(s) for s in spacing)
    if row <= 0 or col <= 0:
        raise ValueError(f"pixel spacing must be positive, got {tuple(spacing)}")
    return length_mm / row, length_mm / col


def ellipse(radius_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Structuring element: the disc of ``radius_mm`` on the pixel grid (an ellipse in
    pixels when the spacing is anisotropic); a single pixel below one pixel's size."""
    ry, rx = mm_to_pixels(radius_mm, spacing)
    ny, nx = int(np.floor(ry + 1e-6)), int(np.floor(rx + 1e-6))
    yy, xx = np.mgrid[-ny:ny + 1, -nx:nx + 1].astype(np.float64)
    inside = (yy / max(ry, 1e-9)) ** 2 + (xx / max(rx, 1e-9)) ** 2 <= 1.0 + 1e-9
    inside[ny, nx] = True
    return inside


def crop_box(mask: np.ndarray, margin_mm: float, spacing: Sequence[float]) -> Optional[Tuple[slice, slice]]:
    """The mask's bounding box grown by ``margin_mm`` a side, clipped; None if empty."""
    rows = np.flatnonzero(np.any(mask, axis=1))
    if rows.size == 0:
        return None
    cols = np.flatnonzero(np.any(mask, axis=0))
    my, mx = (int(np.ceil(m)) for m in mm_to_pixels(margin_mm, spacing))
    r0, r1 = max(0, rows[0] - my), min(mask.shape[0], rows[-1] + my + 1)
    c0, c1 = max(0, cols[0] - mx), min(mask.shape[1], cols[-1] + mx + 1)
    return slice(int(r0), int(r1)), slice(int(c0), int(c1))


def _image(array: np.ndarray, spacing: Sequence[float]):
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
    image.SetSpacing((float(spacing[1]), float(spacing[0])))  # SimpleITK: (x = col, y = row)
    return image


# ---------------------------------------------------------------- one chain step


class SliceField:
    """The displacement field from one slice to its neighbour, on a crop: computed once
    (:func:`register_slices`), it moves as many soft masks as lie in its crop
    (:meth:`warp`), so several structures segmented in one run share one registration."""

    def __init__(self, shape: Tuple[int, int], spacing: Sequence[float], box: Optional[Tuple[slice, slice]],
                 transform=None, reference=None) -> None:
        self.shape = tuple(int(n) for n in shape)
        self.spacing = tuple(float(s) for s in spacing)
        #: the crop the field covers (None: nothing to move, every warp is empty)
        self.box = box
        self._transform = transform
        self._reference = reference

    def warp(self, soft: np.ndarray) -> np.ndarray:
        """``soft`` (a float mask on the moving slice) moved onto the fixed slice by linear
        interpolation, clipped to [0, 1]; zero outside the crop."""
        import SimpleITK as sitk

        soft = np.asarray(soft, np.float32)
        if soft.shape != self.shape:
            raise ValueError(f"soft mask shape {soft.shape} differs from the field's {self.shape}")
        out = np.zeros(self.shape, np.float32)
        if self.box is None:
            return out
        warped = sitk.Resample(_image(soft[self.box], self.spacing), self._reference, self._transform,
                               sitk.sitkLinear, 0.0, sitk.sitkFloat32)
        out[self.box] = np.clip(sitk.GetArrayFromImage(warped), 0.0, 1.0)
        return out


def register_slices(fixed: np.ndarray, moving: np.ndarray, region: np.ndarray, spacing: Sequence[float],
                    cfg: RegistrationConfig = RegistrationConfig()) -> SliceField:
    """Diffeomorphic Demons of ``moving`` onto ``fixed`` on the crop around ``region``.

    ``fixed`` and ``moving`` are normalised slices of one volume (:func:`normalise_slice`),
    ``region`` a boolean mask on the moving slice: what is to be moved (for several
    structures, the union of their masks); the crop is its box grown by ``margin_mm``.
    ``spacing``: the in-plane (row, col) mm. An empty region gives a field that moves
    nothing.
    """
    import SimpleITK as sitk

    fixed = np.asarray(fixed, np.float32)
    region = np.asarray(region, bool)
    if fixed.shape != np.shape(moving) or region.shape != fixed.shape:
        raise ValueError(f"shapes differ: fixed {fixed.shape}, moving {np.shape(moving)}, mask {region.shape}")
    box = crop_box(region, cfg.margin_mm, spacing)
    if box is None:
        return SliceField(fixed.shape, spacing, None)
    f_img = _image(fixed[box], spacing)
    m_img = _image(np.asarray(moving, np.float32)[box], spacing)
    demons = sitk.DiffeomorphicDemonsRegistrationFilter()
    demons.SetNumberOfIterations(int(cfg.iterations))
    demons.SetSmoothDisplacementField(cfg.field_sigma_mm > 0)
    if cfg.field_sigma_mm > 0:
        sy, sx = mm_to_pixels(cfg.field_sigma_mm, spacing)
        demons.SetStandardDeviations((sx, sy))  # ITK: in pixels, per axis (x, y)
    field_image = demons.Execute(f_img, m_img)
    transform = sitk.DisplacementFieldTransform(sitk.Cast(field_image, sitk.sitkVectorFloat64))
    return SliceField(fixed.shape, spacing, box, transform, f_img)


def register_and_warp(fixed: np.ndarray, moving: np.ndarray, soft: np.ndarray, spacing: Sequence[float],
                      cfg: RegistrationConfig = RegistrationConfig()) -> np.ndarray:
    """Move one ``soft`` mask (lying on ``moving``) onto ``fixed``: :func:`register_slices`
    on its crop (``soft > threshold``), then :meth:`SliceField.warp`. Empty in, empty out."""
    soft = np.asarray(soft, np.float32)
    if soft.shape != np.shape(fixed):
        raise ValueError(f"shapes differ: fixed {np.shape(fixed)}, moving {np.shape(moving)}, soft {soft.shape}")
    return register_slices(fixed, moving, soft > cfg.threshold, spacing, cfg).warp(soft)


def walker_seeds(soft: np.ndarray, spacing: Sequence[float], cfg: RegistrationConfig = RegistrationConfig()
                 ) -> Tuple[np.ndarray, np.ndarray]:
    """(foreground, background) seeds: soft > threshold eroded by ``erosion_mm``, and
    everything outside it dilated by ``dilation_mm``."""
    inside = np.asarray(soft) > cfg.threshold
    fg = ndimage.binary_erosion(inside, ellipse(cfg.erosion_mm, spacing)) if cfg.erosion_mm > 0 else inside
    grown = ndimage.binary_dilation(inside, ellipse(cfg.dilation_mm, spacing)) if cfg.dilation_mm > 0 else inside
    return fg, ~grown


def refine_mask(image: np.ndarray, soft: np.ndarray, spacing: Sequence[float],
                cfg: RegistrationConfig = RegistrationConfig()) -> np.ndarray:
    """The slice's binary output: the random walker between the seeds of ``soft``.

    The walker runs on the crop around the mask (``margin_mm``); the result always
    holds the foreground seeds and never leaves the dilated mask. When the erosion
    leaves no foreground seed (a structure thinner than the element), ``soft >
    threshold`` is returned unrefined.
    """
    from skimage.segmentation import random_walker

    inside = np.asarray(soft) > cfg.threshold
    if not cfg.refine or not inside.any():
        return inside
    fg, bg = walker_seeds(soft, spacing, cfg)
    if not fg.any() or not bg.any():
        return inside
    box = crop_box(inside, cfg.margin_mm, spacing)
    labels = np.where(fg[box], 1, np.where(bg[box], 2, 0)).astype(np.int32)
    if not (labels == 0).any():
        return inside
    rel = np.asarray(spacing, np.float64) / float(min(spacing))  # isotropic: pixel units
    with warnings.catch_warnings():
        # cg_j's iterative solution overshoots [0, 1] by more than skimage's tolerance on
        # some slices; only the label with the largest probability is used, so the warning
        # says nothing a user can act on (and would print once per slice on the CLI).
        warnings.filterwarnings("ignore", message="The probability range is outside", category=UserWarning)
        result = random_walker(np.asarray(image, np.float64)[box], labels, beta=cfg.walker_beta,
                               mode=cfg.walker_mode, tol=cfg.walker_tol, spacing=rel)
    out = np.zeros(inside.shape, dtype=bool)
    out[box] = result == 1
    return out


def fuse_prior(soft: np.ndarray, backend_probability: Optional[np.ndarray], weight: float) -> np.ndarray:
    """(1 - weight) * soft prior + weight * the backend's mask probability."""
    if backend_probability is None or weight <= 0:
        return np.asarray(soft, np.float32)
    return ((1.0 - weight) * np.asarray(soft, np.float32)
            + weight * np.asarray(backend_probability, np.float32)).astype(np.float32)


# ------------------------------------------------------------------------ chains


@dataclass
class ChainStep:
    """One query slice of a chain."""

    index: int
    #: the registration prior, float32 in [0, 1] (what the chain carries on)
    soft: np.ndarray
    #: the slice's output: the refined binary mask
    mask: np.ndarray
    #: the support slice the chain started from
    support: int
    #: seconds: "registration" (Demons + warp) and "refinement" (random walker)
    seconds: Dict[str, float] = field(default_factory=dict)


#: the soft mask to refine for a slice, given (index, registration prior): the hook
#: through which a caller fuses the backend's mask (:func:`fuse_prior`)
PriorHook = Callable[[int, np.ndarray], np.ndarray]


#: the soft mask to refine for one of several structures: (key, index, registration prior)
KeyedPriorHook = Callable[[Hashable, int, np.ndarray], np.ndarray]


def propagate_chain(slices: Iterable[Tuple[int, np.ndarray]], start_image: np.ndarray, start_soft: np.ndarray,
                    spacing: Sequence[float], cfg: RegistrationConfig = RegistrationConfig(), *,
                    support: int = -1, prior_hook: Optional[PriorHook] = None,
                    refine: bool = True) -> Iterator[ChainStep]:
    """Walk a chain outward: yields a :class:`ChainStep` per ``(index, image)`` pulled.

    ``slices`` gives the normalised query slices in walking order (lazily: only the
    previous slice and its soft mask are held, so memory does not grow with the chain);
    ``start_image`` / ``start_soft`` are the support slice and its mask. Stop the walk
    by not asking for more (``break``). Once the soft mask has vanished every later
    slice is empty without registration. ``refine=False`` leaves ``mask`` as the prior
    thresholded (for a chain whose priors are blended and refined later).
    """
    hook = None if prior_hook is None else (lambda _key, index, soft: prior_hook(index, soft))
    for steps in propagate_chain_many(slices, start_image, {0: start_soft}, spacing, cfg, support=support,
                                      prior_hook=hook, refine=refine):
        yield steps[0]


def propagate_chain_many(slices: Iterable[Tuple[int, np.ndarray]], start_image: np.ndarray,
                         start_softs: Mapping[Hashable, np.ndarray], spacing: Sequence[float],
                         cfg: RegistrationConfig = RegistrationConfig(), *, support: int = -1,
                         prior_hook: Optional[KeyedPriorHook] = None, refine: bool = True,
                         live: Optional[Callable[[], Collection[Hashable]]] = None
                         ) -> Iterator[Dict[Hashable, ChainStep]]:
    """:func:`propagate_chain` for several structures walking the same slices: yields
    key -> :class:`ChainStep` per slice pulled.

    The displacement field between two slices does not depend on the structure: it is
    computed once per pair of slices, on the crop around the union of the walking
    structures' masks (:func:`register_slices`), and moves every structure's soft mask;
    each is refined on its own. With one structure this is :func:`propagate_chain`
    exactly. ``live()`` names the structures still walking (default: all); the others
    are neither moved nor refined (their crop leaves the union). Each step's
    "registration" seconds are its share of the field plus its own warp.
    """
    previous = np.asarray(start_image, np.float32)
    softs = {key: np.asarray(soft, np.float32) for key, soft in start_softs.items()}
    for index, image in slices:
        keys = [key for key in softs if live is None or key in live()]
        if not keys:
            return
        image = np.asarray(image, np.float32)
        t0 = time.perf_counter()
        region = np.zeros(image.shape, dtype=bool)
        for key in keys:
            region |= softs[key] > cfg.threshold
        moved = register_slices(image, previous, region, spacing, cfg)
        share = (time.perf_counter() - t0) / len(keys)
        steps: Dict[Hashable, ChainStep] = {}
        for key in keys:
            t1 = time.perf_counter()
            soft = softs[key] = moved.warp(softs[key])
            t2 = time.perf_counter()
            if refine:
                prior = soft if prior_hook is None else prior_hook(key, index, soft)
                mask = refine_mask(image, prior, spacing, cfg)
            else:
                mask = soft > cfg.threshold
            t3 = time.perf_counter()
            steps[key] = ChainStep(index=index, soft=soft, mask=mask, support=support,
                                   seconds={REGISTRATION: share + t2 - t1, REFINEMENT: t3 - t2})
        yield steps
        previous = image


@dataclass(frozen=True)
class Leg:
    """One direction of a chain from one support slice over consecutive slices."""

    support: int
    #: slices in walking order (outward from the support)
    slices: Tuple[int, ...]
    #: True for the outermost legs (beyond the first or last support): the stop
    #: signal applies there; inner legs end at a neighbouring support's territory
    outward: bool
    #: the support at the far end of an inner leg (blending), else None
    partner: Optional[int] = None


def plan_legs(supports: Sequence[int], first: int, last: int,
              rule: MeetingRule = MeetingRule.NEAREST) -> List[Leg]:
    """The legs that cover slices ``first..last`` (inclusive) from sorted ``supports``.

    NEAREST: between neighbouring supports a and b each slice goes to the nearer one
    (ties to a), so the gap is split and every slice has one leg. BLEND: both legs
    cross the whole gap (partner set); the caller blends them (:func:`blend_weight`).
    """
    sup = sorted(set(int(s) for s in supports))
    if not sup:
        raise ValueError("give at least one support slice")
    legs = [Leg(sup[0], tuple(range(sup[0] - 1, first - 1, -1)), outward=True)]
    for a, b in zip(sup[:-1], sup[1:]):
        gap = list(range(a + 1, b))
        if rule == MeetingRule.NEAREST:
            mid = (a + b) // 2  # slices <= mid are at least as near to a
            legs.append(Leg(a, tuple(q for q in gap if q <= mid), outward=False))
            legs.append(Leg(b, tuple(q for q in reversed(gap) if q > mid), outward=False))
        else:
            legs.append(Leg(a, tuple(gap), outward=False, partner=b))
            legs.append(Leg(b, tuple(reversed(gap)), outward=False, partner=a))
    legs.append(Leg(sup[-1], tuple(range(sup[-1] + 1, last + 1)), outward=True))
    return [leg for leg in legs if leg.slices]


def blend_weight(index: int, support: int, partner: int) -> float:
    """Weight of ``support``'s chain at ``index`` between it and ``partner``: 1 at the
    support, 0 at the partner, linear in slice distance."""
    span = abs(partner - support)
    return 1.0 - abs(index - support) / span if span else 1.0


def blend_soft(soft_a: np.ndarray, weight_a: float, soft_b: np.ndarray) -> np.ndarray:
    """weight_a * soft_a + (1 - weight_a) * soft_b."""
    return (weight_a * np.asarray(soft_a, np.float32)
            + (1.0 - weight_a) * np.asarray(soft_b, np.float32)).astype(np.float32)


class HeldSoft:
    """A soft mask kept for later (the first chain of a blended gap), cropped to where it
    is non-zero: the held chain costs the structure's area per slice, not the slice's."""

    def __init__(self, soft: np.ndarray) -> None:
        soft = np.asarray(soft, np.float32)
        self.shape = soft.shape
        rows = np.flatnonzero(np.any(soft > 0, axis=1))
        if rows.size == 0:
            self.box, self.values = None, np.zeros((0, 0), np.float32)
            return
        cols = np.flatnonzero(np.any(soft > 0, axis=0))
        self.box = (slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
        self.values = soft[self.box].copy()

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)

    def array(self) -> np.ndarray:
        out = np.zeros(self.shape, np.float32)
        if self.box is not None:
            out[self.box] = self.values
        return out


def propagate_supports(get_image: Callable[[int], np.ndarray], support_masks: Mapping[int, np.ndarray],
                       first: int, last: int, spacing: Sequence[float],
                       cfg: RegistrationConfig = RegistrationConfig(), *,
                       keep_going: Optional[Callable[[ChainStep, Leg], bool]] = None,
                       prior_hook: Optional[PriorHook] = None,
                       before_slice: Optional[Callable[[int], None]] = None,
                       legs: Optional[Sequence[Leg]] = None) -> Iterator[Tuple[ChainStep, Leg]]:
    """Every slice ``first..last`` but the supports, from one or more support slices.

    ``get_image(i)`` returns slice i normalised (:func:`normalise_slice`);
    ``support_masks`` maps each support slice to its mask (binary, or soft in [0, 1]).
    Yields ``(step, leg)`` leg by leg (:func:`plan_legs`, rule ``cfg.meeting``, unless
    ``legs`` gives them). ``keep_going(step, leg)`` returning False ends that leg there
    (auto-stop, typically on outward legs only); ``before_slice(index)`` is called
    before every registration, also on the legs whose slices are held and not yet
    yielded; raising from either (a cancel) ends everything.

    With BLEND, a gap's first leg is walked with its soft masks held (cropped to where
    they are non-zero, :class:`HeldSoft`), then the second leg yields the blended,
    refined slices; memory grows with the structure's area times the largest gap
    between supports, not with the volume.
    """
    go = None if keep_going is None else (lambda step, leg, _key: keep_going(step, leg))
    hook = None if prior_hook is None else (lambda _key, index, soft: prior_hook(index, soft))
    for steps, leg in propagate_supports_many(get_image, {0: support_masks}, first, last, spacing, cfg,
                                              keep_going=go, prior_hook=hook, before_slice=before_slice,
                                              legs=legs):
        yield steps[0], leg


def propagate_supports_many(get_image: Callable[[int], np.ndarray],
                            support_masks: Mapping[Hashable, Mapping[int, np.ndarray]],
                            first: int, last: int, spacing: Sequence[float],
                            cfg: RegistrationConfig = RegistrationConfig(), *,
                            keep_going: Optional[Callable[[ChainStep, Leg, Hashable], bool]] = None,
                            prior_hook: Optional[KeyedPriorHook] = None,
                            before_slice: Optional[Callable[[int], None]] = None,
                            legs: Optional[Sequence[Leg]] = None
                            ) -> Iterator[Tuple[Dict[Hashable, ChainStep], Leg]]:
    """:func:`propagate_supports` for several structures labelled on the same support
    slices (``support_masks``: key -> support slice -> mask), in lockstep: one field per
    pair of slices moves them all (:func:`propagate_chain_many`). Yields (key -> step,
    leg) per slice; ``keep_going(step, leg, key)`` returning False ends that structure's
    leg, and the leg ends when no structure walks it any more.
    """
    keys = list(support_masks)
    if not keys:
        return
    slices0 = sorted(support_masks[keys[0]])
    if any(sorted(support_masks[k]) != slices0 for k in keys):
        raise ValueError("structures walked together must share their support slices")
    if legs is None:
        legs = plan_legs(slices0, first, last, cfg.meeting)

    def stream(leg: Leg):
        for q in leg.slices:
            if before_slice is not None:
                before_slice(q)
            yield q, get_image(q)

    held: Dict[Hashable, Dict[int, HeldSoft]] = {}
    for leg in legs:
        s = leg.support
        start_image = get_image(s)
        starts = {k: np.asarray(support_masks[k][s], np.float32) for k in keys}
        if leg.partner is not None and leg.partner > s:
            # first leg of a blended gap: hold its priors, yield nothing yet
            held = {k: {} for k in keys}
            for steps in propagate_chain_many(stream(leg), start_image, starts, spacing, cfg, support=s,
                                              refine=False):
                for k, step in steps.items():
                    held[k][step.index] = HeldSoft(step.soft)
            continue
        walking = set(keys)
        for steps in propagate_chain_many(stream(leg), start_image, starts, spacing, cfg, support=s,
                                          prior_hook=None if leg.partner is not None else prior_hook,
                                          refine=leg.partner is None, live=lambda: walking):
            if leg.partner is not None:
                for k, step in steps.items():
                    t = time.perf_counter()
                    other = held[k].pop(step.index).array()
                    w = blend_weight(step.index, s, leg.partner)
                    step.soft = blend_soft(step.soft, w, other)
                    prior = step.soft if prior_hook is None else prior_hook(k, step.index, step.soft)
                    step.mask = refine_mask(get_image(step.index), prior, spacing, cfg)
                    step.seconds[REFINEMENT] = time.perf_counter() - t
            yield steps, leg
            if keep_going is not None:
                for k, step in steps.items():
                    if not keep_going(step, leg, k):
                        walking.discard(k)
            if not walking:
                break
        held = {}


# ------------------------------------------------------------------ stop signal


def support_prototype(features: np.ndarray, mask_roi: np.ndarray, grid_threshold: float = 0.5) -> np.ndarray:
    """Unit prototype of the backend's features (C, h, w) under a mask on the ROI:
    SynPo's support prototype (mean of unit feature vectors, :mod:`SynPoLib.synergy`)."""
    grid = mask_to_grid(mask_roi, features.shape[1:], grid_threshold)
    vector = build_prototype(features.astype(np.float32, copy=False), grid).vector
    return vector / max(float(np.linalg.norm(vector)), 1e-8)


def prototype_cosine(prototype: np.ndarray, features: np.ndarray, mask_roi: np.ndarray,
                     grid_threshold: float = 0.5) -> float:
    """Cosine between a support prototype and the prototype under ``mask_roi`` on a
    query slice's features; -inf for an empty mask (a chain that died is "low")."""
    if not np.any(mask_roi):
        return float("-inf")
    return float(support_prototype(features, mask_roi, grid_threshold) @ prototype)


# ------------------------------------------------------------- another volume


def _mattes(cfg: AffineConfig):
    import SimpleITK as sitk

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=int(cfg.bins))
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(float(cfg.sampling), int(cfg.seed))
    method.SetInterpolator(sitk.sitkLinear)
    return method


def affine_start(f_img, m_img, cfg: AffineConfig = AffineConfig()):
    """(transform, name): where the affine optimisation starts.

    Two starts, the one with the better Mattes mutual information kept: the volumes as
    they are placed ("physical": two scans of one scanner session, or two images in one
    template space, start aligned) and their centres of mass superposed ("moments":
    volumes placed anywhere). A start under which the volumes do not overlap is skipped.
    """
    import SimpleITK as sitk

    moments = sitk.CenteredTransformInitializer(f_img, m_img, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    physical = sitk.AffineTransform(3)
    physical.SetCenter(f_img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2.0 for n in f_img.GetSize()]))
    scores = {}
    for name, transform in (("physical", physical), ("moments", moments)):
        evaluator = _mattes(cfg)
        evaluator.SetInitialTransform(transform, inPlace=False)
        try:
            scores[name] = float(evaluator.MetricEvaluate(f_img, m_img))
        except RuntimeError:  # no overlap: too many samples fall outside
            continue
    if not scores:
        return moments, "moments"
    best = min(scores, key=scores.get)  # Mattes MI is negated: lower is better
    return (physical if best == "physical" else moments), best


#: voxels a side every pyramid level keeps: SimpleITK's recursive Gaussian refuses fewer
MIN_LEVEL_VOXELS = 4


def pyramid_levels(smallest_side: int, cfg: AffineConfig = AffineConfig()) -> List[Tuple[int, float]]:
    """(shrink, smoothing mm) of the configured pyramid levels a volume whose thinnest
    side has ``smallest_side`` voxels can take: a thin slab skips the coarse levels,
    and one under :data:`MIN_LEVEL_VOXELS` voxels thick takes none."""
    return [(int(shrink), float(sigma)) for shrink, sigma in zip(cfg.shrink, cfg.smoothing_mm)
            if smallest_side // int(shrink) >= MIN_LEVEL_VOXELS]


def register_affine(fixed, moving, cfg: AffineConfig = AffineConfig(),
                    abort: Optional[Callable[[], bool]] = None, report: Optional[dict] = None):
    """The affine transform (SimpleITK, fixed -> moving physical points) that best aligns
    ``moving`` (the support :class:`SynPoLib.io.Volume`) with ``fixed`` (the query):
    the better of two starts (:func:`affine_start`), Mattes MI, regular-step gradient
    descent, a pyramid.

    ``abort()`` is asked at every optimiser iteration; True stops the registration
    there and the function returns None (the caller reports the cancel). ``report``,
    a dict, receives the start's name ("start") and the final metric ("metric"), and
    "skipped" when a volume is too thin for any pyramid level (:func:`pyramid_levels`):
    then the start itself is returned."""
    import SimpleITK as sitk

    f_img = sitk.Cast(fixed.to_image(), sitk.sitkFloat32)
    m_img = sitk.Cast(moving.to_image(), sitk.sitkFloat32)
    initial, start = affine_start(f_img, m_img, cfg)
    levels = pyramid_levels(min(f_img.GetSize() + m_img.GetSize()), cfg)
    if not levels:
        # a slab of 1-3 slices: no 3-D affine can be fitted through it (SimpleITK's
        # smoothing needs 4 voxels a side), so the better start is the answer
        if report is not None:
            report.update(start=start, metric=float("nan"), skipped=f"a volume is under {MIN_LEVEL_VOXELS} voxels "
                                                                     "thick: the volumes' placement is kept")
        return initial
    method = _mattes(cfg)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=cfg.learning_rate, minStep=cfg.min_step,
                                                    numberOfIterations=int(cfg.iterations))
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([shrink for shrink, _ in levels])
    method.SetSmoothingSigmasPerLevel([sigma for _, sigma in levels])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=True)
    if abort is not None:
        def check() -> None:
            if abort():
                method.Abort()
        method.AddCommand(sitk.sitkIterationEvent, check)
    try:
        method.Execute(f_img, m_img)
    except RuntimeError:
        if abort is not None and abort():
            return None
        raise
    if abort is not None and abort():
        return None
    if report is not None:
        report.update(start=start, metric=float(method.GetMetricValue()))
    return initial


def map_support_mask(mask: np.ndarray, support_slice: int, axis: int, support, query, transform) -> np.ndarray:
    """The support slice's mask copied to every slice of the support volume (a prism
    along ``axis``), moved onto the query's grid through ``transform`` (linear): a soft
    float32 volume of the query's shape. Copy-after-affine is this > 0.5."""
    import SimpleITK as sitk

    mask = np.asarray(mask, np.float32)
    shape = support.array.shape
    prism = np.broadcast_to(np.expand_dims(mask, axis), shape).astype(np.float32)
    moved = sitk.Resample(support.to_image(prism), query.to_image(np.zeros(query.array.shape, np.float32)),
                          transform, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    return np.clip(sitk.GetArrayFromImage(moved), 0.0, 1.0)


def affine_matrix(transform) -> np.ndarray:
    """The 4 x 4 matrix of an affine SimpleITK transform (physical point -> point),
    read off the images of four points (exact for any affine transform)."""
    base = np.asarray(transform.TransformPoint((0.0, 0.0, 0.0)), np.float64)
    matrix = np.eye(4)
    matrix[:3, 3] = base
    for axis in range(3):
        unit = [0.0, 0.0, 0.0]
        unit[axis] = 1.0
        matrix[:3, axis] = np.asarray(transform.TransformPoint(tuple(unit)), np.float64) - base
    return matrix


def map_support_slice(mask: np.ndarray, support_slice: int, axis: int, support, query, transform,
                      query_slice: int) -> np.ndarray:
    """One query slice of :func:`map_support_mask` (the same values, as SimpleITK's
    linear resampling gives them), from the support slice and the two volumes'
    geometry alone: a few slices of memory, whatever the volumes' size.

    ``transform`` must be affine (:func:`register_affine`'s, or the identity). Each
    query pixel goes through ``transform`` into the support volume; inside the support
    volume along ``axis`` (half a slice beyond its ends, as SimpleITK counts) it takes
    the support mask bilinearly in plane, edges replicated; elsewhere 0.
    """
    mask = np.asarray(mask, np.float32)
    shape = [int(v) for v in query.array.shape]
    plane = [a for a in range(3) if a != axis]
    rows, cols = np.mgrid[0:shape[plane[0]], 0:shape[plane[1]]].astype(np.float64)
    index = np.zeros((3, rows.size))  # array order (k, j, i)
    index[axis] = float(query_slice)
    index[plane[0]], index[plane[1]] = rows.ravel(), cols.ravel()
    to_support = np.linalg.inv(support.ijk_to_lps) @ affine_matrix(transform) @ query.ijk_to_lps
    moved = (to_support @ np.vstack([index[::-1], np.ones(rows.size)]))[:3][::-1]  # support (k, j, i)
    s_shape = support.array.shape
    inside = np.ones(rows.size, bool)
    for a in range(3):
        inside &= (moved[a] >= -0.5) & (moved[a] <= s_shape[a] - 0.5)
    s_plane = [a for a in range(3) if a != axis]
    values = ndimage.map_coordinates(mask, [moved[s_plane[0]], moved[s_plane[1]]], order=1, mode="nearest")
    out = np.where(inside, values, 0.0).reshape(rows.shape).astype(np.float32)
    return np.clip(out, 0.0, 1.0)


def mapped_slice(mask: np.ndarray, support_slice: int, axis: int, support, query, transform) -> float:
    """The query slice index (continuous, along ``axis``) where the centroid of the support
    slice's mask lands through the inverse of ``transform``."""
    rows, cols = np.nonzero(np.asarray(mask))
    if rows.size == 0:
        raise ValueError("support mask is empty")
    index = [0.0, 0.0, 0.0]  # array order (k, j, i)
    index[axis] = float(support_slice)
    index[[a for a in range(3) if a != axis][0]] = float(rows.mean())
    index[[a for a in range(3) if a != axis][1]] = float(cols.mean())
    point = (support.ijk_to_lps @ np.append(index[::-1], 1.0))[:3]
    moved = np.asarray(transform.GetInverse().TransformPoint(tuple(float(v) for v in point)))
    q_index = (np.linalg.inv(query.ijk_to_lps) @ np.append(moved, 1.0))[:3][::-1]
    return float(q_index[axis])


def start_candidates(mapped: float, n_slices: int, slice_spacing_mm: float,
                     cfg: AffineConfig = AffineConfig()) -> List[int]:
    """Query slices within ``cfg.start_search_mm`` of the mapped slice (the mapped slice
    alone at 0), clipped to the volume; score each with :func:`prototype_cosine` under
    the mapped mask and pass the scores to :func:`choose_start_slice`."""
    centre = int(round(mapped))
    radius = int(np.floor(cfg.start_search_mm / float(slice_spacing_mm) + 1e-9))
    return [q for q in range(centre - radius, centre + radius + 1) if 0 <= q < n_slices]


def choose_start_slice(scores: Mapping[int, float], mapped: float) -> int:
    """The candidate start slice with the highest prototype cosine (ties: the nearest to
    the mapped slice); the mapped slice itself when there is no candidate."""
    finite = {q: v for q, v in scores.items() if np.isfinite(v)}
    if not finite:
        return int(round(mapped))
    return int(max(finite, key=lambda q: (finite[q], -abs(q - mapped))))


__all__ = [
    "AffineConfig", "ChainStep", "HeldSoft", "KeyedPriorHook", "Leg", "MeetingRule", "PriorHook", "REFINEMENT",
    "REGISTRATION", "RegistrationConfig", "SliceField", "affine_matrix", "affine_start", "blend_soft", "blend_weight",
    "choose_start_slice", "crop_box", "ellipse", "fuse_prior", "map_support_mask", "map_support_slice",
    "mapped_slice", "mm_to_pixels", "normalise_slice", "plan_legs", "propagate_chain", "propagate_chain_many",
    "propagate_supports", "propagate_supports_many", "prototype_cosine", "refine_mask", "register_affine",
    "register_and_warp", "register_slices", "start_candidates", "support_prototype", "walker_seeds",
]
