#!/usr/bin/env python3
"""Regenerate Testing/module/slicer_api/ from a checkout of 3D Slicer (and of CTK).

    python Testing/module/slicer_api/regenerate.py --slicer-git-dir PATH/Slicer.git [--slicer-ref REF]
                                            --ctk-git-dir PATH/CTK.git

Both may be bare git directories (nothing is checked out: files are read with
``git show REF:path``). CTK is read at the commit Slicer's SuperBuild pins.

Writes:

- ``slicer-api.json``: the names Slicer defines where SynPo looks for them, with the
  Slicer commit and version they were read from: the pure-Python API (module-level
  names, class members, function signatures: parameter names, which are keyword-only,
  which have defaults), the Qt classes PythonQt exposes (properties, slots, Q_INVOKABLE
  methods, signals, base classes, read from the C++ headers), the kits Slicer loads
  into the ``slicer`` namespace at start-up, and the module names
  (``slicer.modules.<lowercase name>``);
- with ``--index-git-dir``, ``extensions-index.json`` (the Extensions Index's rules).

Only names and signatures are extracted: no source text of Slicer is copied.
Testing/module/test_slicer_names.py compares SynPo/SynPo.py against the JSON file, and
Testing/module/test_slicer_module_headless.py compares the headless tests' own stand-ins
(Testing/module/slicer_standins/) with it.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Slicer's pure-Python API, as the module uses it: module name -> source path
PYTHON_MODULES = {
    "slicer.util": "Base/Python/slicer/util.py",
    "slicer.ScriptedLoadableModule": "Base/Python/slicer/ScriptedLoadableModule.py",
    "slicer.i18n": "Base/Python/slicer/i18n.py",
    "slicer.packaging": "Base/Python/slicer/packaging.py",
    "slicer.parameterNodeWrapper": "Base/Python/slicer/parameterNodeWrapper/__init__.py",
}
PARAMETER_NODE_WRAPPER_DIR = "Base/Python/slicer/parameterNodeWrapper"

#: Qt classes of Slicer and CTK whose PythonQt-visible names are recorded (with their
#: Slicer/CTK base classes, followed automatically)
QT_CLASSES = [
    "qMRMLWidget", "qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget", "qMRMLSliceWidget",
    "qMRMLLayoutManager", "qSlicerLayoutManager", "qSlicerApplication", "qSlicerCoreApplication",
    "qSlicerModuleManager", "qSlicerAbstractCoreModule", "qSlicerAbstractModule", "qSlicerLoadableModule",
    "qSlicerScriptedLoadableModule", "qSlicerAbstractModuleRepresentation", "qSlicerAbstractModuleWidget",
    "qSlicerScriptedLoadableModuleWidget", "qSlicerWidget", "qMRMLSegmentEditorWidget",
    "ctkCollapsibleButton",
]


class Repo:
    def __init__(self, git_dir: str, ref: str):
        self.git_dir, self.ref = git_dir, ref
        self.commit = self.git("rev-parse", f"{ref}^{{commit}}").strip()
        self._files = None

    def git(self, *args: str) -> str:
        return subprocess.run(["git", f"--git-dir={self.git_dir}", *args], check=True, capture_output=True,
                              text=True).stdout

    def show(self, path: str) -> str:
        return self.git("show", f"{self.commit}:{path}")

    def files(self):
        if self._files is None:
            self._files = self.git("ls-tree", "-r", "--name-only", self.commit).splitlines()
        return self._files

    def find_header(self, cls: str):
        hits = [f for f in self.files() if f.endswith(f"/{cls}.h") and "/Testing/" not in f]
        return sorted(hits, key=len)[0] if hits else None


# ----------------------------------------------------------------------------- Python

def _params(fn: ast.FunctionDef):
    """Parameter names (in order), which are keyword-only and which have a default: enough to
    tell whether a call valid against a stand-in is valid against Slicer's function."""
    a = fn.args
    positional = [p.arg for p in a.posonlyargs + a.args]
    keyword_only = [p.arg for p in a.kwonlyargs]
    with_default = positional[len(positional) - len(a.defaults):] if a.defaults else []
    with_default += [p.arg for p, d in zip(a.kwonlyargs, a.kw_defaults) if d is not None]
    return {"parameters": positional + keyword_only, "keyword_only": keyword_only, "defaults": with_default,
            "varargs": a.vararg is not None, "varkw": a.kwarg is not None}


