"""The methods a scoreboard compares, all on one backend and one base configuration.

Every method is SynPo's own pipeline with named parts switched, so each row measures
exactly one change (and every method reuses the same encoder passes):

==================  ===========================================================================
name                what it is
==================  ===========================================================================
synpo               SynPo with the backend's measured preset (``backend.preset``)
ablation-1-sam      paper Table 2 row 1: SAM features only, naive points (max / min of the map:
                    :attr:`PointMethod.EXTREMES`), no refine
ablation-2-dino     row 2: + DINOv2 (SAM x DINOv2 synergy map), naive points, no refine;
                    needs a backend with "dino" features, else n/a
ablation-3-psm      row 3: + the Point Selection Module, no refine
ablation-4-nrm      row 4: + the Noise-aware Refine Module, the paper's 2 mask-input rounds
persam-points       PerSAM-style (paper Table 3): SAM features, one positive at the map's
                    maximum, one negative at its minimum, given as point prompts
persam-box          the same points through the backend's preset prompt strategy (for the
                    lite preset: the support-sized box centred on the maximum)
copy                the support slice's mask copied to each query slice it serves
alpha=<a>           SynPo with the negative interval [mu - a sigma, mu - (a - 1.5) sigma]
                    (paper Fig. 4: beta = alpha - 1.5)
propagate           SynPo's propagate mode: each slice also prompted from the previous slice's
                    result, outward from the support (made for LiteMedSAM)
synpo+auto-stop     quality-control protocol only: SynPo with auto-stop (SynPoLib.volume.qc)
propagate+auto-stop quality-control protocol only: the propagate mode with auto-stop
registration        the registration mode (SynPoLib.volume.registration): Demons chain +
                    random walker, k-shot chains blended, as the base configuration sets it
registration-alone  its ablation: the registration prior thresholded, no random walker
registration+fusion its ablation: the backend's box mask averaged into the prior (weight
                    0.25) before the random walker
registration+auto-stop  quality-control protocol only: the registration mode stopping where
                    SynPo's prototype cosine says the structure ends
==================  ===========================================================================

The SynPo rows (``synpo``, the ablations, the PerSAM-style baselines, the sweep) run the
paper's mode, slice by slice, whatever mode the base configuration names; the
``registration`` rows run the registration mode with the base configuration's
``registration`` section.

Every method of the paper's protocols segments every slice it is given (auto-stop off),
as the paper does with slices known to hold the organ; only the ``+auto-stop`` methods
of the quality-control protocol stop by themselves.

Ablation rows and PerSAM-style baselines keep everything else of the base configuration
(prompt strategy, location prior, window, geometry). With the lite backend ``ablation-1-sam``
and ``persam-box`` are one configuration, as are ``ablation-3-psm`` and ``synpo`` (the lite
preset has no refine rounds); the runner computes each distinct configuration once.

The alpha sweep changes the negatives only, so it is run through a prompt strategy that
gives negatives to the decoder: the base configuration's if it does, else ``box+negatives``
(the lite preset's support box carries no points, which would make the sweep flat by
construction). No parameter is ever tuned per structure.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

from ..backends.base import DINO, SAM, Backend, EncodedSlice, Prediction
from ..config import Mode, PointMethod, PromptStrategy, RefineConfig, RefinePrompt, SynPoConfig
from .protocols import FSMIS, PAIR, QC, WITHIN

SYNPO = "synpo"
COPY = "copy"
#: strategies whose decoder prompt carries the negative points
_USES_NEGATIVES = (PromptStrategy.POINTS, PromptStrategy.BOX_POINTS, PromptStrategy.BOX_NEGATIVES)
#: the paper's Fig. 4 axis, around its two best intervals (alpha = 0 and alpha = 1)
DEFAULT_ALPHAS = (-0.5, 0.0, 0.5, 1.0, 1.5, 2.0)


@dataclass(frozen=True)
class Method:
    """One row of a scoreboard."""

    name: str
    description: str
    #: "synpo" (segment with ``config``) or "copy"
    kind: str = SYNPO
    config: Optional[SynPoConfig] = None
    #: backbones the method may use; None: every backbone the backend has
    features: Optional[Tuple[str, ...]] = None
    #: backbones the method needs; a backend without them makes the row n/a
    requires: Tuple[str, ...] = ()
    #: protocols the method is run on
    protocols: Tuple[str, ...] = (FSMIS, WITHIN, PAIR)

    def runs_on(self, protocol: str) -> bool:
        return protocol in self.protocols

    def unavailable(self, backend: Backend) -> Optional[str]:
        """Why the method cannot run on ``backend`` (None when it can)."""
        missing = [k for k in self.requires if k not in backend.feature_keys]
        if missing:
            return f"n/a with {backend.name}: needs {'+'.join(missing)} features"
        return None

    def fingerprint(self, backend: Backend) -> str:
        """Identity of what the method computes on ``backend`` (same fingerprint, same masks)."""
        features = None
        if self.kind == SYNPO:
            keys = tuple(backend.feature_keys)
            features = sorted(k for k in keys if self.features is None or k in self.features)
        payload = {"kind": self.kind, "backend": backend.name,
                   "config": None if self.config is None or self.kind == COPY else self.config.to_dict(),
                   "features": features}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha1(text.encode()).hexdigest()[:16]


def _naive(cfg: SynPoConfig) -> SynPoConfig:
    return cfg.updated(**{"points.method": PointMethod.EXTREMES})


def _no_refine(cfg: SynPoConfig) -> SynPoConfig:
    return cfg.updated(**{"refine.rounds": 0})


def _paper_refine(cfg: SynPoConfig) -> SynPoConfig:
    """The paper's NRM: its default rounds with mask-input prompts (whatever the preset says)."""
    return cfg.updated(**{"refine.rounds": RefineConfig().rounds, "refine.prompt": RefinePrompt.MASK})


