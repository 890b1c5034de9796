"""The Slicer module's own code, run headless: SynPo/SynPo.py unchanged, its .ui loaded by a
real Qt (PySide6, offscreen), the real MRML scene and ``slicer.util`` of slicer-core, and the
stand-ins of Testing/module/slicer_headless.py and Testing/module/slicer_standins/ (written
for these tests, not Slicer's code) for the rest of Slicer: its application and widgets, and
its ScriptedLoadableModule, parameterNodeWrapper and packaging modules. Every stand-in has
only names and signatures Slicer's own have (test_stand_ins_have_only_names_the_real_classes_have).

Covered: loading and setup, enter (default inputs, the device line with a scene saved on a
GPU computer), the parameter node round trip (GUI <-> node <-> saved scene), Apply with the
real LiteMedSAM on a small phantom (progress, streaming, result, 3D surface), the review
table (the user's thresholds, refresh after 3D clean-up, next/previous flagged), undo,
cancel, Apply disabled while packages install, slicer.packaging, the self-test in both
orders (and what it does on a build machine), Reload picking up SynPoLib changes, and the
panel's width. With SYNPO_PANEL_SCREENSHOT=path the panel after a run is saved there
(Resources/Screenshots/slicer-panel-headless.png is made that way).
"""

from __future__ import annotations

import importlib
import os
import shutil
import sys
import unittest
from pathlib import Path

import numpy as np
import pytest

import slicer  # slicer-core: a missing one fails, never skips
import slicer_headless
import test_slicer_names as names
from slicer_scene import LPS, add_segmentation, add_volume, geometry, oriented, phantom, snapshot

from SynPoLib.metrics import dice

ROOT = Path(__file__).resolve().parents[2]
SHAPE = (14, 22, 18)
CENTRE, RADII = (1.5, -2.0, 1.0), (5.0, 6.0, 4.0)
MATRIX = geometry(LPS, (1.0, 1.0, 1.5), (7.0, 10.0, -10.0))
#: Slicer's default module panel width (px) the panel must fit
PANEL_WIDTH = 607
#: as Testing/test_mrml_runs.py: LiteMedSAM on this phantom within one volume          [G]
DICE_FLOOR = 0.75
#: the names and signatures read from Slicer's sources
API = names.API


@pytest.fixture(scope="module")
def session():
    s = slicer_headless.Session().install()
    s.load_module()
    yield s
    s.uninstall()


@pytest.fixture(autouse=True)
def no_unraised_errors(session):
    session.errors.clear()
    yield
    assert not session.errors, f"exceptions in Qt slots: {session.errors!r}"


