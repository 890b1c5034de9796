"""Typed configuration of the SynPo method.

Every default names its source in the comment beside it:

- [P]  the SynPo paper (Boosting Training-Free Few-Shot Medical Segmentation via
       High-Quality Negative Prompts, MICCAI 2025);
- [A]  the first author's later public SAM2 fork, where the paper is silent;
- [G]  our own choice, with the reason.

Nothing in the method reads a buried literal: a value that changes the result lives
here. README's "The method, in this implementation" maps the steps to the modules.
"""

from __future__ import annotations

import dataclasses
import enum
import math
import numbers
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Tuple, Union

from .errors import InputError


#: segment colour when none is given: Slicer's "tissue" green                      [G]
DEFAULT_COLOR = (0.5, 0.68, 0.5)


class PrototypeForm(str, enum.Enum):
    """How the averaged cosine similarity to the support foreground is formed."""

    #: mean_i cos(F(x), T_i) = <F(x)/|F(x)|, mean_i T_i/|T_i|>   [P] eq. 2 + average pooling
    PAPER = "paper"
    #: cos(F(x), normalise(mean_i T_i))                              [A]
    AUTHOR = "author"


class PromptStrategy(str, enum.Enum):
    """What the prompt stage gives the mask decoder.

    SAM2 follows the paper's point prompts. LiteMedSAM was fine-tuned with box prompts
    only and ignores points (measured: Dice 0.011 with points alone on 6 AAL structures,
README), so it needs a box derived from the
    confidence map; each backend names the variant that measured best.
    """

    #: the paper's positive + negative points                              [P]
    POINTS = "points"
    #: box around the confident region that holds the positive points     [G]
    BOX = "box"
    #: that box plus the paper's points                                   [G]
    BOX_POINTS = "box+points"
    #: box with the support mask's size, centred on the positive points   [G]
    SUPPORT_BOX = "support-box"
    #: box plus the negative points only                                   [G]
    BOX_NEGATIVES = "box+negatives"


class PointMethod(str, enum.Enum):
    """How prompt points are picked from the confidence map."""

    #: the Point Selection Module: K-means positives, Gaussian-interval negatives   [P]
    SYNPO = "synpo"
    #: PerSAM-style: one positive at the maximum, one negative at the minimum
    #: (the "naive negatives" of paper Table 3; also the ablation rows without PSM)
    EXTREMES = "extremes"


class RefinePrompt(str, enum.Enum):
    """How a refine round re-prompts the decoder with the kept component."""

    #: the same prompts plus the component's low-res logits as mask input          [P]
    MASK = "mask"
    #: the component's box (grown by the box margin) replaces the box prompt; for
    #: decoders trained on boxes only, which mask inputs derail (LiteMedSAM)        [G]
    BOX = "box"


class MaskChoice(str, enum.Enum):
    """How one of SAM's multimask outputs is chosen."""

    #: highest mean similarity of SAM features inside the mask to the prototype  [A]
    PROTOTYPE = "prototype"
    #: highest predicted IoU (SAM's own choice)
    IOU = "iou"


@dataclass(frozen=True)
class WindowConfig:
    """One intensity window for the whole volume, mapped to [0, 255]."""

    #: "auto" picks CT when the volume has values below -500 (air in HU), else MRI [G]
    modality: str = "auto"
    #: CT window in HU: the FSMIS protocol's abdominal window [-125, 275]            [P]
    ct_window: Tuple[float, float] = (-125.0, 275.0)
    #: MRI window as volume percentiles, robust to a few extreme voxels              [G]
    mri_percentiles: Tuple[float, float] = (0.5, 99.5)
    #: explicit (low, high) that overrides both; Slicer passes its display window: what the user sees  [G]
    window: Optional[Tuple[float, float]] = None

    def __post_init__(self) -> None:
        if self.modality not in ("auto", "ct", "mri"):
            raise ValueError(f"modality must be 'auto', 'ct' or 'mri', got {self.modality!r}")
        for name in ("ct_window", "window"):
            pair = getattr(self, name)
            if pair is not None and not _finite(pair[0]) < _finite(pair[1]):
                raise ValueError(f"{name} ({pair[0]}, {pair[1]}): LOW must be below HIGH")
        low, high = self.mri_percentiles
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"mri_percentiles ({low}, {high}) must satisfy 0 <= LOW < HIGH <= 100")


