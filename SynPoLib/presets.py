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

from .config import SECTIONS, Mode, PromptStrategy, SynPoConfig, edit
from .errors import InputError
from .paths import check_input_file

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

def parse_assignments(items: Sequence[str], flag: str = "--set") -> dict:
    """``section.field=value`` items to a dict (values parsed as JSON when possible)."""
    out = {}
    for item in items or ():
        key, sep, value = str(item).partition("=")
        if not sep or "." not in key:
            raise InputError(f"{flag} expects section.field=value, got {item!r}".strip())
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _kind(value) -> str:
    return {bool: "boolean", int: "number", float: "number", str: "string", list: "list", dict: "object",
            type(None): "null"}.get(type(value), type(value).__name__)


def read_config_file(config_file: str) -> dict:
    """A ``--config`` file's ``{"section.field": value}`` edits; one-line errors name the file."""
    path = check_input_file(config_file, "--config")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InputError(f"--config {path} is not a UTF-8 text file: give a JSON file of sections") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"--config {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError(f"--config {path} must hold a JSON object of sections "
                         f'(e.g. {{"points": {{"n_negative": 2}}}}), got a {_kind(data)}')
    edits = {}
    for section, values in data.items():
        if section not in SECTIONS:
            raise InputError(f"--config {path}: unknown section {section!r}; sections: {', '.join(SECTIONS)}")
        if not isinstance(values, dict):
            raise InputError(f"--config {path}: section {section!r} must be an object of fields, "
                             f"got a {_kind(values)}")
        for name, value in values.items():
            edits[f"{section}.{name}"] = value
    return edits


def build_config(preset_name: str, config_file: Optional[str] = None, assignments: Sequence[str] = (),
                 extra: Optional[Dict[str, Tuple[str, object]]] = None, set_flag: str = "--set") -> SynPoConfig:
    """The preset, then a JSON config file's sections, then ``section.field=value`` edits.

    ``--config`` and ``--set`` follow one rule (:func:`SynPoLib.config.edit`): every
    field known, every value of its field's type and in range; the error names the
    flag. ``extra``: ``{"section.field": (flag, value)}`` edits from other options
    (``--window``, ``--mode``), applied last. ``set_flag`` names the assignments in
    messages ("" for the Slicer module's parameter table, whose lines have no flag).
    """
    cfg = preset(preset_name)
    sources: List[Tuple[str, dict]] = []
    if config_file:
        sources.append((f"--config {config_file}", read_config_file(config_file)))
    for item in assignments or ():
        sources.append((f"{set_flag} {item}".strip(), parse_assignments([item], set_flag)))
    for key, (flag, value) in (extra or {}).items():
        sources.append((flag, {key: value}))
    # each source is checked on its own (so the error names it), then all are applied
    # together (so a section's joint rules, like weights summing to 1, see the result)
    edits: Dict[str, object] = {}
    for label, values in sources:
        try:
            edit(cfg, values)
        except InputError as exc:
            joint = str(exc).split(":")[0] in SECTIONS
            if not joint:
                raise InputError(f"{label}: {exc}") from None
        edits.update(values)
    try:
        return edit(cfg, edits)
    except InputError as exc:
        labels = [label for label, values in sources if any(k.split(".")[0] == str(exc).split(":")[0] for k in values)]
        raise InputError(f"{' with '.join(labels) or 'configuration'}: {exc}") from None


# The Slicer module keeps the edits as text in its parameter node (the same lines as
# ``synpo segment --set``), so a saved scene remembers exactly which parameters
# differed from the preset.

def _lines(text: str) -> List[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def config_for(preset_name: str, overrides: str = "") -> SynPoConfig:
    """The preset with the override lines applied; a bad line raises with its reason."""
    return build_config(preset_name, None, _lines(overrides), set_flag="")


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