def labelled_scene(session, axis=1, show_3d=False):
    """A phantom volume shown in the red view, its organ labelled on one slice along ``axis``."""
    scene = session.new_scene()
    image, truth = phantom(MATRIX, SHAPE, CENTRE, RADII)
    other = add_volume(scene, np.zeros(SHAPE, np.float32), MATRIX, name="other")
    volume = add_volume(scene, image, MATRIX, name="MR", window=(50.0, 900.0))
    index = int(np.argwhere(truth).mean(axis=0).round()[axis])
    label = np.zeros_like(truth)
    where = [slice(None)] * 3
    where[axis] = index
    label[tuple(where)] = truth[tuple(where)]
    segmentation, (segment,) = add_segmentation(scene, volume, [("organ", label, (0.9, 0.3, 0.2))])
    if show_3d:
        assert segmentation.CreateClosedSurfaceRepresentation()
    red = next(scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
               for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode"))
               if scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode").GetLayoutName() == "Red")
    red.SetBackgroundVolumeID(volume.GetID())
    return dict(scene=scene, volume=volume, other=other, segmentation=segmentation, segment=segment,
                truth=truth, index=index, axis=axis)


def open_module(session):
    widget = session.create_widget()
    session.enter(widget)
    return widget


def run_to_end(session, widget, timeout=600):
    assert session.pump(lambda: widget._run is not None and widget._run.finished and not widget._timer.isActive(),
                        timeout=timeout), "the run did not finish"


# ----------------------------------------------------------------------------- setup and enter

def test_the_module_file_loads_and_the_panel_sets_up(session):
    module = sys.modules["SynPo"]
    assert module.__file__ == str(slicer_headless.MODULE_FILE)
    assert slicer.modules.synpo.title == "SynPo" and slicer.modules.synpo.categories == ["Segmentation"]
    assert "SynPo" in slicer.selfTests
    session.new_scene()
    widget = open_module(session)
    assert widget.ui.applyButton.enabled is False  # nothing to segment yet
    assert "Label the structure" in widget.ui.supportSliceInfoLabel.text
    assert widget.ui.advancedCollapsibleButton.collapsed is True
    assert widget.ui.supportAxisSpinBox.enabled is False  # set by hand only, in Advanced


def test_enter_takes_the_red_view_volume_and_the_segment_itself(session):
    case = labelled_scene(session, axis=1)
    widget = open_module(session)
    p = widget._parameterNode
    assert p.supportVolume.GetID() == case["volume"].GetID()  # the red view's, not the first volume
    assert p.supportSegmentation.GetID() == case["segmentation"].GetID() and p.supportSegmentID == case["segment"]
    assert widget.ui.supportSliceInfoLabel.text.startswith(f"Labelled on slice {case['index']} along J")
    assert widget.ui.applyButton.enabled is True  # three clicks: the segment is all it needs


def test_enter_takes_the_segment_editor_source_volume_first(session):
    case = labelled_scene(session)
    editor = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetAndObserveSourceVolumeNode(case["other"])
    editor.SetAndObserveSegmentationNode(case["segmentation"])
    widget = open_module(session)
    assert widget._parameterNode.supportVolume.GetID() == case["other"].GetID()


def test_a_scene_saved_on_a_gpu_computer_shows_the_cpu_fallback(session):
    labelled_scene(session)
    widget = open_module(session)
    widget._parameterNode.device = "cuda"  # what a scene saved on a CUDA computer holds
    widget.exit()
    session.enter(widget)
    assert "cuda is not available on this computer" in widget.ui.deviceLabel.text
    assert "CPU" in widget.ui.deviceLabel.text
    assert widget.logic.resolveDevice("cuda") == "cpu"


def test_parameter_node_round_trip_gui_node_and_saved_scene(session):
    case = labelled_scene(session)
    widget = open_module(session)
    p, ui = widget._parameterNode, widget.ui
    # GUI -> node
    ui.sliceRangeComboBox.currentIndex = 1
    ui.sliceMarginSpinBox.value = 7
    ui.autoStopCheckBox.checked = False
    ui.outputNameLineEdit.text = "Organ (SynPo)"
    ui.queryVolumeSelector.setCurrentNode(case["other"])
    assert (p.sliceRange, p.sliceMargin, p.autoStop, p.outputName) == ("Around the support slice", 7, False,
                                                                        "Organ (SynPo)")
    assert p.queryVolume.GetID() == case["other"].GetID()
    # stored as Slicer's wrapper stores them (str(value), "True"/"False", a node reference whose
    # role is the parameter's name), so scenes saved by Slicer and by these tests read alike
    node = p.parameterNode
    assert (node.GetParameter("sliceMargin"), node.GetParameter("autoStop"), node.GetParameter("outputName")) == (
        "7", "False", "Organ (SynPo)")
    assert node.HasParameter("queryVolume") and node.GetNodeReferenceID("queryVolume") == case["other"].GetID()
    # node -> GUI
    p.batchSize = 4
    p.outputMode = "New segmentation"
    assert ui.batchSizeSpinBox.value == 4 and ui.outputModeComboBox.currentText == "New segmentation"
    assert ui.sliceMarginSpinBox.enabled is True and ui.firstSliceSpinBox.enabled is False
    # the advanced table writes overrides into the node
    table = ui.configTableWidget
    row = next(r for r in range(table.rowCount) if table.item(r, 0).text() == "points.n_negative")
    table.item(row, 1).setText("2")
    assert p.configOverrides == "points.n_negative=2"
    # saved with the scene: write it as MRML, read it into a new scene, enter again
    scene = slicer.mrmlScene
    scene.SetSaveToXMLString(1)
    scene.Commit()
    xml = scene.GetSceneXMLString()
    scene.Clear(1)  # File > Close scene, then load the saved one into the same scene
    scene.SetLoadFromXMLString(1)
    scene.SetSceneXMLString(xml)
    scene.Import()
    widget.exit()
    session.enter(widget)
    p = widget._parameterNode
    assert (p.sliceMargin, p.autoStop, p.outputName, p.batchSize, p.configOverrides) == (
        7, False, "Organ (SynPo)", 4, "points.n_negative=2")
    assert ui.sliceMarginSpinBox.value == 7 and ui.outputNameLineEdit.text == "Organ (SynPo)"
    assert p.queryVolume is not None and p.queryVolume.GetName() == "other"


# ----------------------------------------------------------------------------- Apply, progress, review, undo

@pytest.fixture(scope="module")
def finished_run(session):
    """One Apply with the real LiteMedSAM: 5 slices around the label, thresholds set by the user
    (every slice flagged for low confidence, none left out), 3D clean-up on, surface shown."""
    case = labelled_scene(session, axis=0, show_3d=True)
    widget = open_module(session)
    p = widget._parameterNode
    p.sliceRange, p.sliceMargin = "Around the support slice", 2
    # the default (registration) mode judges its prototype cosine by its own threshold
    p.configOverrides = ("quality.stop_threshold=1.5\nregistration.stop_threshold=1.5\nquality.auto_stop=false\n"
                         "quality.largest_component=true")
    before = snapshot(slicer.mrmlScene)
    seen = {"progress": set(), "status": set(), "rows": set(), "apply": set()}

    def watch():
        seen["progress"].add((widget.ui.progressBar.value, widget.ui.progressBar.maximum))
        seen["status"].add(widget.ui.statusLabel.text)
        seen["rows"].add(widget.ui.scoresTableWidget.rowCount)
        seen["apply"].add(widget.ui.applyButton.enabled)
        return widget._run is not None and widget._run.finished and not widget._timer.isActive()

    widget.ui.applyButton.click()
    assert widget._run is not None and widget.ui.cancelButton.enabled is True
    assert session.pump(watch, timeout=600)
    return dict(case=case, widget=widget, before=before, seen=seen)


def test_apply_streams_progress_and_writes_the_result(session, finished_run):
    widget, case, seen = finished_run["widget"], finished_run["case"], finished_run["seen"]
    run = widget._run
    assert run.state == "finished", run.error
    assert len(run.inputs.slices) == 5 and widget.ui.progressBar.maximum == 5 and widget.ui.progressBar.value == 5
    assert any(0 < value < 5 for value, _ in seen["progress"]), seen["progress"]  # progress while running
    assert any(" / 5 slices" in text for text in seen["status"]), seen["status"]
    assert False in seen["apply"]  # Apply is off while the run goes on
    assert widget.ui.statusLabel.text.startswith("done: 5 slices")
    assert widget.ui.applyButton.enabled and widget.ui.undoButton.enabled and not widget.ui.cancelButton.enabled
    segmentation = case["segmentation"]
    result = run.writer.segment_id
    assert run.writer.segmentation_node is segmentation and result in segmentation.GetSegmentation().GetSegmentIDs()
    from SynPoLib import scene as mrml

    got = mrml.segment_array(segmentation, result, case["volume"])
    slices = run.inputs.slices
    assert dice(got[slices], case["truth"][slices]) >= DICE_FLOOR
    assert not np.delete(got, slices, axis=0).any()


def test_the_3d_view_gets_the_result_surface(session, finished_run):
    run = finished_run["widget"]._run
    name = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
    surface = run.writer.segmentation_node.GetSegmentation().GetSegment(run.writer.segment_id).GetRepresentation(name)
    assert surface is not None and surface.GetNumberOfPoints() > 50


def test_review_table_uses_the_users_thresholds_and_the_final_areas(session, finished_run):
    widget = finished_run["widget"]
    run, table = widget._run, widget.ui.scoresTableWidget
    assert table.rowCount == len(run.records) == 5
    final = {r.index: r.pixels for r in run.records}  # after the 3D clean-up
    shown = {int(table.item(row, 0).text()): int(table.item(row, 2).text()) for row in range(table.rowCount)}
    assert shown == final
    flags = [table.item(row, 3).text() for row in range(table.rowCount)]
    support = [row for row in range(table.rowCount) if table.item(row, 1).text() == "support"]
    assert len(support) == 1
    # stop_threshold=1.5 (set by the user): every segmented slice is below it and flagged
    assert all(f.startswith("low confidence") for row, f in enumerate(flags) if row not in support), flags
    # a refresh at the end redraws rows whose count did not change (what the 3D clean-up needs)
    status = run.status()
    status.records[0].pixels += 1
    widget._showStatus(status, refresh=True)
    assert int(table.item(0, 2).text()) == sorted(final.items())[0][1] + 1
    widget._showStatus(run.status(), refresh=True)


def red_offset():
    return widget_red_node().GetSliceOffset()


def widget_red_node():
    return slicer.app.layoutManager().sliceWidget("Red").mrmlSliceNode()


def test_next_and_previous_flagged_jump_to_the_slice(session, finished_run):
    widget = finished_run["widget"]
    table, ui = widget.ui.scoresTableWidget, widget.ui
    assert ui.nextFlaggedButton.enabled and ui.previousFlaggedButton.enabled
    assert ui.nextFlaggedButton.shortcut.toString() == "Alt+N" and "Alt+N" in ui.nextFlaggedButton.toolTip
    assert ui.previousFlaggedButton.shortcut.toString() == "Alt+P"
    flagged = [row for row in range(table.rowCount) if table.item(row, 3).text()]
    table.setCurrentCell(-1, -1)
    ui.nextFlaggedButton.click()
    assert table.currentRow() == flagged[0]
    first = red_offset()
    ui.nextFlaggedButton.click()
    assert table.currentRow() == flagged[1] and red_offset() != first
    ui.previousFlaggedButton.click()
    assert table.currentRow() == flagged[0] and red_offset() == pytest.approx(first)
    ui.previousFlaggedButton.click()
    assert table.currentRow() == flagged[-1]  # wraps round
    # the red view now shows that slice of the volume
    from SynPoLib import scene as mrml

    run = widget._run
    index = int(table.item(flagged[-1], 0).text())
    axis, native = run.native_slice(index)
    centre = mrml.slice_center_ras(run.writer.reference, axis, native)
    normal = np.array([widget_red_node().GetSliceToRAS().GetElement(r, 2) for r in range(3)])
    origin = np.array([widget_red_node().GetSliceToRAS().GetElement(r, 3) for r in range(3)])
    assert abs(float(normal @ (centre - origin))) < 1e-3


def test_panel_fits_slicer_default_width_and_screenshot(session, finished_run, tmp_path):
    panel = finished_run["widget"].parent
    panel.resize(PANEL_WIDTH, 600)
    panel.show()
    session.pump(timeout=0.3)
    panel.resize(PANEL_WIDTH, panel.sizeHint.height())
    session.pump(timeout=0.3)
    assert panel.minimumSizeHint.width() <= PANEL_WIDTH, panel.minimumSizeHint
    image = panel.grab()
    assert image.width() == PANEL_WIDTH
    assert image.save(str(tmp_path / "panel.png"))
    target = os.environ.get("SYNPO_PANEL_SCREENSHOT")
    if target:
        shutil.copy(tmp_path / "panel.png", target)


def test_undo_removes_the_result_and_nothing_else(session, finished_run):
    widget = finished_run["widget"]
    widget.ui.undoButton.click()
    assert widget.ui.statusLabel.text == "the last result was removed" and not widget.ui.undoButton.enabled
    assert snapshot(slicer.mrmlScene) == finished_run["before"]


def test_cancel_puts_the_scene_back(session):
    labelled_scene(session, axis=0)
    widget = open_module(session)
    before = snapshot(slicer.mrmlScene)
    widget.ui.applyButton.click()
    assert session.pump(lambda: widget._run.records or widget._run.finished, timeout=300)
    assert widget.ui.cancelButton.enabled
    widget.ui.cancelButton.click()
    run_to_end(session, widget)
    assert widget._run.state == "cancelled" and widget.ui.statusLabel.text.startswith("cancelled")
    assert snapshot(slicer.mrmlScene) == before
    assert widget.ui.applyButton.enabled and not widget.ui.undoButton.enabled


# ----------------------------------------------------------------------------- installing

def test_apply_stays_disabled_while_packages_install(session, monkeypatch):
    labelled_scene(session)
    widget = open_module(session)
    calls = []

    def installing(backend, ask=True):
        calls.append(widget.ui.applyButton.enabled)
        widget.ui.applyButton.click()  # the user clicks again while pip runs (events are pumped)
        return False  # then declines

    monkeypatch.setattr(widget.logic, "ensureDependencies", installing)
    widget.ui.applyButton.click()
    assert calls == [False]  # disabled during the install, and the second click did nothing
    assert widget._run is None and widget.ui.applyButton.enabled


def test_pip_goes_through_slicer_packaging_imported_first(session, monkeypatch):
    from SynPoLib.backends.install import PipStep

    logic = sys.modules["SynPo"].SynPoLogic()
    for name in [n for n in sys.modules if n == "slicer.packaging"]:
        del sys.modules[name]
    if "packaging" in vars(slicer):
        delattr(slicer, "packaging")
    assert getattr(slicer, "packaging", None) is None  # a submodule: absent until imported
    # an ordinary step: Slicer's real pip_ensure (the requirement is met: nothing runs)
    logic._pipInstall(PipStep(("numpy>=1",)))
    packaging = sys.modules["slicer.packaging"]  # imported by SynPo: the harness's stand-in
    assert packaging.__file__ == str(slicer_headless.STANDINS / "packaging.py")

    calls = []
    monkeypatch.setattr(packaging, "pip_install",
                        lambda args, **kw: calls.append((args, kw, os.environ.get("SAM2_BUILD_CUDA"))))
    logic._pipInstall(PipStep(("sam2>=1.1,<2", "torch==2.5.1"), ("--no-build-isolation",), {"SAM2_BUILD_CUDA": "0"}))
    assert calls == [(["--no-build-isolation", "sam2>=1.1,<2", "torch==2.5.1"], {"requester": "SynPo"}, "0")]
    assert "SAM2_BUILD_CUDA" not in os.environ

    # outside testing mode an unmet requirement reaches pip, without a dialog (prompt_install=False)
    monkeypatch.setattr(slicer.app, "_testing", False)
    logic._pipInstall(PipStep(("no-such-package-synpo>=1,<2",)))
    assert calls[-1] == (["no-such-package-synpo<2,>=1"], {"requester": "SynPo"}, None)

    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(packaging, "pip_ensure", offline)
    with pytest.raises(RuntimeError, match=r"could not install scipy>=1.9,<2 .*Offline computers"):
        logic._pipInstall(PipStep(("scipy>=1.9,<2",)))


# ----------------------------------------------------------------------------- self-test

def run_self_test(order):
    module = sys.modules["SynPo"]
    suite = unittest.TestSuite(module.SynPoTest(name) for name in order)
    return unittest.TextTestRunner(verbosity=0, stream=open(os.devnull, "w")).run(suite)


@pytest.mark.parametrize("order", [("test_SynPoLogicOnSampleData", "test_SynPoCancelRestoresScene"),
                                   ("test_SynPoCancelRestoresScene", "test_SynPoLogicOnSampleData")])
def test_self_test_passes_in_any_order_and_builds_no_other_gui(session, order, monkeypatch):
    import types

    built = []  # the Segment Editor module, whose panel Slicer builds on widgetRepresentation()
    monkeypatch.setattr(slicer.modules, "segmenteditor",
                        types.SimpleNamespace(widgetRepresentation=lambda: built.append(True)), raising=False)
    session.new_scene()
    result = run_self_test(order)
    assert result.wasSuccessful() and not result.skipped, result.errors + result.failures + result.skipped
    assert result.testsRun == 2
    assert not built and not hasattr(slicer.modules, "SegmentEditorWidget")


def test_self_test_on_a_build_machine_installs_nothing(session, monkeypatch):
    from SynPoLib.backends import requirements as dependencies
    from SynPoLib.backends.requirements import Requirement

    missing = Requirement("no-such-package-synpo>=1,<2", "a package this machine lacks", "test only")
    monkeypatch.setitem(dependencies.PACKAGES, "lite", dependencies.PACKAGES["lite"] + [missing])
    monkeypatch.setattr(slicer.util, "pip_install", lambda *a, **k: pytest.fail("pip_install called"))
    session.new_scene()
    result = run_self_test(["test_SynPoLogicOnSampleData"])
    assert result.wasSuccessful() and len(result.skipped) == 1
    assert "no-such-package-synpo" in result.skipped[0][1] and "testing mode installs nothing" in result.skipped[0][1]


# ----------------------------------------------------------------------------- stand-ins and reload

def signature_problems(where, mine, real):
    """Calls valid against a stand-in must be valid against Slicer's function: its positional
    parameters are a prefix of Slicer's, its keyword-only ones are Slicer's parameters, a
    parameter Slicer requires has no default here, and no *args/**kwargs Slicer lacks."""
    problems = []
    mine_positional = [p for p in mine["parameters"] if p not in mine["keyword_only"]]
    real_positional = [p for p in real["parameters"] if p not in real["keyword_only"]]
    if mine_positional != real_positional[:len(mine_positional)]:
        problems.append(f"{where}: positional parameters {mine_positional}, Slicer's {real_positional}")
    problems += [f"{where}: Slicer's has no parameter {p}" for p in mine["keyword_only"] if p not in real["parameters"]]
    problems += [f"{where}: {p} has a default, Slicer's is required" for p in mine["defaults"]
                 if p in real["parameters"] and p not in real["defaults"]]
    problems += [f"{where}: {kind} Slicer's lacks" for kind in ("varargs", "varkw") if mine[kind] and not real[kind]]
    return problems


def python_stand_in_problems(module, api):
    """Problems of the stand-in module ``module`` (regenerate.python_module_api of its source)."""
    real_names = set(API["python"][module])
    problems = [f"{module}.{n}: not in Slicer's {module}" for n in sorted(api["defined"] - real_names)
                if not n.startswith("_")]
    for cls, info in api["classes"].items():
        if cls.startswith("_"):
            continue
        real = names.base_members(f"{module}.{cls}") if f"{module}.{cls}" in API["python_classes"] else set()
        problems += [f"{module}.{cls}.{m}: Slicer's {cls} has no {m}" for m in info["members"]
                     if not m.startswith("_") and m not in real]
    instance = set(API["python"].get(f"{module}:instance", ()))
    for function, signature in api["functions"].items():
        owner, _, name = function.rpartition(".")
        if owner.startswith("_") and owner in api["instance_classes"]:  # methods added to wrapped instances
            if name not in instance:
                problems.append(f"{module}: a wrapped instance of Slicer's has no {name}")
            # Slicer defines them as module functions: _connectGui, ..., _initMethod for __init__
            real = API["python_functions"].get(f"{module}.{'_initMethod' if name == '__init__' else '_' + name}")
        elif function.startswith("_") or name.startswith("_") and name != "__init__":
            continue
        else:
            real = API["python_functions"].get(f"{module}.{function}")
            if real is None:
                problems.append(f"{module}.{function}: Slicer's has no such function")
        if real is not None:
            problems += signature_problems(f"{module}.{function}", signature, real)
    return problems


def stand_in_api(path: Path):
    """Names a stand-in module defines (not imports), its classes and function signatures, read
    as regenerate.py reads Slicer's sources."""
    import ast
    import importlib.util

    spec = importlib.util.spec_from_file_location("regenerate", ROOT / "Testing/module/slicer_api/regenerate.py")
    regenerate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(regenerate)
    source = path.read_text()
    api = regenerate.python_module_api(source)
    tree = ast.parse(source)
    imported = {(a.asname or a.name).split(".")[0] for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))
                for a in n.names}
    api["defined"] = api["names"] - imported
    api["instance_classes"] = {"_WrapperMethods"}  # copied onto every @parameterNodeWrapper class
    return api


