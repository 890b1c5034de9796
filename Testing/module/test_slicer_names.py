"""Every Slicer name SynPo/SynPo.py imports or calls exists where real 3D Slicer puts it.

The static tests read the module's own files; this one resolves its names against Slicer:

- wrapped C++ classes (MRML, segmentations, VTK) against PyPI's ``slicer-core``, whose
  ``slicer_core.X`` is the same wrapped library as Slicer's ``XPython``; names used while
  Slicer loads the file (module level, e.g. the parameter node's field types) must come
  from a library that ``import slicer`` has already loaded;
- Slicer's pure-Python API (``slicer.util``, ``slicer.ScriptedLoadableModule``,
  ``slicer.parameterNodeWrapper``, ``slicer.i18n``, ``slicer.packaging``), the Qt classes
  of Slicer and CTK that PythonQt exposes (properties, slots, Q_INVOKABLE methods,
  signals, decorators) and the module names (``slicer.modules.<name>``) against
  ``Testing/module/slicer_api/slicer-api.json``, read from Slicer's sources (its commit is in
  the file; ``Testing/module/slicer_api/regenerate.py`` rewrites it from a newer checkout);
- Qt's own classes against a real Qt binding (PySide6), as far as a name is checkable:
  PythonQt shows Qt properties as attributes, PySide6 lists them in the meta-object.

Restoring the old import (``from vtkSlicerSegmentationsModuleMRMLPython import
vtkMRMLSegmentationNode``) fails ``test_imports_resolve_where_slicer_puts_them``.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import json
import re
import sys
import unittest
import xml.etree.ElementTree as ET
from functools import lru_cache
from pathlib import Path

import pytest

import slicer  # PyPI slicer-core: the real wrapped MRML libraries (a missing one fails, never skips)
import slicer_core
import vtk

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "SynPo" / "SynPo.py"
UI = ROOT / "SynPo" / "Resources" / "UI" / "SynPo.ui"
API = json.loads((Path(__file__).resolve().parent / "slicer_api" / "slicer-api.json").read_text())

#: Slicer's wrapped library "<name>Python" is slicer-core's "slicer_core.<name>", except these
KIT_ALIASES = {"SlicerBaseLogicPython": "vtkSlicerBaseLogic"}
#: modules that are not Slicer's and are imported on first use only
NOT_SLICER = {"SynPoLib", "numpy", "PyTorchUtils", "torch"}
PYTHON_API = [m for m in API["python"] if ":" not in m]


def source_tree():
    return ast.parse(MODULE.read_text(), filename=str(MODULE))


def slicer_core_module(python_kit: str):
    """slicer-core's module for Slicer's wrapped library ``python_kit`` ("MRMLCorePython")."""
    name = KIT_ALIASES.get(python_kit, python_kit[:-len("Python")] if python_kit.endswith("Python") else None)
    if name is None:
        return None
    try:
        return importlib.import_module(f"slicer_core.{name}")
    except ImportError:
        return None


def startup_kit_modules():
    """slicer-core modules of the wrapped libraries ``import slicer`` loads in Slicer."""
    out = []
    for kits in API["startup_kits"].values():
        for kit in kits:
            module = slicer_core_module(kit)
            if module is not None:
                out.append(module)
    return out


def defining_kit(name: str):
    for module_name in sorted(n for n in dir(slicer_core) if not n.startswith("_")):
        module = getattr(slicer_core, module_name)
        if getattr(module, "__name__", "").startswith("slicer_core.") and name in vars(module):
            return module
    return None


# ----------------------------------------------------------------------------- Qt classes

@lru_cache(None)
def pyside():
    from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets

    return [QtCore, QtGui, QtWidgets, QtUiTools]


def qt_binding_class(name: str):
    for module in pyside():
        if hasattr(module, name):
            return getattr(module, name)
    return None


def qt_names(cls) -> set:
    """What PythonQt shows on a Qt class: its methods, and its meta-properties as attributes."""
    names = set(dir(cls))
    meta = getattr(cls, "staticMetaObject", None)
    if meta is not None:
        names |= {bytes(meta.property(i).name()).decode() if not isinstance(meta.property(i).name(), str)
                  else meta.property(i).name() for i in range(meta.propertyCount())}
    return names


@lru_cache(None)
def class_names(cls_name: str) -> frozenset:
    """Names PythonQt shows on a Slicer/CTK/Qt class, bases included."""
    info = API["qt_classes"].get(cls_name)
    if info is None:
        cls = qt_binding_class(cls_name)
        assert cls is not None, f"{cls_name}: neither a Qt class nor recorded in slicer-api.json"
        return frozenset(qt_names(cls))
    names = set()
    for key in ("properties", "slots", "invokables", "signals", "decorators"):
        names.update(info[key])
    for base in info["bases"]:
        names |= class_names(base)
    return frozenset(names)


# ----------------------------------------------------------------------------- the module's names

def attribute_chain(node):
    """["slicer", "util", "pip_install"] for slicer.util.pip_install (None when not a plain chain)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.insert(0, node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return [node.id] + parts
    if isinstance(node, ast.Call):  # slicer.app.layoutManager().sliceWidget -> keep the call's chain
        inner = attribute_chain(node.func)
        return inner + ["()"] + parts if inner else None
    return None


def module_level_nodes(tree):
    """Statements Slicer runs when it loads the file (module level and class bodies, decorators,
    annotations), not function bodies."""
    out = []

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                out.extend(child.decorator_list if hasattr(child, "decorator_list") else [])
                continue
            out.append(child)
            visit(child)

    visit(tree)
    return out


def test_the_names_list_says_which_slicer_it_was_read_from():
    about = API["slicer"]
    assert re.fullmatch(r"[0-9a-f]{40}", about["commit"]) and re.fullmatch(r"\d+\.\d+\.\d+", about["version"])
    assert about["repository"].endswith("Slicer/Slicer") and about["describe"].startswith("v5.")
    assert re.fullmatch(r"[0-9a-f]{40}", API["ctk"]["commit"])
    assert "slicer.util" in API["python"] and "qMRMLNodeComboBox" in API["qt_classes"]


def test_imports_resolve_where_slicer_puts_them():
    tree = source_tree()
    at_load = {id(n) for n in module_level_nodes(tree)}
    problems, checked = [], 0
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)) or (isinstance(node, ast.ImportFrom) and node.level):
            continue
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module]
        imported = [] if isinstance(node, ast.Import) else [a.name for a in node.names]
        for module in modules:
            top = module.split(".")[0]
            if top in NOT_SLICER or top in sys.stdlib_module_names:
                continue
            checked += 1
            where = f"line {node.lineno}: {ast.unparse(node)}"
            if module in API["python"]:
                missing = [n for n in imported if n not in API["python"][module]]
                problems += [f"{where}: Slicer's {module} has no {n}" for n in missing]
            elif module == "slicer":
                for n in imported:
                    kit = defining_kit(n)
                    if kit is None and n not in API["python"] and not hasattr(slicer, n):
                        problems.append(f"{where}: Slicer's slicer namespace has no {n}")
                    elif id(node) in at_load and kit is not None and kit not in startup_kit_modules():
                        problems.append(f"{where}: {n} is wrapped in {kit.__name__.split('.')[-1]}, which is "
                                        "not loaded yet when Slicer loads a scripted module")
            elif module in ("qt", "ctk"):
                for n in imported:
                    if module == "qt" and qt_binding_class(n) is None or module == "ctk" and n not in API["qt_classes"]:
                        problems.append(f"{where}: {module} has no {n}")
            elif module == "vtk":
                problems += [f"{where}: vtk has no {n}" for n in imported if not hasattr(vtk, n)]
            elif module.endswith("Python"):  # a wrapped C++ library imported directly
                core = slicer_core_module(module)
                if core is None:
                    problems.append(f"{where}: Slicer has no wrapped library {module}")
                    continue
                for n in imported:
                    if n not in vars(core):
                        home = defining_kit(n)
                        hint = f" (it is in {home.__name__.split('.')[-1]}Python)" if home is not None else ""
                        problems.append(f"{where}: Slicer's {module} has no {n}{hint}")
                if id(node) in at_load and core not in startup_kit_modules():
                    problems.append(f"{where}: {module} is not loaded yet when Slicer loads a scripted module")
            elif module in API["modules"]:  # a Slicer module's Python file (e.g. SampleData)
                continue
            else:
                problems.append(f"{where}: {module} is neither Slicer's nor a known dependency")
    assert checked >= 6
    assert not problems, "\n".join(problems)


