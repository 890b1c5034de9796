"""Named configurations: the paper's, and the one measured best for LiteMedSAM.

Also here: a preset plus edits, as the command line (``--config``, ``--set``) and the
Slicer module's parameter table give them (:func:`build_config`, :func:`config_for`).

``paper`` is :class:`SynPoConfig`'s defaults: SAM2 + DINOv2 with point prompts, three
masks chosen by prototype similarity, two mask-input refine rounds, every slice on its
own (the paper's mode). ``synpo segment --preset paper`` runs it.

``lite`` (the default for the LiteMedSAM backend) runs the registration mode
(:mod:`SynPoLib.volume.registration`): it measured best on every protocol of the
scoreboard. Its prompt settings below are what the slices and propagate modes use
with LiteMedSAM (``--mode slices``).

``lite`` was measured on Colin27 + AAL (6 structures: thalamus L, caudate L, putamen
L, hippocampus L, amygdala L, pallidum L; support = middle slice, query = every other
slice of the structure; pooled Dice, mean over structures). LiteMedSAM was fine-tuned
with box prompts and one output mask, so (numbers from that run, README "Prompt
strategies"):

- point prompts: 0.011 (it ignores points); box + points 0.300; box + negatives 0.351;
- (each step keeps the previous choices) a box from the confident region 0.304; with the location prior (sigma 0.5 x the
  support box diagonal) 0.458; at the 0.99 quantile 0.438; without refine 0.503;
- refine rounds hurt: mask input 0.438 (it was never trained on mask prompts), a
  re-derived box 0.428 (each round shrinks the box);
- the support mask's box size centred on the positives: 0.486 with no margin, 0.528
  / 0.535 / 0.525 / 0.510 grown by 5 / 10 / 15 / 20 % a side: 10 % is the default
  (a region-derived box with the same margins: 0.511 / 0.491).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .config import Mode, PromptStrategy, SynPoConfig, coerce_field
from .errors import InputError

PRESETS: Dict[str, SynPoConfig] = {
    "paper": SynPoConfig(),
    "lite": SynPoConfig().updated(**{
        "prompt.strategy": PromptStrategy.SUPPORT_BOX,
        "prompt.support_box_margin": 0.1,
        "prompt.multimask": False,
        "prompt.box_quantile": 0.99,
        "points.location_prior": 0.5,
        "refine.rounds": 0,
        # The mode that measured best (docs/scoreboard.md, Colin27 + AAL, 16 structures):
        # registration 0.762 / 0.841 (protocols 2 / 1) against SynPo slice by slice
        # 0.531 / 0.620 and copying the labelled slice 0.607 / 0.776. The slices mode
        # with the prompts above stays one option away (--mode slices).
        "propagation.mode": Mode.REGISTRATION,
        # LiteMedSAM's box mask averaged into the registration prior: +0.002 at 0.25,
        # -0.020 at 0.5 (protocol 2): not worth a decoder call per slice
        "registration.backend_weight": 0.0,
    }),
}


def preset(name: str) -> SynPoConfig:
    """The named configuration ("paper" or "lite")."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose from {', '.join(sorted(PRESETS))}") from None


# --------------------------------------------------------------------------- edits

def parse_assignments(items: Sequence[str]) -> dict:
    """``section.field=value`` items to a dict (values parsed as JSON when possible)."""
    out = {}
    for item in items or ():
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise InputError(f"--set expects section.field=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def build_config(preset_name: str, config_file: Optional[str] = None,
                 assignments: Sequence[str] = ()) -> SynPoConfig:
    """The preset, then a JSON config file's sections, then ``section.field=value`` edits."""
    cfg = preset(preset_name)
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise InputError(f"config file not found: {path}")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise InputError(f"config file {path} is not valid JSON: {exc}") from None
        merged = cfg.to_dict()
        for section, values in data.items():
            if section not in merged:
                raise InputError(f"config file {path}: unknown section {section!r}")
            merged[section].update(values)
        cfg = SynPoConfig.from_dict(merged)
    for key, value in parse_assignments(assignments).items():
        section, _, name = key.partition(".")
        if not hasattr(cfg, section) or name not in {f.name for f in dataclasses.fields(getattr(cfg, section))}:
            raise InputError(f"--set: unknown parameter {key!r}")
        try:
            cfg = cfg.updated(**{key: coerce_field(type(getattr(cfg, section)), name, value)})
        except (TypeError, ValueError) as exc:
            raise InputError(f"--set {key}: {exc}") from None
    return cfg


# The Slicer module keeps the edits as text in its parameter node (the same lines as
# ``synpo segment --set``), so a saved scene remembers exactly which parameters
# differed from the preset.

def _lines(text: str) -> List[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def config_for(preset_name: str, overrides: str = "") -> SynPoConfig:
    """The preset with the override lines applied; a bad line raises with its reason."""
    return build_config(preset_name, None, _lines(overrides))


def config_rows(preset_name: str, overrides: str = "") -> List[Tuple[str, str, bool]]:
    """(section.field, JSON value, differs from the preset) for every parameter."""
    base = preset(preset_name).to_dict()
    current = config_for(preset_name, overrides).to_dict()
    return [(f"{section}.{name}", json.dumps(value), value != base[section][name])
            for section, values in current.items() for name, value in values.items()]


def overrides_from_values(preset_name: str, values: Dict[str, str]) -> str:
    """Override lines for the edited values that differ from the preset (validated)."""
    base = preset(preset_name).to_dict()
    lines = []
    for key, text in values.items():
        section, _, name = key.partition(".")
        if section not in base or name not in base[section]:
            raise ValueError(f"unknown parameter {key!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text
        if value != base[section][name]:
            lines.append(f"{key}={text}")
    overrides = "\n".join(lines)
    config_for(preset_name, overrides)
    return overrides