@dataclass(frozen=True)
class SynergyConfig:
    """Confidence Map Synergy Module (CMSM): how the two backbones' similarity maps are fused."""

    #: weight of S_sam * S_dino                                                      [P]
    delta_sd: float = 0.8
    #: weight of S_sam                                                               [P]
    delta_s: float = 0.1
    #: weight of S_dino                                                              [P]
    delta_d: float = 0.1
    prototype: PrototypeForm = PrototypeForm.PAPER  # [P]; AUTHOR form is [A]
    #: support mask to feature grid: bilinear resize then this threshold             [A]
    mask_threshold: float = 0.5

    def __post_init__(self) -> None:
        if min(self.delta_sd, self.delta_s, self.delta_d) < 0:
            raise ValueError("synergy deltas must be >= 0")
        total = self.delta_sd + self.delta_s + self.delta_d
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"synergy deltas must sum to 1, got {total:.6g}")
        if not 0.0 < self.mask_threshold < 1.0:
            raise ValueError("mask_threshold must lie in (0, 1)")


@dataclass(frozen=True)
class PointConfig:
    """Point Selection Module (PSM): positive and negative prompt points from the map."""

    #: number of positive points (the author uses 2-3)                               [A]
    n_positive: int = 3
    #: clustering scale for positives: top gamma1 * Kp pixels are clustered          [A]
    gamma1: int = 20
    #: number of negative points                                                     [A]
    n_negative: int = 4
    #: at most gamma2 * Kn negative candidates are clustered                         [A]
    gamma2: int = 20
    #: negative interval [mu - alpha*sigma, mu - beta*sigma]; paper's best            [P]
    alpha: float = 1.0
    beta: float = -0.5
    #: widen an empty interval by this many sigma per step ...                       [G]
    widen_step: float = 0.25
    #: ... at most this many steps, then go on with positives only (and report it)   [G]
    widen_max_steps: int = 8
    #: drop negative candidates nearer a positive centre than the largest distance
    #: between positive centres                                                      [A] (optional)
    exclude_near_positives: bool = False
    #: seed of K-means and of candidate subsampling: same input, same points         [G]
    seed: int = 0
    method: PointMethod = PointMethod.SYNPO  # [P]
    #: weight the map used for positives (and a derived box) by a Gaussian around the
    #: support mask's centroid, sigma = this x the support box's diagonal; None: off.
    #: Negatives keep the raw map, so the Gaussian interval stays meaningful.       [G]
    location_prior: Optional[float] = None

    def __post_init__(self) -> None:
        if self.n_positive < 1:
            raise ValueError("n_positive must be >= 1")
        if self.n_negative < 0:
            raise ValueError("n_negative must be >= 0")
        if self.gamma1 < 1 or self.gamma2 < 1:
            raise ValueError("gamma1 and gamma2 must be >= 1")
        if self.alpha < self.beta:
            raise ValueError(
                f"negative interval is empty by construction: alpha ({self.alpha}) < beta ({self.beta})"
            )
        if not self.widen_step > 0 or self.widen_max_steps < 0:
            raise ValueError("widen_step must be > 0 and widen_max_steps >= 0")
        if self.seed < 0:
            raise ValueError("seed must be >= 0")
        if self.location_prior is not None and not self.location_prior > 0:
            raise ValueError("location_prior must be > 0 (or null: off)")