def scripted_module_attribute(name: str) -> bool:
    """slicer.modules.<Name>Widget / <Name>Instance of a scripted module."""
    m = re.fullmatch(r"(\w+?)(Widget|Instance)", name)
    return bool(m) and m.group(1) in API["modules"]


def test_slicer_namespace_names_exist():
    tree = source_tree()
    lowercase_modules = {m.lower() for m in API["modules"]}
    module_object = class_names("qSlicerLoadableModule") | class_names("qSlicerScriptedLoadableModule")
    problems, checked = [], 0
    seen = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute):
            continue
        chain = attribute_chain(node)
        if not chain or chain[0] != "slicer" or len(chain) < 2 or tuple(chain) in seen:
            continue
        seen.add(tuple(chain))
        checked += 1
        where = f"line {node.lineno}: {'.'.join(chain)}"
        head, rest = chain[1], chain[2:]
        if f"slicer.{head}" in API["python"]:
            if rest and rest[0] != "()" and rest[0] not in API["python"][f"slicer.{head}"]:
                problems.append(f"{where}: slicer.{head} has no {rest[0]}")
        elif head == "app":
            if rest and rest[0] not in class_names("qSlicerApplication"):
                problems.append(f"{where}: qSlicerApplication has no {rest[0]}")
            if rest[:3] == ["layoutManager", "()", rest[2] if len(rest) > 2 else None] and len(rest) > 2 \
                    and rest[2] not in class_names("qSlicerLayoutManager"):
                problems.append(f"{where}: qSlicerLayoutManager has no {rest[2]}")
        elif head == "mrmlScene":
            if rest and not hasattr(slicer.vtkMRMLScene, rest[0]):
                problems.append(f"{where}: vtkMRMLScene has no {rest[0]}")
        elif head == "modules":
            if rest and rest[0] not in lowercase_modules and not scripted_module_attribute(rest[0]):
                problems.append(f"{where}: Slicer has no module '{rest[0]}'")
            elif len(rest) > 1 and rest[0] in lowercase_modules and rest[1] not in module_object:
                problems.append(f"{where}: a Slicer module object has no {rest[1]}")
        elif head.startswith("vtk"):
            if not hasattr(slicer, head):
                problems.append(f"{where}: Slicer has no wrapped class {head}")
            elif rest and rest[0] != "()" and not hasattr(getattr(slicer, head), rest[0]):
                problems.append(f"{where}: {head} has no {rest[0]}")
        elif head in API["qt_classes"]:
            continue
        else:
            problems.append(f"{where}: not a name Slicer puts in the slicer namespace")
    assert checked >= 20
    assert not problems, "\n".join(problems)