def test_stand_ins_have_only_names_the_real_classes_have(session):
    """Every stand-in has only names (and, for Python, signatures) the real one has, so what
    passes here cannot rely on something Slicer lacks."""
    problems = []
    for cls, real_name in slicer_headless.CPP_STAND_INS.items():
        own = {n for n in vars(cls) if not n.startswith("_") and n != "staticMetaObject"}
        real = names.class_names(real_name)
        problems += [f"{cls.__name__}: {real_name} has no {n}" for n in sorted(own - real)]
    # Python attributes set on instances (the C++ objects' properties, as PythonQt shows them)
    for obj in (slicer.app, slicer.modules.synpo, slicer.app.layoutManager(), slicer.app.moduleManager()):
        real = names.class_names(slicer_headless.CPP_STAND_INS[type(obj)])
        pythonqt = {"connect", "disconnect"}  # PythonQt's own, on every QObject
        problems += [f"{type(obj).__name__} instance: the real class has no {n}" for n in sorted(vars(obj))
                     if not n.startswith("_") and n not in pythonqt and n not in real]
    checked = []
    for module in slicer_headless.STANDIN_MODULES:
        path = slicer_headless.STANDINS / (module.split(".")[1] + ".py")
        assert importlib.import_module(module).__file__ == str(path)  # what the tests run is what is checked
        problems += python_stand_in_problems(module, stand_in_api(path))
        checked.append(module)
    # a parameter node wrapper instance, as SynPo makes it: its fields, and Slicer's instance names
    p = sys.modules["SynPo"].SynPoLogic().getParameterNode()
    fields = set(type(p).__annotations__)
    instance = set(API["python"]["slicer.parameterNodeWrapper:instance"])
    extra = {n for n in dir(p) if not n.startswith("_")} - fields - instance
    problems += [f"a wrapped parameter node has {n}, Slicer's has not" for n in sorted(extra)]
    assert checked == ["slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "slicer.packaging"]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("source, problem", [
    ("def pip_install(requirements, extra=None):\n    pass\n", "positional parameters"),
    ("def pip_install(requirements, *, wait=True):\n    pass\n", "has no parameter wait"),
    ("def pip_ensure(requirements=None):\n    pass\n", "requirements has a default"),
    ("def pip_install(*requirements):\n    pass\n", "varargs"),
    ("def pip_everything():\n    pass\n", "not in Slicer's slicer.packaging"),
])
def test_the_stand_in_check_catches_what_slicer_lacks(tmp_path, source, problem):
    path = tmp_path / "packaging.py"
    path.write_text(source)
    found = python_stand_in_problems("slicer.packaging", stand_in_api(path))
    assert any(problem in p for p in found), found