@dataclass(frozen=True)
class RefineConfig:
    """Noise-aware Refine Module (NRM): keep the most support-like part and re-prompt."""

    #: refine rounds; 0 disables the module                                          [G]
    rounds: int = 2
    #: side of the square structuring element of the opening                         [G]
    opening_size: int = 5
    opening_iterations: int = 1  # [G]
    #: 8-connectivity for components                                                 [G]
    connectivity: int = 8
    #: logit written outside the kept component in the mask prompt: strongly "out"  [G]
    outside_logit: float = -20.0
    #: SAM's documented advice for a mask-input round is a single mask               [G]
    multimask: bool = False
    prompt: RefinePrompt = RefinePrompt.MASK  # [P]
    #: after the last round, keep only the best-scoring component of the mask       [G]
    keep_component: bool = False

    def __post_init__(self) -> None:
        if self.rounds < 0:
            raise ValueError("rounds must be >= 0")
        if self.connectivity not in (4, 8):
            raise ValueError("connectivity must be 4 or 8")
        if self.opening_size < 1:
            raise ValueError("opening_size must be >= 1")
        if self.opening_iterations < 0:
            raise ValueError("opening_iterations must be >= 0")


@dataclass(frozen=True)
class PromptConfig:
    """What the decoder is prompted with, and how its masks are chosen."""

    strategy: PromptStrategy = PromptStrategy.POINTS  # [P]; the lite preset uses a box
    #: ask the decoder for its 3 masks and choose one                                [P]
    multimask: bool = True
    #: when the prompt holds more points than the decoder's multimask tokens were
    #: trained for (``Backend.multimask_max_points``; sam2 1.1.0's
    #: ``multimask_max_pt_num`` is 1, and sam2 advises one mask for several points),
    #: also decode one mask from the same embedding: the prototype score chooses
    #: among the 3 + 1 (docs/gpu-and-weights.md, "Decoding")                      [G]
    single_mask_too: bool = True
    mask_choice: MaskChoice = MaskChoice.PROTOTYPE  # [A]
    #: a box's region: pixels of the synergy map at or above this quantile of the
    #: map, connected to the positive points                                         [G]
    box_quantile: float = 0.97
    #: keep only the most confident of the regions holding positives               [G]
    box_single_region: bool = True
    #: extra margin around a derived box, as a fraction of its side                  [G]
    box_margin: float = 0.1
    #: margin of the support-box strategy, as a fraction of the support box's side [G]
    support_box_margin: float = 0.0
    #: cap on a derived box's side as a multiple of the support mask's box side     [G]
    box_max_scale: float = 2.0

    def __post_init__(self) -> None:
        if not 0.0 < self.box_quantile < 1.0:
            raise ValueError("box_quantile must lie in (0, 1)")
        if min(self.box_margin, self.support_box_margin) < 0:
            raise ValueError("box margins must be >= 0")
        if not self.box_max_scale >= 1.0:
            raise ValueError("box_max_scale must be >= 1")


@dataclass(frozen=True)
class GeometryConfig:
    """How a native slice becomes the method's R x R square and back."""

    #: ROI side R                                                                    [P] 256
    roi_size: int = 256
    #: keep the slice's physical aspect ratio (pixel spacing included) by padding to
    #: a square before resizing; False stretches as the spec's plain resize does     [G]
    keep_aspect: bool = True

    def __post_init__(self) -> None:
        # below 16 pixels a ROI holds less than one feature cell of any backbone
        if not 16 <= self.roi_size <= 4096:
            raise ValueError(f"roi_size must lie in 16..4096, got {self.roi_size}")


