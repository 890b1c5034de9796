"""The Slicer module's pure helpers: first-use requirements, review flags, config overrides."""

from __future__ import annotations

import re
from pathlib import Path

try:
    import tomllib  # novermin: Python 3.11+, with the fallback below for 3.10
except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI (the test extra installs it there)
    import tomli as tomllib

import numpy as np
import pytest
from packaging.requirements import Requirement as Parsed

from SynPoLib import scene as mrml
from SynPoLib.backends import requirements as dependencies
from SynPoLib.backends.requirements import PACKAGES, TORCH, Requirement
from SynPoLib.presets import config_for, config_rows, overrides_from_values
from SynPoLib.presets import preset
from SynPoLib.volume.qc import review_flags
from SynPoLib.volume import SliceRecord

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- requirements

def all_requirements():
    return list(TORCH.values()) + [r for reqs in PACKAGES.values() for r in reqs]


@pytest.mark.parametrize("req", all_requirements(), ids=lambda r: r.spec)
def test_every_requirement_has_a_floor_and_a_ceiling_and_says_why(req):
    spec = Parsed(req.spec).specifier
    operators = {s.operator for s in spec}
    assert "==" in operators or ({">=", "<"} <= operators), f"{req.spec}: needs a floor and a ceiling (or a pin)"
    assert req.why and req.bounds and len(req.bounds) > 20
    assert req.name == Parsed(req.spec).name


def test_requirements_agree_with_the_package_metadata():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {Parsed(d).name.lower(): Parsed(d) for d in project["dependencies"] + sum(
        project["optional-dependencies"].values(), [])}
    for req in [r for reqs in PACKAGES.values() for r in reqs]:
        mine = Parsed(req.spec)
        if mine.name.lower() in declared:
            floors = lambda p: {s.version for s in p.specifier if s.operator in (">=", "==")}  # noqa: E731
            assert floors(mine) == floors(declared[mine.name.lower()]), f"{req.spec} vs pyproject"
    torch_floor = {s.version for s in Parsed(TORCH["lite"].spec).specifier if s.operator == ">="}
    assert torch_floor == {s.version for s in declared["torch"].specifier if s.operator == ">="}


def test_missing_packages_reads_the_installed_versions():
    # this environment has everything the lite backend needs
    assert dependencies.missing_packages("lite") == (None, [])
    assert dependencies.missing_weights("lite") == []  # bundled weights: nothing to download
    assert dependencies.install_plan_text("lite") == ""
    # and a requirement the installed version does not meet is reported
    numpy_major = int(np.__version__.split(".")[0])
    assert not dependencies._satisfied(Requirement(f"numpy<{numpy_major}", "x", "x"))
    assert dependencies._satisfied(Requirement(f"numpy>={numpy_major},<{numpy_major + 1}", "x", "x"))
    assert not dependencies._satisfied(Requirement("no-such-package-synpo>=1,<2", "x", "x"))
    with pytest.raises(ValueError, match="unknown backend 'nope'"):
        dependencies.missing_packages("nope")


def test_install_plan_lists_what_is_missing(monkeypatch):
    missing = Requirement("no-such-package-synpo>=1,<2", "a test package", "bounds for the test only")
    monkeypatch.setitem(PACKAGES, "lite", PACKAGES["lite"] + [missing])
    torch, packages = dependencies.missing_packages("lite")
    assert torch is None and packages == [missing]
    assert "- no-such-package-synpo>=1,<2: a test package" in dependencies.install_plan_text("lite")


# ----------------------------------------------------------------------------- review flags

def record(index, score, pixels, support=0, accepted=True):
    return SliceRecord(index=index, support_index=support, score=score, pixels=pixels, accepted=accepted)


def test_review_flags_point_at_the_doubtful_slices():
    records = [record(i, 0.80 + 0.01 * (i % 3), 100 + i) for i in range(10)]
    records[5] = record(5, 0.80, 100, support=-1)  # the support slice is never flagged
    records[2] = record(2, 0.20, 100)  # a score far below the others
    records[7] = record(7, 0.81, 400)  # area x4 against both neighbours
    records[9] = record(9, 0.79, 0)  # empty
    records[0] = record(0, 0.10, 100, accepted=False)
    flags = review_flags(records)
    assert set(flags) == {0, 2, 7, 9}
    assert flags[0].startswith("rejected") and flags[2].startswith("low score") and flags[9] == "empty"
    assert "area" in flags[7]
    assert review_flags([record(i, 0.8, 100) for i in range(10)]) == {}


# ----------------------------------------------------------------------------- configuration

def test_config_overrides_round_trip_through_the_table():
    rows = config_rows("lite")
    assert all(not changed for _, _, changed in rows)
    table = {name: value for name, value, _ in rows}
    assert table["refine.rounds"] == "0" and table["prompt.strategy"] == '"support-box"'
    table["points.n_negative"] = "2"
    table["window.mri_percentiles"] = "[1.0, 99.0]"
    table["prompt.strategy"] = "box"  # a bare string is taken as the string
    overrides = overrides_from_values("lite", table)
    assert sorted(overrides.splitlines()) == ["points.n_negative=2", "prompt.strategy=box",
                                              "window.mri_percentiles=[1.0, 99.0]"]
    cfg = config_for("lite", overrides)
    assert cfg.points.n_negative == 2 and cfg.window.mri_percentiles == (1.0, 99.0)
    assert cfg.prompt.strategy.value == "box" and cfg.refine == preset("lite").refine
    changed = {name for name, _, c in config_rows("lite", overrides) if c}
    assert changed == {"points.n_negative", "window.mri_percentiles", "prompt.strategy"}


def test_bad_override_values_are_refused_with_the_reason():
    table = {name: value for name, value, _ in config_rows("paper")}
    table["synergy.delta_sd"] = "0.5"  # the three weights must sum to 1
    with pytest.raises(ValueError, match="sum to 1"):
        overrides_from_values("paper", table)
    with pytest.raises(ValueError, match="unknown parameter"):
        overrides_from_values("paper", {"nope.x": "1"})
    with pytest.raises(ValueError, match="unknown parameter 'points.nope'"):
        config_for("paper", "points.nope=1")


# ----------------------------------------------------------------------------- geometry names

def test_guess_axis_and_axis_names():
    mask = np.zeros((6, 7, 8), np.uint8)
    for axis, index in ((0, 3), (1, 2), (2, 5)):
        one = np.zeros_like(mask)
        where = [slice(1, -1)] * 3
        where[axis] = index
        one[tuple(where)] = 1
        assert mrml.guess_axis(one) == axis
    with pytest.raises(mrml.MRMLInputError, match="empty"):
        mrml.guess_axis(mask)
    lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    assert mrml.axis_direction_name(lps, 0) == "I-S (axial slices)"
    assert mrml.axis_direction_name(lps, 1) == "A-P (coronal slices)"
    assert mrml.axis_direction_name(lps, 2) == "R-L (sagittal slices)"
    assert re.match(r"S-I", mrml.axis_direction_name(np.diag([1.0, 1.0, -1.0, 1.0]), 0))
