"""The method's configuration as editable text: a preset plus "section.field=value" lines.

The same lines as ``synpo segment --set`` (values are JSON when they parse as JSON,
else plain strings). The 3D Slicer module keeps them in its parameter node, so a
scene remembers exactly which parameters differed from the preset.
"""

from __future__ import annotations

import json
from typing import Dict, List, Tuple

from .config import SynPoConfig
from .presets import preset


def _lines(text: str) -> List[str]:
    return [line.strip() for line in (text or "").splitlines() if line.strip()]


def config_for(preset_name: str, overrides: str = "") -> SynPoConfig:
    """The preset with the override lines applied; a bad line raises with its reason."""
    from .cli import build_config

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