@dataclass(frozen=True)
class QualityConfig:
    """Per-slice acceptance and 3D quality control: a product must decide which slices
    hold the target; the paper only segments slices known to hold it."""

    #: reject a slice whose chosen mask's prototype similarity falls below this
    #: (None: paint every slice, as the paper does on organ slices)                  [G]
    min_score: Optional[float] = None
    #: masks smaller than this many native pixels count as empty                     [G]
    min_pixels: int = 0
    #: stop going further from the support once `stop_after` consecutive slices are
    #: below the calibrated confidence threshold (or empty); those slices are not
    #: painted and the rest of that direction is not segmented                       [G]
    auto_stop: bool = True
    stop_after: int = 3  # [G]
    #: the threshold, as a fraction of the support slice's own confidence            [G]
    stop_threshold: float = 0.85
    #: after all slices, keep only the 3D connected part that touches the support
    #: (or the largest part when the query is another volume)                       [G]
    largest_component: bool = False
    #: flag a slice whose area changes more than this factor from the previous one   [G]
    area_jump: float = 2.0

    def __post_init__(self) -> None:
        if self.stop_after < 1:
            raise ValueError("stop_after must be >= 1")
        if self.min_pixels < 0:
            raise ValueError("min_pixels must be >= 0")
        if not self.stop_threshold > 0.0:  # a fraction of the support's confidence; a slice may beat it
            raise ValueError("stop_threshold must be > 0")
        if self.area_jump <= 1.0:
            raise ValueError("area_jump must be > 1")


class Mode(str, enum.Enum):
    """How the slices of a volume are segmented."""

    #: every slice on its own from the support, as the paper does                   [P]
    SLICES = "slices"
    #: each slice also prompted from the previous slice's result, outward from the
    #: support (a box and/or mask input), for models without video memory            [G]
    PROPAGATE = "propagate"
    #: SAM2's video predictor, the volume as a video (SynPoLib.video)
    VIDEO = "video"
    #: SAM2's video predictor plus SynPo's points on every frame (SynPoLib.video)
    HYBRID = "hybrid"
    #: the support's mask carried slice by slice by deformable 2-D registration
    #: (SimpleITK Demons) and refined by a random walker (scikit-image); SynPo's
    #: prototype similarity decides where the structure ends (SynPoLib.volume.registration).
    #: Colin27 + AAL, LiteMedSAM for the similarity: docs/scoreboard.md           [G]
    REGISTRATION = "registration"


@dataclass(frozen=True)
class PropagationConfig:
    """The mode, and what the propagate mode passes from one slice to the next."""

    mode: Mode = Mode.SLICES  # [P]
    #: prompt with the previous slice's mask box, grown by `box_margin` a side      [G]
    box: bool = True
    box_margin: float = 0.1
    #: keep the support box's size, only moving its centre to the previous mask's
    #: (a box that follows its own mask shrinks with every under-segmented slice)   [G]
    support_size: bool = True
    #: pass the previous slice's low-resolution logits as mask input                 [G]
    mask: bool = False
    #: add SynPo's points to the propagated prompt                                   [G]
    points: bool = False

    def __post_init__(self) -> None:
        if self.box_margin < 0:
            raise ValueError("box_margin must be >= 0")


class MeetingRule(str, enum.Enum):
    """How the chains of two neighbouring support slices share the slices between them."""

    #: each slice takes the chain of the nearer support (ties: the lower one); the
    #: chains stop where they meet, so every slice is registered once           [G]
    NEAREST = "nearest"
    #: both chains cross the whole gap; each slice blends the two soft masks with
    #: weights falling linearly with the distance to their support, then refines  [G]
    BLEND = "blend"