def test_reload_picks_up_synpolib_changes(session, tmp_path):
    labelled_scene(session)
    widget = open_module(session)
    saved = {n: m for n, m in sys.modules.items() if n == "SynPoLib" or n.startswith("SynPoLib.")}
    shutil.copytree(ROOT / "SynPoLib", tmp_path / "SynPoLib")
    with open(tmp_path / "SynPoLib" / "backends" / "install.py", "a") as f:
        f.write("\nRELOADED = True  # a change made while Slicer runs\n")
    sys.path.insert(0, str(tmp_path))
    try:
        widget.onReload()
        new_widget = slicer.modules.SynPoWidget
        assert new_widget is not widget and new_widget.parent is widget.parent
        import SynPoLib.backends.install

        assert SynPoLib.backends.install.RELOADED and Path(SynPoLib.__file__).is_relative_to(tmp_path)
        assert new_widget.logic.pythonTooOld() is None  # the new widget runs on the reloaded library
    finally:
        sys.path.remove(str(tmp_path))
        for name in [n for n in sys.modules if n == "SynPoLib" or n.startswith("SynPoLib.")]:
            del sys.modules[name]
        sys.modules.update(saved)
        session.load_module()


def test_every_segment_in_one_run_then_run_again_with_a_correction_and_undo_it(session):
    """The panel's multi-segment Apply, Run again with corrections (the review list names the
    corrected and changed slices) and its one undo step, with the real LiteMedSAM."""
    from SynPoLib import scene as mrml

    scene = session.new_scene()
    image, truth = phantom(MATRIX, SHAPE, CENTRE, RADII)
    volume = add_volume(scene, image, MATRIX, name="MR", window=(50.0, 900.0))
    index = int(np.argwhere(truth).mean(axis=0).round()[0])
    organ = np.zeros_like(truth)
    organ[index] = truth[index]
    spot = np.zeros_like(truth)
    spot[index, :3, :3] = 1  # a second structure, far from the organ
    segmentation, (first, _) = add_segmentation(scene, volume, [("organ", organ, (0.9, 0.3, 0.2)),
                                                                ("spot", spot, (0.2, 0.3, 0.9))])
    widget = open_module(session)
    p = widget._parameterNode
    p.supportVolume, p.supportSegmentation, p.supportSegmentID = volume, segmentation, first
    p.sliceRange, p.sliceMargin, p.allSegments = "Around the support slice", 2, True
    p.configOverrides = "quality.auto_stop=false"
    widget.ui.applyButton.click()
    run_to_end(session, widget)
    run = widget._run
    assert run.state == "finished", run.error
    assert len(run.writers) == 2 and widget.ui.rerunButton.enabled
    names = sorted(segmentation.GetSegmentation().GetSegment(w.segment_id).GetName() for w in run.writers.values())
    assert names == ["organ SynPo", "spot SynPo"]
    assert widget.ui.scoresTableWidget.rowCount == 2 * 5
    # the user corrects slice index + 2 of the organ's result in the Segment Editor
    organ_writer = run.writers[first]
    fixed = mrml.segment_array(segmentation, organ_writer.segment_id, volume)
    fixed[index + 2] = truth[index + 2]
    fixed[index + 2, -3:, -3:] = 1
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    edit = oriented(fixed, MATRIX)
    assert logic.SetBinaryLabelmapToSegment(edit, segmentation, organ_writer.segment_id, logic.MODE_REPLACE,
                                            edit.GetExtent())
    before = snapshot(slicer.mrmlScene)
    widget.ui.rerunButton.click()
    run_to_end(session, widget)
    again = widget._run
    assert again.state == "finished" and again.previous is run, again.error
    assert widget.ui.statusLabel.text.startswith("done again: 1 slice(s) recomputed")  # index + 1 only
    table = widget.ui.scoresTableWidget
    flags = {(int(table.item(r, 0).text()), table.item(r, 3).text().split(": ")[0]): table.item(r, 3).text()
             for r in range(table.rowCount)}
    assert flags[(index + 2, "organ SynPo")].endswith("corrected by you")
    np.testing.assert_array_equal(mrml.segment_array(segmentation, organ_writer.segment_id, volume)[index + 2],
                                  fixed[index + 2])
    widget.ui.undoButton.click()
    assert snapshot(slicer.mrmlScene) == before, "one undo step: the segments as the user had corrected them"
