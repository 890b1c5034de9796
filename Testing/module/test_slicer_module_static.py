"""What can be checked of the Slicer module without the Slicer application.

The .ui is well formed and holds every widget the code uses, with the class the code
and the parameter node wrapper's GUI connectors need; the parameter node's fields match
their widgets; every GUI action is wrapped in tryWithErrorDisplay; nothing heavy is
imported when Slicer loads the module; the CMake files list every script and resource;
the self-test is registered; calls into SynPoLib use names and keywords that exist.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import re
import struct
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from SynPoLib.backends import LABELS as BACKEND_LABELS

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "SynPo" / "SynPo.py"
UI = ROOT / "SynPo" / "Resources" / "UI" / "SynPo.ui"
ICON = ROOT / "SynPo" / "Resources" / "Icons" / "SynPo.png"

#: every widget the module's code touches, and the class it must be
EXPECTED_WIDGETS = {
    "inputsCollapsibleButton": "ctkCollapsibleButton",
    "modelCollapsibleButton": "ctkCollapsibleButton",
    "advancedCollapsibleButton": "ctkCollapsibleButton",
    "outputCollapsibleButton": "ctkCollapsibleButton",
    "supportVolumeSelector": "qMRMLNodeComboBox",
    "supportSegmentSelector": "qMRMLSegmentSelectorWidget",
    "supportSliceInfoLabel": "QLabel",
    "sliceViewComboBox": "QComboBox",
    "useCurrentSliceButton": "QPushButton",
    "supportAxisSpinBox": "QSpinBox",
    "supportAxisLabel": "QLabel",
    "supportSliceSpinBox": "QSpinBox",
    "allLabelledSlicesCheckBox": "QCheckBox",
    "queryVolumeSelector": "qMRMLNodeComboBox",
    "sliceRangeComboBox": "QComboBox",
    "sliceMarginSpinBox": "QSpinBox",
    "firstSliceSpinBox": "QSpinBox",
    "lastSliceSpinBox": "QSpinBox",
    "backendComboBox": "QComboBox",
    "deviceComboBox": "QComboBox",
    "deviceLabel": "QLabel",
    "useDisplayWindowCheckBox": "QCheckBox",
    "batchSizeSpinBox": "QSpinBox",
    "configTableWidget": "QTableWidget",
    "resetConfigButton": "QPushButton",
    "outputModeComboBox": "QComboBox",
    "outputNameLineEdit": "QLineEdit",
    "applyButton": "QPushButton",
    "cancelButton": "QPushButton",
    "undoButton": "QPushButton",
    "rerunButton": "QPushButton",
    "allSegmentsCheckBox": "QCheckBox",
    "progressBar": "QProgressBar",
    "statusLabel": "QLabel",
    "scoresTableWidget": "QTableWidget",
    "previousFlaggedButton": "QPushButton",
    "nextFlaggedButton": "QPushButton",
}
#: parameters the widget synchronises by hand (no GUI connector exists for these widgets)
MANUAL_PARAMETERS = {"supportSegmentation", "supportSegmentID", "configOverrides"}
MRML_WIDGETS = {"qMRMLNodeComboBox", "qMRMLSegmentSelectorWidget"}


@pytest.fixture(scope="module")
def tree():
    return ast.parse(MODULE.read_text(), filename=str(MODULE))


@pytest.fixture(scope="module")
def ui():
    return ET.parse(UI).getroot()  # raises on malformed XML


def ui_widgets(root):
    return {w.get("name"): w for w in root.iter("widget")}


def parameter_of(widget):
    for prop in widget.findall("property"):
        if prop.get("name") == "SlicerParameterName":
            return prop.find("string").text
    return None


def module_constants(tree):
    """Module-level literal assignments (BACKENDS, DEVICES, ...), evaluated safely."""
    out = {"BACKEND_LABELS": BACKEND_LABELS}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                # derived from SynPoLib's own tables (BACKENDS from SynPoLib.backends.LABELS)
                try:
                    code = compile(ast.Expression(node.value), "<constant>", "eval")
                    out[node.targets[0].id] = eval(code, {"__builtins__": {}},  # noqa: S307 (our own file)
                                                   dict(out))
                except Exception:
                    pass
    return out


def parameter_fields(tree):
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SynPoParameterNode")
    assert any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in cls.decorator_list)
    return {n.target.id: n.annotation for n in cls.body if isinstance(n, ast.AnnAssign)}


def evaluate(node, constants):
    """Evaluate an annotation argument such as list(BACKENDS) or [A, B] with module constants."""
    code = compile(ast.Expression(node), "<annotation>", "eval")
    return eval(code, {"__builtins__": {"list": list}}, dict(constants))  # noqa: S307 (our own file)


# ----------------------------------------------------------------------------- the .ui

def test_ui_is_well_formed_designer_xml(ui):
    assert ui.tag == "ui" and ui.get("version") == "4.0"
    assert ui.find("class").text == "SynPo"
    top = ui.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "SynPo"
    names = [w.get("name") for w in ui.iter("widget")]
    assert len(names) == len(set(names)), "widget names must be unique"
    declared = {c.find("class").text: c for c in ui.iter("customwidget")}
    used = {w.get("class") for w in ui.iter("widget")}
    for cls in used:
        if not cls.startswith("Q"):
            assert cls in declared, f"custom widget {cls} is not declared in <customwidgets>"
            assert declared[cls].find("header").text == f"{cls}.h"


def test_every_widget_the_code_uses_exists_with_the_right_class(tree, ui):
    used = {n.attr for n in ast.walk(tree)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Attribute) and n.value.attr == "ui"}
    assert used, "the module does not use self.ui at all?"
    unknown = used - set(EXPECTED_WIDGETS)
    assert not unknown, f"widgets used in SynPo.py but not in the expected list: {sorted(unknown)}"
    widgets = ui_widgets(ui)
    for name in sorted(used):
        assert name in widgets, f"self.ui.{name} is not in SynPo.ui"
        assert widgets[name].get("class") == EXPECTED_WIDGETS[name], name


def test_mrml_widgets_receive_the_scene(ui):
    receivers = {c.find("receiver").text for c in ui.iter("connection")
                 if c.find("sender").text == "SynPo" and c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"}
    mrml = {name for name, w in ui_widgets(ui).items() if w.get("class") in MRML_WIDGETS}
    assert mrml and mrml <= receivers, f"MRML widgets without the scene: {sorted(mrml - receivers)}"


def test_parameter_node_fields_match_their_widgets(tree, ui):
    fields = parameter_fields(tree)
    constants = module_constants(tree)
    bound = {}
    for name, widget in ui_widgets(ui).items():
        parameter = parameter_of(widget)
        if parameter is not None:
            assert parameter not in bound, f"two widgets bound to {parameter}"
            bound[parameter] = widget.get("class")
    assert set(bound) | MANUAL_PARAMETERS == set(fields), \
        f"unbound: {sorted(set(fields) - set(bound) - MANUAL_PARAMETERS)}; unknown: {sorted(set(bound) - set(fields))}"
    for parameter, cls in bound.items():
        annotation = fields[parameter]
        base, extras = annotation, []
        if isinstance(annotation, ast.Subscript) and getattr(annotation.value, "id", "") == "Annotated":
            base, *extras = annotation.slice.elts
        base_name = base.id if isinstance(base, ast.Name) else ast.unparse(base)
        calls = {e.func.id: e for e in extras if isinstance(e, ast.Call)}
        # the GUI connectors of slicer.parameterNodeWrapper.guiConnectors, by widget class
        if cls == "qMRMLNodeComboBox":
            assert base_name.startswith("vtkMRML") and base_name.endswith("Node"), parameter
        elif cls == "QComboBox":
            assert base_name == "str" and "Choice" in calls, f"{parameter}: a QComboBox needs str + Choice"
            choices = evaluate(calls["Choice"].args[0], constants)
            default = evaluate(calls["Default"].args[0], constants)
            assert default in choices, f"{parameter}: default {default!r} is not a choice"
        elif cls == "QSpinBox":
            assert base_name == "int", parameter
        elif cls == "QCheckBox":
            assert base_name == "bool", parameter
        elif cls == "QLineEdit":
            assert base_name == "str", parameter
        else:
            raise AssertionError(f"{parameter}: no parameter-node connector for {cls}")


def test_advanced_section_starts_collapsed(ui):
    advanced = ui_widgets(ui)["advancedCollapsibleButton"]
    collapsed = [p for p in advanced.findall("property") if p.get("name") == "collapsed"]
    assert collapsed and collapsed[0].find("bool").text == "true"


# ----------------------------------------------------------------------------- the code

def widget_class(tree):
    return next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SynPoWidget")


def test_every_gui_action_is_behind_try_with_error_display(tree):
    handlers = [f for f in widget_class(tree).body if isinstance(f, ast.FunctionDef) and f.name.startswith("on")]
    assert len(handlers) >= 10
    for f in handlers:
        wrapped = any(isinstance(s, ast.With) and any(
            isinstance(i.context_expr, ast.Call)
            and ast.unparse(i.context_expr.func) == "slicer.util.tryWithErrorDisplay" for i in s.items)
            for s in f.body)
        assert wrapped, f"{f.name} is not wrapped in slicer.util.tryWithErrorDisplay"


def test_connected_slots_exist(tree):
    methods = {f.name for f in widget_class(tree).body if isinstance(f, ast.FunctionDef)}
    slots = set()
    for n in ast.walk(widget_class(tree)):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in ("connect", "addObserver"):
            callback = n.args[-1]  # connect(signal, slot) / addObserver(object, event, callback)
            if isinstance(callback, ast.Attribute) and ast.unparse(callback.value) == "self":
                slots.add(callback.attr)
    assert slots and slots <= methods, sorted(slots - methods)


ALLOWED_TOP_LEVEL = {"importlib.util", "logging", "os", "sys", "time", "typing", "qt", "slicer", "vtk",
                     "slicer.parameterNodeWrapper", "slicer.ScriptedLoadableModule", "slicer.util",
                     "SynPoLib.backends"}  # the backends' names and labels: numpy only (checked below)


def test_nothing_heavy_is_imported_when_slicer_loads_the_module(tree):
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module]
        else:
            continue
        assert set(names) <= ALLOWED_TOP_LEVEL, f"module-level import of {names} (import it on first use)"


def test_light_synpolib_modules_do_not_pull_in_torch():
    code = ("import sys, SynPoLib, SynPoLib.backends, SynPoLib.scene, SynPoLib.scene.runs, SynPoLib.scene.slicing, SynPoLib.backends.requirements, "
            "SynPoLib.volume.qc, SynPoLib.presets, SynPoLib.scene.selftest\n"
            "heavy = [m for m in ('torch', 'sklearn', 'scipy', 'timm', 'sam2') if m in sys.modules]\n"
            "assert not heavy, heavy\n"
            "from SynPoLib import Support, segment_volume, create_backend\n"  # lazy names still resolve
            "assert callable(segment_volume) and callable(create_backend) and Support\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_calls_into_synpolib_use_names_and_keywords_that_exist(tree):
    aliases = {}  # local name -> SynPoLib module
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("SynPoLib"):
            target = importlib.import_module(node.module)
            for a in node.names:
                is_package = hasattr(target, "__path__")
                submodule = is_package and importlib.util.find_spec(f"{node.module}.{a.name}") is not None
                if submodule:
                    aliases[a.asname or a.name] = importlib.import_module(f"{node.module}.{a.name}")
                else:
                    assert hasattr(target, a.name), f"from {node.module} import {a.name}: no such name"
                    aliases[a.asname or a.name] = getattr(target, a.name)
    checked = 0
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id in aliases \
                and inspect.ismodule(aliases[func.value.id]):
            target = getattr(aliases[func.value.id], func.attr, None)
            assert target is not None, f"{func.value.id}.{func.attr} does not exist"
        elif isinstance(func, ast.Name) and func.id in aliases and callable(aliases[func.id]):
            target = aliases[func.id]
        else:
            continue
        if not callable(target) or inspect.isclass(target) and issubclass(target, BaseException):
            continue
        parameters = inspect.signature(target).parameters
        takes_kwargs = any(p.kind == p.VAR_KEYWORD for p in parameters.values())
        for kw in node.keywords:
            if kw.arg is not None and not takes_kwargs:
                assert kw.arg in parameters, f"{ast.unparse(func)}() has no keyword {kw.arg!r}"
        checked += 1
    assert checked >= 8


def test_self_test_is_registered(tree):
    test = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "SynPoTest")
    assert [ast.unparse(b) for b in test.bases] == ["ScriptedLoadableModuleTest"]
    methods = {f.name: f for f in test.body if isinstance(f, ast.FunctionDef)}
    tests = {name for name in methods if name.startswith("test_")}
    called = {n.attr for n in ast.walk(methods["runTest"]) if isinstance(n, ast.Attribute)}
    assert tests and tests <= called, f"runTest does not run {sorted(tests - called)}"
    source = ast.unparse(test)
    assert "SampleData" in source and re.search(r"backend=['\"]lite['\"]", source)
    assert "selftest.DICE_FLOOR" in source and "selftest.lesion_case" in source
    cmake = (ROOT / "SynPo" / "CMakeLists.txt").read_text()
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT\s+\$\{MODULE_NAME\}\.py\s*\)", cmake)
    assert "WITH_GENERIC_TESTS" in cmake


def test_module_compiles():
    compile(MODULE.read_text(), str(MODULE), "exec")


# ----------------------------------------------------------------------------- CMake and resources

def cmake_list(text, variable):
    match = re.search(rf"set\(\s*{variable}\s+(.*?)\)", text, re.S)
    assert match, f"{variable} is not set"
    return [item for item in match.group(1).split() if not item.startswith("#")]


def test_module_cmake_lists_every_script_and_resource():
    cmake = (ROOT / "SynPo" / "CMakeLists.txt").read_text()
    name = cmake_list(cmake, "MODULE_NAME")[0]
    assert name == "SynPo"
    scripts = [s.replace("${MODULE_NAME}", name) for s in cmake_list(cmake, "MODULE_PYTHON_SCRIPTS")]
    resources = [s.replace("${MODULE_NAME}", name) for s in cmake_list(cmake, "MODULE_PYTHON_RESOURCES")]
    for item in scripts + resources:
        assert (ROOT / "SynPo" / item).is_file(), item
    on_disk = sorted(str(p.relative_to(ROOT / "SynPo")) for p in (ROOT / "SynPo" / "Resources").rglob("*")
                     if p.is_file())
    assert sorted(resources) == on_disk
    assert sorted(scripts) == sorted(str(p.relative_to(ROOT / "SynPo")) for p in (ROOT / "SynPo").glob("*.py"))
    library = cmake_list(cmake, "SYNPOLIB_PYTHON_SCRIPTS")
    expected = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "SynPoLib").rglob("*.py"))
    assert sorted(library) == expected, f"missing: {sorted(set(expected) - set(library))}"
    assert "slicerMacroBuildScriptedModule(" in cmake
    assert re.search(r"ctkMacroCompilePythonScript\(.*TARGET_NAME SynPoLib"
                     r".*SOURCE_DIR \$\{CMAKE_CURRENT_SOURCE_DIR\}/\.\."
                     r".*DESTINATION_DIR \$\{CMAKE_BINARY_DIR\}/\$\{Slicer_QTSCRIPTEDMODULES_LIB_DIR\}"
                     r".*INSTALL_DIR \$\{Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR\}.*NO_INSTALL_SUBDIR", cmake, re.S)


def test_extension_cmake_has_complete_metadata():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    values = dict(re.findall(r'set\((EXTENSION_[A-Z]+)\s+"([^"]*)"\)', cmake))
    for key in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS", "DEPENDS"):
        assert values.get(f"EXTENSION_{key}", "").strip(), f"EXTENSION_{key} is missing or empty"
    assert values["EXTENSION_CATEGORY"] == "Segmentation"
    assert "PyTorch" in values["EXTENSION_DEPENDS"].split()
    assert values["EXTENSION_ICONURL"].endswith("/SynPo/Resources/Icons/SynPo.png") and ICON.is_file()
    # the icon and screenshots the URLs point at are files of this repository
    for url in [values["EXTENSION_ICONURL"]] + values["EXTENSION_SCREENSHOTURLS"].split():
        relative = url.split("/main/", 1)[1]
        assert (ROOT / relative).is_file(), f"{url} points at {relative}, which is not in the repository"
    assert re.search(r"project\(SynPo\)", cmake) and "add_subdirectory(SynPo)" in cmake
    assert "find_package(Slicer REQUIRED)" in cmake and "${Slicer_EXTENSION_CPACK}" in cmake


def test_icon_is_a_128_pixel_png():
    data = ICON.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    assert (width, height) == (128, 128)