@dataclass(frozen=True)
class RegistrationConfig:
    """The registration mode (SynPoLib.registration, SynPoLib.volume.registration).

    Every default is ours [G], measured on Colin27 + AAL (``docs/registration-study.md``,
    ``benchmarks/registration_study.py``), chosen on the LEFT 8 scoreboard structures
    only. Every length is in millimetres, converted per axis with the in-plane pixel
    spacing, so thick-slice and anisotropic volumes behave as the 1 mm ones measured.
    The numbers are left-8 protocol-2 mean Dice (registration + random walker) unless said.
    """

    #: crop = the previous mask's box grown by this on every side: 0.769
    #: (10 mm: 0.769, 30 mm: 0.768)                                                  [G]
    margin_mm: float = 20.0
    #: Demons iterations, one resolution level: 0.769 (25: 0.765, 100: 0.770 at twice
    #: the time)                                                                      [G]
    iterations: int = 50
    #: std of the Gaussian smoothing of the displacement field after each iteration:
    #: 0.769 (1 mm: 0.765, 3 mm: 0.759)                                              [G]
    field_sigma_mm: float = 2.0
    #: soft-mask level that is "inside" (seeds, crop box, output without refinement) [G]
    threshold: float = 0.5
    #: refine each slice's output with the random walker: 0.769, registration alone
    #: (soft > threshold) 0.764; all 16: 0.762 / 0.759                                [G]
    refine: bool = True
    #: foreground seeds: the soft mask eroded by this radius (2 mm: 0.754)           [G]
    erosion_mm: float = 1.0
    #: background seeds: outside the soft mask dilated by this radius (1 mm: 0.763,
    #: 3 mm: 0.761)                                                                   [G]
    dilation_mm: float = 2.0
    #: random walker's beta; scikit-image divides it by 10 x the data's std: 0.769
    #: (30: 0.769, 500: 0.767)                                                        [G]
    walker_beta: float = 130.0
    #: scikit-image's solver: conjugate gradient with a Jacobi preconditioner       [G]
    walker_mode: str = "cg_j"
    #: the solver's tolerance (scikit-image's default)                              [G]
    walker_tol: float = 1e-3
    #: how the chains of neighbouring supports share the slices between them;
    #: protocol 1, left 8: blend 0.844, nearest 0.832, the protocol's thirds 0.834 [G]
    meeting: MeetingRule = MeetingRule.BLEND
    #: weight of the backend's mask (sigmoid of its logits, prompted with the
    #: prior's box) averaged into the soft prior before refinement; 0: off.
    #: LiteMedSAM, all 16: 0.25 -> 0.764, 0.5 -> 0.742, its box mask alone 0.586,
    #: against 0.762 without (left 8: +0.001 at 0.25): not worth a decoder call   [G]
    backend_weight: float = 0.0
    #: the box prompt for that mask: the prior's box grown by this fraction a side [G]
    backend_box_margin: float = 0.1
    #: where the structure ends: a slice is low when the cosine between the support's
    #: prototype and the prototype under the slice's output mask (the backend's
    #: image embedding, SAM grid) is below this; 3 low slices in a row
    #: (``quality.stop_after``) end a direction. The cosine is 1.0 on the support
    #: itself, the scale of the other modes' relative confidence, but it is another
    #: signal, so it has its own measured threshold (used instead of
    #: ``quality.stop_threshold`` in this mode). QC protocol, left 8: the threshold
    #: with <= 2 outside slices painted and the fewest inside slices missed
    #: (1.9 painted, 7.4 missed of 20 / 28.4); right 8: 1.2 / 9.0                   [G]
    stop_threshold: float = 0.8

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError("iterations must be >= 1")
        if min(self.margin_mm, self.field_sigma_mm, self.erosion_mm, self.dilation_mm) < 0:
            raise ValueError("lengths (margin, smoothing, erosion, dilation) must be >= 0 mm")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError("threshold must lie in (0, 1)")
        if not 0.0 <= self.backend_weight <= 1.0:
            raise ValueError("backend_weight must lie in [0, 1]")
        if self.walker_beta <= 0:
            raise ValueError("walker_beta must be > 0")
        if self.backend_box_margin < 0:
            raise ValueError("backend_box_margin must be >= 0")
        if not isinstance(self.meeting, MeetingRule):
            object.__setattr__(self, "meeting", MeetingRule(self.meeting))