def _class_members(cls: ast.ClassDef):
    members = set()
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            members.add(node.name)
        elif isinstance(node, ast.Assign):
            members.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            members.add(node.target.id)
    for node in ast.walk(cls):  # self.X = ... in any method
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Attribute) and isinstance(t.value, ast.Name) and t.value.id == "self":
                    members.add(t.attr)
    return members


def python_module_api(source: str):
    """Module-level names, classes (members, bases) and function signatures of a module."""
    tree = ast.parse(source)
    names, classes, functions, star_imports, exported = set(), {}, {}, [], None
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            names.add(node.name)
            functions[node.name] = _params(node)
        elif isinstance(node, ast.ClassDef):
            names.add(node.name)
            classes[node.name] = {"bases": [ast.unparse(b) for b in node.bases],
                                  "members": sorted(_class_members(node))}
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    functions[f"{node.name}.{item.name}"] = _params(item)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for t in targets:
                if isinstance(t, ast.Name):
                    names.add(t.id)
                    if t.id == "__all__":
                        exported = ast.literal_eval(node.value)
        elif isinstance(node, ast.ImportFrom) and node.level == 1:
            if any(a.name == "*" for a in node.names):
                star_imports.append(node.module)
            else:
                names.update(a.asname or a.name for a in node.names)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names if a.name != "*")
        elif isinstance(node, ast.Try):  # e.g. optional imports
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.ClassDef)):
                    names.add(sub.name)
    return {"names": names, "classes": classes, "functions": functions, "star_imports": star_imports,
            "all": exported}


def parameter_node_wrapper_api(repo: Repo):
    """The names ``from slicer.parameterNodeWrapper import *`` gives, and what a wrapped
    parameter node instance has beside its parameters."""
    init = python_module_api(repo.show(f"{PARAMETER_NODE_WRAPPER_DIR}/__init__.py"))
    names, functions, classes = set(init["names"]), {}, {}
    for sub in init["star_imports"]:
        api = python_module_api(repo.show(f"{PARAMETER_NODE_WRAPPER_DIR}/{sub}.py"))
        names.update(api["all"] if api["all"] is not None else {n for n in api["names"] if not n.startswith("_")})
        functions.update(api["functions"])
        classes.update(api["classes"])
    instance = set()
    wrapper = ast.parse(repo.show(f"{PARAMETER_NODE_WRAPPER_DIR}/wrapper.py"))
    for node in ast.walk(wrapper):
        if isinstance(node, ast.Call) and ast.unparse(node.func) in ("checkedSetAttr", "setattr") \
                and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant):
            instance.add(node.args[1].value)
        if isinstance(node, ast.FunctionDef) and node.name == "_initMethod":
            for sub in ast.walk(node):
                if isinstance(sub, ast.Attribute) and isinstance(sub.value, ast.Name) and sub.value.id == "self" \
                        and isinstance(sub.ctx, ast.Store):
                    instance.add(sub.attr)
    return names, functions, classes, sorted(instance)


# ----------------------------------------------------------------------------- C++ headers

_ACCESS = re.compile(r"\b(public|protected|private)\s*(slots|Q_SLOTS)?\s*:|\b(signals|Q_SIGNALS)\s*:")


def _strip(text: str) -> str:
    text = re.sub(r'"(?:\\.|[^"\\\n])*"', '""', text)  # string literals may hold "//"
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"//[^\n]*", " ", text)
    return re.sub(r"^[ \t]*#(?:[^\n]*\\\n)*[^\n]*", " ", text, flags=re.M)  # with continuation lines


def _class_body(text: str, cls: str):
    m = re.search(rf"\bclass\s+(?:\w+\s+)?{cls}\b\s*(?::\s*([^{{;]+))?\{{", text)
    if not m:
        return None, []
    bases = [b.strip().split()[-1] for b in (m.group(1) or "").split(",") if b.strip()]
    depth, i = 1, m.end()
    while depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    return text[m.end():i - 1], bases


def _flatten_bodies(body: str) -> str:
    """Replace inline function bodies ``{ ... }`` by ``;`` so every member is one statement."""
    out, depth = [], 0
    for ch in body:
        if ch == "{":
            depth += 1
            if depth == 1:
                out.append(";")
            continue
        if ch == "}":
            depth -= 1
            continue
        if depth == 0:
            out.append(ch)
    return "".join(out)