def sweep_config(base: SynPoConfig, alpha: float) -> SynPoConfig:
    """``base`` with the negative interval at ``alpha`` (beta = alpha - 1.5), negatives prompted."""
    cfg = base.updated(**{"points.alpha": float(alpha), "points.beta": float(alpha) - 1.5,
                          "points.method": PointMethod.SYNPO})
    if cfg.prompt.strategy not in _USES_NEGATIVES:
        cfg = cfg.updated(**{"prompt.strategy": PromptStrategy.BOX_NEGATIVES})
    return cfg


def _propagate(cfg: SynPoConfig) -> SynPoConfig:
    return cfg.updated(**{"propagation.mode": Mode.PROPAGATE})


def _slices(cfg: SynPoConfig) -> SynPoConfig:
    return cfg.updated(**{"propagation.mode": Mode.SLICES})


def _registration(cfg: SynPoConfig, **changes) -> SynPoConfig:
    cfg = cfg.updated(**{"propagation.mode": Mode.REGISTRATION})
    return cfg.updated(**{f"registration.{k}": v for k, v in changes.items()}) if changes else cfg


#: the backend fusion weight of the ``registration+fusion`` row (the study's best)
FUSION_WEIGHT = 0.25


def _auto_stop(cfg: SynPoConfig) -> SynPoConfig:
    return cfg.updated(**{"quality.auto_stop": True})