def base_members(cls_name: str) -> set:
    """Members a module class inherits from Slicer's base classes (and unittest's)."""
    info = API["python_classes"][cls_name]
    members = set(info["members"])
    module = cls_name.rsplit(".", 1)[0]
    for base in info["bases"]:
        if base == "unittest.TestCase":
            members |= set(dir(unittest.TestCase))
        elif f"{module}.{base}" in API["python_classes"]:
            members |= base_members(f"{module}.{base}")
    return members


SLICER_BASES = {
    "ScriptedLoadableModule": "slicer.ScriptedLoadableModule.ScriptedLoadableModule",
    "ScriptedLoadableModuleWidget": "slicer.ScriptedLoadableModule.ScriptedLoadableModuleWidget",
    "ScriptedLoadableModuleLogic": "slicer.ScriptedLoadableModule.ScriptedLoadableModuleLogic",
    "ScriptedLoadableModuleTest": "slicer.ScriptedLoadableModule.ScriptedLoadableModuleTest",
    "VTKObservationMixin": "slicer.util.VTKObservationMixin",
}
#: what ``self.parent`` is in Slicer for each base class
PARENT_CLASS = {"ScriptedLoadableModule": "qSlicerScriptedLoadableModule",
                "ScriptedLoadableModuleWidget": "qSlicerScriptedLoadableModuleWidget"}