def qt_class_api(text: str, cls: str):
    body, bases = _class_body(_strip(text), cls)
    if body is None:
        raise ValueError(f"class {cls} not found")
    body = _flatten_bodies(body)
    properties = sorted(set(re.findall(r"Q_PROPERTY\s*\(\s*(?:[^()]|\([^()]*\))*?\b(\w+)\s+(?:READ|MEMBER)\b", body)))
    slots, signals, invokables = set(), set(), set()
    access, kind = "private", None
    pos = 0
    for m in list(_ACCESS.finditer(body)) + [None]:
        chunk = body[pos:m.start() if m else len(body)]
        for statement in chunk.split(";"):
            statement = " ".join(statement.split())
            call = re.search(r"(~?\w+)\s*\(", re.sub(r"Q_PROPERTY\s*\(.*", "", statement))
            if not call or statement.startswith(("Q_", "typedef", "friend", "using", "enum")) and \
                    not statement.startswith("Q_INVOKABLE"):
                continue
            name = call.group(1)
            if name in ("Q_DECLARE_PRIVATE", "Q_DISABLE_COPY", "QVTK_OBJECT", "Q_OBJECT", "operator") \
                    or name.startswith("~") or name == cls:
                continue
            if "Q_INVOKABLE" in statement and access == "public":
                invokables.add(name)
            if kind == "slots" and access == "public":
                slots.add(name)
            elif kind == "signals":
                signals.add(name)
        if m is None:
            break
        if m.group(3):
            access, kind = "public", "signals"
        else:
            access, kind = m.group(1), ("slots" if m.group(2) else None)
        pos = m.end()
    return {"bases": bases, "properties": properties, "slots": sorted(slots), "invokables": sorted(invokables),
            "signals": sorted(signals)}


def pythonqt_decorators(repos):
    """Methods PythonQt adds to classes through decorator classes (``*PythonQtDecorators.h``):
    ``static_<Class>_<name>(...)`` is a static method, ``name(<Class>* self, ...)`` an instance one."""
    out = {}
    for repo in repos:
        for path in repo.files():
            if not path.endswith("PythonQtDecorators.h"):
                continue
            text = _strip(repo.show(path))
            for m in re.finditer(r"\bstatic_([A-Za-z0-9]+)_(\w+)\s*\(", text):
                out.setdefault(m.group(1), set()).add(m.group(2))
            for m in re.finditer(r"\b(\w+)\s*\(\s*(?:const\s+)?(\w+)\s*\*\s*\w+\s*[,)]", text):
                name, cls = m.groups()
                if not name.startswith(("new_", "delete_", "static_")) and re.match(r"(q|ctk|Q)\w+$", cls):
                    out.setdefault(cls, set()).add(name)
    return out


def qt_classes(slicer: Repo, ctk: Repo):
    decorators = pythonqt_decorators([slicer, ctk])
    out, todo = {}, list(QT_CLASSES)
    while todo:
        cls = todo.pop(0)
        if cls in out:
            continue
        repo = slicer if not cls.startswith("ctk") else ctk
        header = repo.find_header(cls)
        if header is None:
            raise SystemExit(f"no header for {cls} in {repo.git_dir}")
        info = qt_class_api(repo.show(header), cls)
        info["decorators"] = sorted(decorators.get(cls, ()))
        info["header"] = f"{'Slicer' if repo is slicer else 'CTK'}:{header}"
        out[cls] = info
        todo += [b for b in info["bases"] if re.match(r"(q(MRML|Slicer)|ctk)\w+$", b)]
    return dict(sorted(out.items()))


# ----------------------------------------------------------------------------- kits, modules

def startup_kits(repo: Repo):
    """Wrapped C++ libraries whose classes are in the ``slicer`` namespace as soon as
    ``import slicer`` returns (Base/Python/CMakeLists.txt: Slicer_PYTHON_MODULES_CONFIG)."""
    cmake = repo.show("Base/Python/CMakeLists.txt")
    config = re.search(r'set\(Slicer_PYTHON_MODULES_CONFIG\s+"(.*?)"\s*\)', cmake, re.S).group(1)
    kits = re.findall(r"'(\w+)'", config)
    out = {}
    for kit in kits:
        path = f"Base/Python/{kit}.py" if kit != "logic" else "Base/Python/slicer/logic.py"
        try:
            source = repo.show(path)
        except subprocess.CalledProcessError:
            out[kit] = [kit]  # a PythonQt kit or a wrapped module imported directly
            continue
        out[kit] = re.findall(r"^from (\w+Python) import \*", source, re.M)
    return out


def module_names(repo: Repo):
    names = set()
    for folder in ("Modules/Loadable", "Modules/Scripted", "Modules/CLI"):
        for entry in repo.git("ls-tree", "--name-only", f"{repo.commit}:{folder}").splitlines():
            if "." not in entry and entry not in ("DICOMLib", "DICOMPlugins"):
                names.add(entry)
    return sorted(names)