def standard_methods(base: SynPoConfig, alphas: Sequence[float] = DEFAULT_ALPHAS) -> List[Method]:
    """Every method of the scoreboard, built from the backend's base configuration."""
    registered = base.updated(**{"quality.auto_stop": False})  # the paper's protocols: every slice
    base = _slices(registered)
    everywhere = (FSMIS, WITHIN, PAIR, QC)
    methods = [
        Method(SYNPO, "SynPo (backend preset)", config=base, protocols=everywhere),
        Method("ablation-1-sam", "SAM features, naive points, no refine", config=_no_refine(_naive(base)),
               features=(SAM,)),
        Method("ablation-2-dino", "+ DINOv2 synergy map", config=_no_refine(_naive(base)),
               features=(SAM, DINO), requires=(SAM, DINO)),
        Method("ablation-3-psm", "+ point selection (PSM)", config=_no_refine(base)),
        Method("ablation-4-nrm", "+ refine (NRM, 2 mask-input rounds)", config=_paper_refine(base)),
        Method("persam-points", "PerSAM-style: argmax +, argmin -, point prompts",
               config=_no_refine(_naive(base)).updated(**{"prompt.strategy": PromptStrategy.POINTS,
                                                          "points.location_prior": None}),
               features=(SAM,)),
        Method("persam-box", "PerSAM-style points through the preset prompt strategy",
               config=_no_refine(_naive(base)), features=(SAM,)),
        Method(COPY, "copy the support mask", kind=COPY),
        Method("propagate", "propagate mode: also prompted from the previous slice", config=_propagate(base),
               protocols=everywhere),
        Method("synpo+auto-stop", "SynPo, stopping by itself past the structure", config=_auto_stop(base),
               protocols=(QC,)),
        Method("propagate+auto-stop", "propagate mode, stopping by itself", config=_auto_stop(_propagate(base)),
               protocols=(QC,)),
        Method("registration", "registration mode: Demons chain + random walker", config=_registration(registered),
               protocols=everywhere),
        Method("registration-alone", "registration mode without the random walker",
               config=_registration(registered, refine=False)),
        Method("registration+fusion", f"registration mode + the backend's mask (weight {FUSION_WEIGHT:g})",
               config=_registration(registered, backend_weight=FUSION_WEIGHT)),
        Method("registration+auto-stop", "registration mode, stopping where SynPo's similarity says",
               config=_auto_stop(_registration(registered)), protocols=(QC,)),
    ]
    for alpha in alphas:
        methods.append(Method(f"alpha={alpha:g}", f"SynPo, negatives in [mu - {alpha:g} s, mu - ({alpha - 1.5:g}) s]",
                              config=sweep_config(base, alpha)))
    return methods


def select_methods(methods: Sequence[Method], names: Optional[Sequence[str]]) -> List[Method]:
    """Methods by name; "all" or None keeps every one, "alpha" every sweep point."""
    if not names or "all" in names:
        return list(methods)
    by_name = {m.name: m for m in methods}
    out = []
    for name in names:
        if name == "alpha":
            out.extend(m for m in methods if m.name.startswith("alpha=") and m not in out)
            continue
        if name not in by_name:
            raise ValueError(f"unknown method {name!r}; choose from all, alpha, {', '.join(by_name)}")
        if by_name[name] not in out:
            out.append(by_name[name])
    return out


class FeatureSubset(Backend):
    """A view of a backend whose encoder passes expose only some backbones.

    The SAM-only ablation and the PerSAM-style baselines must not see DINOv2 features
    on a two-backbone backend; the encoder pass (and any cache under it) is shared.
    """

    def __init__(self, inner: Backend, keys: Sequence[str]) -> None:
        super().__init__()
        missing = [k for k in keys if k not in inner.feature_keys]
        if missing:
            raise ValueError(f"backend {inner.name} has no {', '.join(missing)} features")
        self.inner = inner
        self.keys = tuple(keys)
        self.name = inner.name
        self.preset = inner.preset
        self.encoder_calls = inner.encoder_calls
        self.multimask_max_points = inner.multimask_max_points

    @property
    def feature_keys(self) -> Sequence[str]:
        return self.keys

    @property
    def device(self) -> str:
        return self.inner.device

    def encode(self, images) -> List[EncodedSlice]:
        return [EncodedSlice(features={k: v for k, v in enc.features.items() if k in self.keys}, state=enc.state)
                for enc in self.inner.encode(images)]

    def predict(self, encoded: EncodedSlice, **kwargs) -> Prediction:
        return self.inner.predict(encoded, **kwargs)


def backend_for(method: Method, backend: Backend) -> Backend:
    """The backend a method runs on: ``backend`` itself or a feature subset of it."""
    if method.features is None:
        return backend
    keys = [k for k in backend.feature_keys if k in method.features]
    if list(keys) == list(backend.feature_keys):
        return backend
    return FeatureSubset(backend, keys)


__all__ = ["COPY", "DEFAULT_ALPHAS", "FUSION_WEIGHT", "FeatureSubset", "Method", "SYNPO", "backend_for", "select_methods",
           "standard_methods", "sweep_config"]