def test_inherited_members_and_parents_exist():
    tree = source_tree()
    problems, checked = [], 0
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef)):
        bases = [ast.unparse(b) for b in cls.bases]
        slicer_bases = [b for b in bases if b in SLICER_BASES]
        if not slicer_bases:
            continue
        own = {n.name for n in cls.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
        own |= {t.attr for n in ast.walk(cls) if isinstance(n, (ast.Assign, ast.AnnAssign, ast.AugAssign))
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target])
                if isinstance(t, ast.Attribute) and ast.unparse(t.value) == "self"}
        inherited = set().union(*(base_members(SLICER_BASES[b]) for b in slicer_bases))
        parent = set().union(*(class_names(PARENT_CLASS[b]) for b in slicer_bases if b in PARENT_CLASS))
        for node in ast.walk(cls):
            if not isinstance(node, ast.Attribute) or ast.unparse(node.value) != "self":
                continue
            checked += 1
            if node.attr not in own and node.attr not in inherited:
                problems.append(f"line {node.lineno}: {cls.name} uses self.{node.attr}, which neither it nor "
                                f"Slicer's {', '.join(slicer_bases)} defines")
        for node in ast.walk(cls):
            if isinstance(node, ast.Attribute) and ast.unparse(node.value) == "self.parent" and parent \
                    and node.attr not in parent:
                problems.append(f"line {node.lineno}: {cls.name}: self.parent ({'/'.join(PARENT_CLASS[b] for b in slicer_bases if b in PARENT_CLASS)}) has no {node.attr}")
    assert checked >= 30
    assert not problems, "\n".join(problems)


def ui_classes():
    return {w.get("name"): w.get("class") for w in ET.parse(UI).getroot().iter("widget")}


def test_ui_widgets_are_used_with_names_their_class_has():
    classes = ui_classes()
    problems, checked = [], 0
    for node in ast.walk(source_tree()):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and ast.unparse(node.value.value) == "self.ui" and node.value.attr in classes:
            cls = classes[node.value.attr]
            checked += 1
            if node.attr not in class_names(cls):
                problems.append(f"line {node.lineno}: self.ui.{node.value.attr} is a {cls}, which has no {node.attr}")
    assert checked >= 30
    assert not problems, "\n".join(problems)


def test_parameter_node_wrapper_instance_methods_exist():
    instance = set(API["python"]["slicer.parameterNodeWrapper:instance"])
    tree = source_tree()
    fields = {n.target.id for c in tree.body if isinstance(c, ast.ClassDef) and c.name == "SynPoParameterNode"
              for n in c.body if isinstance(n, ast.AnnAssign)}
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and ast.unparse(node.value) in ("self._parameterNode", "p") \
                and node.attr not in fields and node.attr not in instance:
            problems.append(f"line {node.lineno}: a parameter node wrapper has no {node.attr}")
    assert not problems, "\n".join(problems)


def module_aliases(tree):
    """Local names bound to Slicer's Python modules: ``packaging = importlib.import_module("slicer.packaging")``."""
    out = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call) \
                and ast.unparse(node.value.func) == "importlib.import_module" and node.value.args \
                and isinstance(node.value.args[0], ast.Constant) and node.value.args[0].value in API["python"]:
            out.update({t.id: node.value.args[0].value for t in node.targets if isinstance(t, ast.Name)})
    return out