def slicer_version(repo: Repo):
    cmake = repo.show("CMakeLists.txt")
    part = {k: re.search(rf'set\(Slicer_VERSION_{k}\s+"(\d+)"\)', cmake).group(1) for k in ("MAJOR", "MINOR", "PATCH")}
    return f"{part['MAJOR']}.{part['MINOR']}.{part['PATCH']}"


# ----------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slicer-git-dir", required=True)
    parser.add_argument("--slicer-ref", default="HEAD")
    parser.add_argument("--ctk-git-dir", required=True)
    parser.add_argument("--index-git-dir", help="Slicer/ExtensionsIndex: writes extensions-index.json")
    parser.add_argument("--out", default=str(HERE))
    args = parser.parse_args(argv)
    slicer = Repo(args.slicer_git_dir, args.slicer_ref)
    ctk_tag = re.search(r'Slicer_\$\{proj\}_GIT_TAG\s+"(\w+)"', slicer.show("SuperBuild/External_CTK.cmake")).group(1)
    ctk = Repo(args.ctk_git_dir, ctk_tag)
    out = Path(args.out)

    python, functions, classes = {}, {}, {}
    for module, path in PYTHON_MODULES.items():
        if module == "slicer.parameterNodeWrapper":
            names, funcs, klasses, instance = parameter_node_wrapper_api(slicer)
            python[module] = sorted(names)
            python["slicer.parameterNodeWrapper:instance"] = instance
        else:
            api = python_module_api(slicer.show(path))
            python[module] = sorted(api["names"])
            funcs, klasses = api["functions"], api["classes"]
        functions.update({f"{module}.{name}": sig for name, sig in funcs.items()})
        classes.update({f"{module}.{name}": info for name, info in klasses.items()})
    data = {
        "about": "Names and signatures 3D Slicer defines, read from its sources by "
                 "Testing/module/slicer_api/regenerate.py; Testing/module/test_slicer_names.py checks "
                 "SynPo/SynPo.py against them, Testing/module/test_slicer_module_headless.py the headless "
                 "tests' stand-ins.",
        "slicer": {"repository": "https://github.com/Slicer/Slicer", "commit": slicer.commit,
                   "date": slicer.git("show", "-s", "--format=%cI", slicer.commit).strip(),
                   "describe": slicer.git("describe", "--tags", slicer.commit).strip(),
                   "version": slicer_version(slicer)},
        "ctk": {"repository": "https://github.com/commontk/CTK", "commit": ctk.commit,
                "pinned_by": "SuperBuild/External_CTK.cmake"},
        "startup_kits": startup_kits(slicer),
        "modules": module_names(slicer),
        "python": python,
        "python_functions": dict(sorted(functions.items())),
        "python_classes": dict(sorted(classes.items())),
        "qt_classes": qt_classes(slicer, ctk),
    }
    (out / "slicer-api.json").write_text(json.dumps(data, indent=1, sort_keys=False) + "\n")

    print(f"wrote {out / 'slicer-api.json'} from Slicer {data['slicer']['describe']}")
    if args.index_git_dir:
        index = Repo(args.index_git_dir, "HEAD")
        checks = index.show("scripts/check_description_files.py")
        schemas = sorted(f for f in index.files() if re.match(r"schemas/slicer-extension-catalog-entry-schema-v[\d.]+\.json$", f))
        rules = {
            "about": "The Extensions Index's rules for a description file, read by regenerate.py from "
                     "scripts/check_description_files.py and schemas/; Testing/module/test_extension_index.py applies them.",
            "repository": "https://github.com/Slicer/ExtensionsIndex", "commit": index.commit,
            "accepted_categories": ast.literal_eval(re.search(r"ACCEPTED_EXTENSION_CATEGORIES = (\[.*?\])", checks, re.S).group(1)),
            "license_file_names": ast.literal_eval(re.search(r"license_file_names = (\[.*?\])", checks).group(1)),
            "repository_size_limit_mb": int(re.search(r"size_limit_mb = (\d+)", checks).group(1)),
            "repository_name_prefixes": ast.literal_eval(re.search(r"allowed_prefixes = (\[.*?\])", checks).group(1)),
            "scm_url_schemes": ast.literal_eval(re.search(r"supported_schemes = (\[.*?\])", checks).group(1)),
            "schema_file": schemas[-1],
            "schema": json.loads(index.show(schemas[-1])),
        }
        (out / "extensions-index.json").write_text(json.dumps(rules, indent=1) + "\n")
        print(f"wrote {out / 'extensions-index.json'} from ExtensionsIndex {index.commit[:10]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