@dataclass(frozen=True)
class AffineConfig:
    """3-D affine registration of a support volume onto a query volume (SimpleITK): where
    the registration mode starts its chain when the support lies in another volume."""

    #: Mattes mutual information histogram bins                                     [G]
    bins: int = 50
    #: fraction of voxels sampled (random, seeded: same input, same transform)      [G]
    sampling: float = 0.1
    seed: int = 1
    #: regular-step gradient descent: first step, smallest step, iterations per level [G]
    learning_rate: float = 1.0
    min_step: float = 1e-4
    iterations: int = 200
    #: resolution pyramid: shrink factors and Gaussian smoothing (mm) per level    [G]
    shrink: Tuple[int, ...] = (4, 2, 1)
    smoothing_mm: Tuple[float, ...] = (2.0, 1.0, 0.0)
    #: the chain's start is searched this far (mm) either side of the slice the
    #: support slice maps to, by prototype cosine; 0: start at the mapped slice.
    #: Measured (16 structures, chain Dice): +-5 mm vs the mapped slice, Colin27 ->
    #: its warped copy 0.727 vs 0.723, Colin27 -> MNI152 0.660 vs 0.716: off      [G]
    start_search_mm: float = 0.0

    def __post_init__(self) -> None:
        if len(self.shrink) != len(self.smoothing_mm):
            raise ValueError("shrink and smoothing_mm need one value per level")
        if not 0.0 < self.sampling <= 1.0:
            raise ValueError("sampling must lie in (0, 1]")
        if self.start_search_mm < 0:
            raise ValueError("start_search_mm must be >= 0")


@dataclass(frozen=True)
class SynPoConfig:
    """Everything that decides SynPo's result on one slice, and on a volume."""

    window: WindowConfig = field(default_factory=WindowConfig)
    geometry: GeometryConfig = field(default_factory=GeometryConfig)
    synergy: SynergyConfig = field(default_factory=SynergyConfig)
    points: PointConfig = field(default_factory=PointConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    propagation: PropagationConfig = field(default_factory=PropagationConfig)
    registration: RegistrationConfig = field(default_factory=RegistrationConfig)
    affine: AffineConfig = field(default_factory=AffineConfig)

    def mode_quality(self) -> QualityConfig:
        """The quality rules as the configured mode applies them.

        Every mode's confidence is 1.0 on the support slice itself; the registration
        mode's is the prototype cosine, whose stop threshold was measured apart
        (``registration.stop_threshold``) and replaces ``quality.stop_threshold``.
        """
        if self.propagation.mode == Mode.REGISTRATION:
            return dataclasses.replace(self.quality, stop_threshold=self.registration.stop_threshold)
        return self.quality

    def replace(self, **sections) -> "SynPoConfig":
        """Copy with whole sections replaced, e.g. ``cfg.replace(refine=RefineConfig(rounds=0))``."""
        return dataclasses.replace(self, **sections)

    def updated(self, **dotted) -> "SynPoConfig":
        """Copy with single fields changed: ``cfg.updated(**{"points.n_negative": 0})``."""
        cfg = self
        for key, value in dotted.items():
            section, _, name = key.partition(".")
            if not name:
                raise KeyError(f"expected 'section.field', got {key!r}")
            current = getattr(cfg, section)
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(current, **{name: value})})
        return cfg

    def to_dict(self) -> dict:
        def convert(value):
            if isinstance(value, enum.Enum):
                return value.value
            if isinstance(value, tuple):
                return list(value)
            return value

        return {
            f.name: {k: convert(v) for k, v in dataclasses.asdict(getattr(self, f.name)).items()}
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls, data: dict) -> "SynPoConfig":
        """The configuration a :meth:`to_dict` (or a JSON file of sections) describes.

        Missing sections and fields keep their defaults; an unknown section or field,
        a value of the wrong type or out of range raises :class:`InputError`.
        """
        cfg = cls()
        edits = {}
        if not isinstance(data, dict):
            raise InputError(f"expected an object of sections, got {type(data).__name__}")
        for section, values in data.items():
            if section not in SECTIONS:
                raise InputError(f"unknown section {section!r}; sections: {', '.join(SECTIONS)}")
            if not isinstance(values, dict):
                raise InputError(f"section {section!r} must be an object of fields, got {type(values).__name__}")
            for name, value in values.items():
                edits[f"{section}.{name}"] = value
        return edit(cfg, edits)


#: the sections of :class:`SynPoConfig`, by name, in order
SECTIONS = {f.name: f.default_factory for f in dataclasses.fields(SynPoConfig)}


def _finite(value) -> float:
    return float(value) if math.isfinite(float(value)) else float("nan")


