"""Ready for the 3D Slicer Extensions Index: the checks its CI and reviewers make, offline.

The rules (accepted categories, licence file names, the description file's JSON schema,
repository-name prefixes, size limit) are read from Slicer/ExtensionsIndex by
Testing/module/slicer_api/regenerate.py into Testing/module/slicer_api/extensions-index.json. The
description file to submit there is Resources/ExtensionsIndex/SynPo.json. What needs the
network (URLs answering, GitHub topics) is for the reviewer; the URLs are checked to point
at files of this repository.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import urllib.parse
from pathlib import Path

try:
    import tomllib  # novermin: Python 3.11+, with the fallback below for 3.10
except ModuleNotFoundError:  # Python 3.10: the same parser from PyPI (the test extra installs it there)
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
RULES = json.loads((Path(__file__).resolve().parent / "slicer_api" / "extensions-index.json").read_text())
DESCRIPTION = ROOT / "Resources" / "ExtensionsIndex" / "SynPo.json"
NAME = DESCRIPTION.stem


def cmake_values():
    text = (ROOT / "CMakeLists.txt").read_text()
    values = dict(re.findall(r'set\((EXTENSION_[A-Z]+)\s+"([^"]*)"\)', text))
    values["project"] = re.search(r"project\s*\(\s*([^\s)]+)", text).group(1)
    return values


def module_constant(name):
    tree = ast.parse((ROOT / "SynPo" / "SynPo.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == name for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError(f"SynPo.py has no {name}")


def validate(instance, schema):
    """The JSON-schema keywords the catalogue schema uses (draft-07: required, properties,
    additionalProperties, type, items, enum, minimum, maximum)."""
    types = {"string": str, "array": list, "boolean": bool, "integer": int, "object": dict}
    errors = [f"missing {key}" for key in schema.get("required", []) if key not in instance]
    for key, value in instance.items():
        spec = schema["properties"].get(key)
        if spec is None:
            if schema.get("additionalProperties") is False:
                errors.append(f"{key} is not allowed")
            continue
        if not isinstance(value, types[spec["type"]]) or spec["type"] == "integer" and isinstance(value, bool):
            errors.append(f"{key} must be {spec['type']}")
            continue
        if "enum" in spec and value not in spec["enum"]:
            errors.append(f"{key} must be one of {spec['enum']}")
        if "minimum" in spec and value < spec["minimum"] or "maximum" in spec and value > spec["maximum"]:
            errors.append(f"{key} out of range")
        if spec["type"] == "array" and "items" in spec:
            errors += [f"{key} items must be {spec['items']['type']}" for item in value
                       if not isinstance(item, types[spec["items"]["type"]])]
    return errors


def test_description_file_follows_the_catalogue_schema():
    raw = DESCRIPTION.read_bytes()
    assert b"\r" not in raw, "LF line endings only"
    description = json.loads(raw)
    assert description["$schema"].rstrip("#").endswith(RULES["schema_file"].split("/")[-1])
    assert not validate(description, RULES["schema"]), validate(description, RULES["schema"])


def test_description_file_agrees_with_the_top_level_cmake():
    description, cmake = json.loads(DESCRIPTION.read_text()), cmake_values()
    assert cmake["project"] == NAME and not NAME.lower().startswith("slicer")
    assert description["category"] == cmake["EXTENSION_CATEGORY"] and description["category"] in RULES[
        "accepted_categories"]
    assert description["build_dependencies"] == cmake["EXTENSION_DEPENDS"].split() == ["PyTorch"]
    url = urllib.parse.urlsplit(description["scm_url"])
    assert url.scheme in RULES["scm_url_schemes"] and url.netloc and url.path
    repo_name = Path(url.path).stem
    assert any(repo_name.startswith(p) for p in RULES["repository_name_prefixes"]), repo_name
    assert cmake["EXTENSION_HOMEPAGE"].rstrip("/") == description["scm_url"].removesuffix(".git")
    owner_repo = url.path.removesuffix(".git").strip("/")
    for image in [cmake["EXTENSION_ICONURL"]] + cmake["EXTENSION_SCREENSHOTURLS"].split():
        prefix = f"https://raw.githubusercontent.com/{owner_repo}/{description['scm_revision']}/"
        assert image.startswith(prefix), image
        assert (ROOT / image[len(prefix):]).is_file(), image


def test_license_file_at_the_root_is_the_declared_one():
    present = [n for n in RULES["license_file_names"] if (ROOT / n).is_file()]
    assert present == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == {"text": "Apache-2.0"}
    assert "Apache-2.0" in cmake_values()["EXTENSION_DESCRIPTION"]


def test_contributors_are_name_and_organization_everywhere():
    cmake = [c.strip() for c in cmake_values()["EXTENSION_CONTRIBUTORS"].split(",")]
    module = module_constant("CONTRIBUTORS")
    assert cmake == module and module
    for person in module:
        assert re.fullmatch(r"[^()]+ \([^()]+\)", person), person


def test_homepage_has_what_a_reviewer_looks_for():
    readme = (ROOT / "README.md").read_text()
    assert readme.startswith(f"# {NAME} for 3D Slicer")
    assert module_constant("PAPER_URL") in readme  # the publication
    assert "Apache-2.0" in readme  # the licence, by name
    assert "![" in readme and "Resources/Screenshots/" in readme  # an image
    assert re.search(r"\bSynPo\*\* module|The \*\*SynPo\*\* module|module \(.*Segmentation", readme)  # the module
    assert re.search(r"Slicer \**5\.10", readme)  # the first Slicer it runs in


def test_repository_is_under_the_size_limit():
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True,
                               text=True).stdout.split("\0")
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but build outputs
        files = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if ".venv" not in p.parts and ".git" not in p.parts]
    total = sum((ROOT / f).stat().st_size for f in files if f and (ROOT / f).is_file())
    assert total < RULES["repository_size_limit_mb"] * 1024 * 1024 / 4, f"{total / 1e6:.1f} MB"