def test_keywords_passed_to_slicer_functions_exist():
    tree = source_tree()
    aliases = module_aliases(tree)
    assert aliases == {"packaging": "slicer.packaging"}
    problems, checked = [], 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.keywords:
            continue
        chain = attribute_chain(node.func)
        if chain and chain[0] in aliases:
            chain = aliases[chain[0]].split(".") + chain[1:]
        if not chain or chain[0] != "slicer" or len(chain) != 3:
            continue
        signature = API["python_functions"].get(".".join(chain))
        if signature is None:
            continue
        checked += 1
        for kw in node.keywords:
            if kw.arg is not None and kw.arg not in signature["parameters"] and not signature["varkw"]:
                problems.append(f"line {node.lineno}: {'.'.join(chain)}() has no keyword {kw.arg}")
        if chain[:2] == ["slicer", "packaging"] and chain[2] not in API["python"]["slicer.packaging"]:
            problems.append(f"line {node.lineno}: slicer.packaging has no {chain[2]}")
    assert checked >= 4
    assert not problems, "\n".join(problems)


@lru_cache(None)
def wrapped_method_names() -> frozenset:
    """Every method of every wrapped Slicer class (slicer-core) and the VTK classes SynPo names."""
    names = set()
    for module in vars(slicer_core).values():
        if getattr(module, "__name__", "").startswith("slicer_core."):
            for cls in vars(module).values():
                if isinstance(cls, type):
                    names.update(dir(cls))
    for node in ast.walk(source_tree()):
        chain = attribute_chain(node) if isinstance(node, ast.Attribute) else None
        if chain and chain[0] == "vtk" and len(chain) >= 2 and hasattr(vtk, chain[1]):
            names.update(dir(getattr(vtk, chain[1])))
    return frozenset(names)


def test_methods_called_on_mrml_and_vtk_objects_exist():
    """CamelCase calls (the MRML/VTK convention): some wrapped class must have the method.
    Exact classes are checked where the receiver is known (tests above); this catches
    misspelt or removed MRML methods anywhere in the file."""
    known = wrapped_method_names()
    tree = source_tree()
    modules = {(a.asname or a.name).split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    problems, checked = [], 0
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and re.fullmatch(r"[A-Z][A-Za-z0-9]+", node.func.attr):
            chain = attribute_chain(node.func.value) or []
            if chain and (chain[0] in modules - {"slicer", "vtk"} or chain[0] in dir(builtins)
                          or ".".join(chain[:2]) in API["python"]):
                continue  # a class of a Python module (threading.Event, slicer.util.NodeModify, ...)
            checked += 1
            if node.func.attr not in known:
                problems.append(f"line {node.lineno}: no wrapped MRML/VTK class has a method {node.func.attr}")
    assert checked >= 30
    assert not problems, "\n".join(problems)


def test_qt_names_exist_in_a_real_qt():
    problems, checked = [], 0
    for node in ast.walk(source_tree()):
        chain = attribute_chain(node) if isinstance(node, ast.Attribute) else None
        if not chain or chain[0] != "qt" or len(chain) < 2 or "()" in chain:
            continue
        checked += 1
        cls = qt_binding_class(chain[1])
        if cls is None:
            problems.append(f"line {node.lineno}: Qt has no {chain[1]}")
        elif len(chain) > 2 and chain[2] not in qt_names(cls) and not hasattr(cls, chain[2]):
            problems.append(f"line {node.lineno}: qt.{chain[1]} has no {chain[2]}")
    assert checked >= 5
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("old, new", [
    ("from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode",
     "from MRMLCorePython import vtkMRMLScalarVolumeNode\n"
     "from vtkSlicerSegmentationsModuleMRMLPython import vtkMRMLSegmentationNode"),
    ("from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode",
     "from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentEditorNode as vtkMRMLSegmentationNode"),
])
def test_the_import_check_catches_the_old_bug(tmp_path, monkeypatch, old, new):
    """The check above fails on the import SynPo.py had (the segmentation node taken from the
    Segmentations module's MRML library, which wraps only vtkMRMLSegmentEditorNode), and on a
    class whose library Slicer has not loaded when it reads the module file."""
    source = MODULE.read_text()
    assert old in source
    broken = tmp_path / "SynPo.py"
    broken.write_text(source.replace(old, new))
    monkeypatch.setattr(sys.modules[__name__], "MODULE", broken)
    with pytest.raises(AssertionError, match="vtkSlicerSegmentationsModuleMRMLPython|not loaded yet"):
        test_imports_resolve_where_slicer_puts_them()