def field_types(section_type) -> dict:
    """Field name -> its declared type, for one section class."""
    return typing.get_type_hints(section_type)


def _describe(tp) -> str:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        inner = [a for a in args if a is not type(None)]
        return " or ".join(_describe(a) for a in inner) + " or null"
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return "a list of numbers"
        return f"a list of {len(args)} numbers"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "one of " + ", ".join(repr(m.value) for m in tp)
    return {bool: "true or false", int: "a whole number", float: "a finite number", str: "a string"}.get(tp, str(tp))


def _coerce(tp, value: Any):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Union:
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        if isinstance(value, tp):
            return value
        return tp(value)  # ValueError for a value outside the enum
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:  # Tuple[X, ...]: any length
            args = (args[0],) * (len(value) if isinstance(value, (list, tuple)) else -1)
        if not isinstance(value, (list, tuple)) or len(value) != len(args):
            raise ValueError("wrong shape")
        return tuple(_coerce(a, v) for a, v in zip(args, value))
    if tp is bool:
        if isinstance(value, (bool,) + _numpy_bools()):
            return bool(value)
        raise ValueError("not a boolean")
    if tp is int:
        if isinstance(value, bool):
            raise ValueError("a boolean is not a number")
        if isinstance(value, numbers.Integral):
            return int(value)
        if isinstance(value, numbers.Real) and math.isfinite(value) and float(value).is_integer():
            return int(value)
        raise ValueError("not a whole number")
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
            raise ValueError("not a finite number")
        return float(value)
    if tp is str:
        if isinstance(value, str):
            return value
        raise ValueError("not a string")
    return value


def _numpy_bools() -> tuple:
    try:
        import numpy as np
    except ImportError:  # pragma: no cover - numpy is a dependency
        return ()
    return (np.bool_,)


def coerce_field(section_type, name, value):
    """A value (from JSON, a ``--set`` line or Python) as its field's declared type.

    Raises :class:`InputError` naming the field, what it expects and what it got: the
    one rule for ``--config``, ``--set`` and the Slicer module's parameter table.
    """
    types = field_types(section_type)
    if name not in types:
        raise InputError(f"unknown parameter {name!r}; known: {', '.join(types)}")
    tp = types[name]
    try:
        return _coerce(tp, value)
    except (ValueError, TypeError):
        raise InputError(f"expects {_describe(tp)}, got {value!r}") from None


def edit(cfg: "SynPoConfig", edits: dict) -> "SynPoConfig":
    """``cfg`` with ``{"section.field": value}`` edits applied, each section built once.

    Values are coerced to their field's type (:func:`coerce_field`) and every section
    is checked after all its edits (so weights that must sum to 1 can be changed
    together). Raises :class:`InputError` naming the parameter.
    """
    by_section: dict = {}
    for key, value in edits.items():
        section, _, name = str(key).partition(".")
        if section not in SECTIONS or not name:
            raise InputError(f"unknown parameter {key!r}; sections: {', '.join(SECTIONS)}")
        types = field_types(type(getattr(cfg, section)))
        if name not in types:
            raise InputError(f"unknown parameter {key!r}; {section} has: {', '.join(types)}")
        try:
            by_section.setdefault(section, {})[name] = coerce_field(type(getattr(cfg, section)), name, value)
        except InputError as exc:
            raise InputError(f"{key} {exc}") from None
    for section, values in by_section.items():
        try:
            cfg = dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **values)})
        except (ValueError, TypeError) as exc:
            raise InputError(f"{section}: {exc}") from None
    return cfg


__all__ = ["DEFAULT_COLOR", "GeometryConfig", "MaskChoice", "Mode", "PointConfig", "PointMethod", "PromptConfig",
           "PromptStrategy", "PropagationConfig", "PrototypeForm", "QualityConfig", "RefineConfig", "RefinePrompt",
           "SECTIONS", "SynPoConfig", "SynergyConfig", "WindowConfig", "coerce_field", "edit", "field_types"]
