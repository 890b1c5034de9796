"""SynPo: segment a structure in every slice from one labelled slice (3D Slicer module).

The module is a thin face over SynPoLib: the widget edits a parameter node, the Logic
turns nodes into a run (SynPoLib.scene), and a QTimer applies the worker thread's slices
to the scene. Nothing heavy is imported when Slicer loads this file: torch, the models
and their Python packages are checked and installed when the user first presses Apply.
"""

import importlib.util
import logging
import os
import sys
import time
from typing import Annotated

import qt
import slicer
import vtk
# Node classes straight from their wrapping modules: the segmentation node is not in the
# slicer namespace yet while the parameter node class below is created (Slicer's advice)
from MRMLCorePython import vtkMRMLScalarVolumeNode
from vtkSlicerSegmentationsModuleMRMLPython import vtkMRMLSegmentationNode
from slicer.parameterNodeWrapper import Choice, Default, Minimum, WithinRange, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (ScriptedLoadableModule, ScriptedLoadableModuleLogic,
                                           ScriptedLoadableModuleTest, ScriptedLoadableModuleWidget)
from slicer.util import VTKObservationMixin


def _makeSynPoLibImportable():
    """An installed extension has SynPoLib beside this file; a source checkout added via
    "additional module paths" has it one folder up, at the repository root."""
    if importlib.util.find_spec("SynPoLib") is not None:
        return
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    if os.path.isfile(os.path.join(root, "SynPoLib", "__init__.py")) and root not in sys.path:
        sys.path.insert(0, root)


_makeSynPoLibImportable()

from SynPoLib.backends import LABELS as BACKEND_LABELS  # noqa: E402  (numpy only: nothing heavy at load)

#: GUI label -> backend registry name
BACKENDS = {label: name for name, label in BACKEND_LABELS.items()}
#: GUI label -> SynPoLib.config.Mode value (how the slices are segmented)
MODES = {
    "Registration (measured best)": "registration",
    "Slice by slice (the paper's)": "slices",
    "Propagate from the previous slice": "propagate",
    "Video (SAM2 models only)": "video",
    "Video + SynPo points (SAM2 models only)": "hybrid",
}
#: modes that need SAM2's video predictor
VIDEO_MODES = ("video", "hybrid")
#: GUI label -> SynPoLib.scene.query_slices mode
SLICE_RANGES = {
    "Whole volume": "whole",
    "Around the support slice": "around",
    "Custom range": "custom",
}
OUTPUT_INTO_SUPPORT = "New segment in the support segmentation"
OUTPUT_NEW_NODE = "New segmentation"
DEVICES = ["auto", "cuda", "mps", "cpu"]
SLICE_VIEWS = ["Red", "Yellow", "Green"]
#: how often the GUI applies finished slices (ms): fast enough to feel live, rare enough
#: to leave the event loop idle
POLL_INTERVAL_MS = 150
#: SAM2 + DINOv2 on a CPU: measured order of magnitude, for the warning           [G]
CPU_SECONDS_PER_SLICE_PAPER = 30


class SynPo(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = "SynPo"
        self.parent.categories = ["Segmentation"]
        self.parent.dependencies = []
        self.parent.contributors = ["SynPo project contributors"]
        self.parent.helpText = """
Label one slice of a structure, choose a volume, press Apply: SynPo segments the structure
in every slice (training-free one-shot segmentation: DINOv2 and SAM2 features fused into a
confidence map, positive and negative point prompts, SAM draws the masks slice by slice).
Results stream in and can be cancelled back to the state before Apply.
See <a href="https://github.com/SynPo/SlicerSynPo#readme">the documentation</a>.
"""
        self.parent.acknowledgementText = """
SynPo: Boosting Training-Free Few-Shot Medical Segmentation via High-Quality Negative Prompts
(MICCAI 2025). Uses SAM2 (Meta), DINOv2 (Meta) and LiteMedSAM (Ma et al.).
"""


#
# Parameter node
#

@parameterNodeWrapper
class SynPoParameterNode:
    """Everything the module shows, saved with the scene."""

    supportVolume: vtkMRMLScalarVolumeNode
    supportSegmentation: vtkMRMLSegmentationNode
    supportSegmentID: str
    sliceView: Annotated[str, Choice(SLICE_VIEWS), Default("Red")]
    supportAxis: Annotated[int, WithinRange(0, 2), Default(0)]
    supportSlice: Annotated[int, Minimum(0), Default(0)]
    useAllLabelledSlices: Annotated[bool, Default(False)]
    queryVolume: vtkMRMLScalarVolumeNode
    sliceRange: Annotated[str, Choice(list(SLICE_RANGES)), Default("Whole volume")]
    sliceMargin: Annotated[int, Minimum(0), Default(20)]
    firstSlice: Annotated[int, Minimum(0), Default(0)]
    lastSlice: Annotated[int, Minimum(0), Default(0)]
    backend: Annotated[str, Choice(list(BACKENDS)), Default(BACKEND_LABELS["lite"])]
    device: Annotated[str, Choice(DEVICES), Default("auto")]
    mode: Annotated[str, Choice(list(MODES)), Default("Registration (measured best)")]
    #: stop past the structure's end (SynPoLib.volume.qc) instead of painting every slice
    autoStop: Annotated[bool, Default(True)]
    useDisplayWindow: Annotated[bool, Default(True)]
    batchSize: Annotated[int, WithinRange(1, 64), Default(1)]
    #: "section.field=value" lines over the backend's preset (SynPoLib.config)
    configOverrides: str
    outputMode: Annotated[str, Choice([OUTPUT_INTO_SUPPORT, OUTPUT_NEW_NODE]), Default(OUTPUT_INTO_SUPPORT)]
    outputName: str


#
# Widget
#

class SynPoWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._run = None
        self._timer = None
        self._fillingConfigTable = False
        self._configTableKey = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/SynPo.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = SynPoLogic()

        self._timer = qt.QTimer()
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.onPollTimer)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        # Widgets the parameter node wrapper cannot connect by itself
        self.ui.supportSegmentSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onSupportSegmentationChanged)
        self.ui.supportSegmentSelector.connect("currentSegmentChanged(QString)", self.onSupportSegmentChanged)
        self.ui.useCurrentSliceButton.connect("clicked(bool)", self.onUseCurrentSlice)
        self.ui.configTableWidget.connect("itemChanged(QTableWidgetItem*)", self.onConfigItemChanged)
        self.ui.resetConfigButton.connect("clicked(bool)", self.onResetConfig)
        self.ui.scoresTableWidget.connect("cellDoubleClicked(int,int)", self.onScoreDoubleClicked)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.undoButton.connect("clicked(bool)", self.onUndoButton)

        self.ui.configTableWidget.setHorizontalHeaderLabels(["Parameter", "Value"])
        self.ui.scoresTableWidget.setHorizontalHeaderLabels(["Slice", "Score", "Area (voxels)", "Review"])
        self._setRunning(False)
        self.initializeParameterNode()

    def cleanup(self):
        if self._run is not None and not self._run.finished:
            self._run.cancel()
            self._run.wait(timeout=60)
        if self._timer is not None:
            self._timer.stop()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()
        self._updateDeviceLabel()

    def exit(self):
        # Runs go on while the user looks elsewhere; only the GUI stops following the node
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)

    def onSceneStartClose(self, caller, event):
        with slicer.util.tryWithErrorDisplay("SynPo: failed to stop the run before closing the scene"):
            if self._run is not None and not self._run.finished:
                self._run.cancel()
                self._run.wait(timeout=120)  # rolls back while the nodes still exist
                self._finishRun()
            self.setParameterNode(None)

    def onSceneEndClose(self, caller, event):
        with slicer.util.tryWithErrorDisplay("SynPo: failed to reset after closing the scene"):
            if self.parent.isEntered:
                self.initializeParameterNode()

    # -- parameter node
    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        p = self._parameterNode
        if not p.supportVolume:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if first:
                p.supportVolume = first
        if not p.supportSegmentation:
            first = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
            if first:
                p.supportSegmentation = first

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._onParameterNodeModified)
            self._onParameterNodeModified()

    def _onParameterNodeModified(self, caller=None, event=None):
        p = self._parameterNode
        if p is None:
            return
        selector = self.ui.supportSegmentSelector
        if selector.currentNode() != p.supportSegmentation:
            selector.setCurrentNode(p.supportSegmentation)
        if p.supportSegmentID and selector.currentSegmentID() != p.supportSegmentID:
            selector.setCurrentSegmentID(p.supportSegmentID)
        self._updateAxisLabel()
        self._updateRangeWidgets()
        self._fillConfigTable()
        self._checkCanApply()

    def _updateAxisLabel(self):
        p = self._parameterNode
        volume = p.supportVolume
        if volume is None or volume.GetImageData() is None:
            self.ui.supportAxisLabel.text = ""
            return
        dims = volume.GetImageData().GetDimensions()
        n = dims[2 - p.supportAxis]
        self.ui.supportSliceSpinBox.maximum = max(0, n - 1)
        direction = self.logic.axisDirection(volume, p.supportAxis)
        self.ui.supportAxisLabel.text = f"{'KJI'[p.supportAxis]} axis: {direction}, {n} slices"

    def _updateRangeWidgets(self):
        p = self._parameterNode
        mode = SLICE_RANGES[p.sliceRange]
        self.ui.sliceMarginSpinBox.enabled = mode == "around"
        self.ui.firstSliceSpinBox.enabled = mode == "custom"
        self.ui.lastSliceSpinBox.enabled = mode == "custom"
        volume = p.queryVolume or p.supportVolume
        if volume is not None and volume.GetImageData() is not None:
            top = max(0, max(volume.GetImageData().GetDimensions()) - 1)
            self.ui.firstSliceSpinBox.maximum = top
            self.ui.lastSliceSpinBox.maximum = top

    def _checkCanApply(self):
        p = self._parameterNode
        running = self._run is not None and not self._run.finished
        missing = [what for what, ok in (("a support volume", p.supportVolume),
                                         ("a segmentation", p.supportSegmentation),
                                         ("a segment", p.supportSegmentID)) if not ok]
        problem = ("Choose " + ", ".join(missing)) if missing else None
        if not problem and MODES[p.mode] in VIDEO_MODES and BACKENDS[p.backend] == "lite":
            problem = "The video modes need a SAM2 model: choose SAM2 + DINOv2, or another mode"
        self.ui.applyButton.enabled = problem is None and not running
        self.ui.applyButton.toolTip = problem or \
            "Segment the structure in the query volume (results stream in; Cancel restores the scene)"

    # -- device
    def _updateDeviceLabel(self):
        p = self._parameterNode
        if p is None:
            return
        text, onGpu = self.logic.describeDevice(p.device)
        backend = BACKENDS[p.backend]
        if backend != "lite" and not onGpu:
            text += (f"<br><b>SAM2 + DINOv2 on the CPU takes about {CPU_SECONDS_PER_SLICE_PAPER} s per slice</b>: "
                     "the lite backend is much faster without a GPU.")
        self.ui.deviceLabel.text = text

    # -- support
    def onSupportSegmentationChanged(self, node):
        with slicer.util.tryWithErrorDisplay("SynPo: cannot select this segmentation"):
            if self._parameterNode is not None and self._parameterNode.supportSegmentation != node:
                self._parameterNode.supportSegmentation = node

    def onSupportSegmentChanged(self, segmentId):
        with slicer.util.tryWithErrorDisplay("SynPo: cannot select this segment"):
            if self._parameterNode is not None and self._parameterNode.supportSegmentID != (segmentId or ""):
                self._parameterNode.supportSegmentID = segmentId or ""

    def onUseCurrentSlice(self):
        with slicer.util.tryWithErrorDisplay("SynPo: cannot take the current slice"):
            p = self._parameterNode
            if p.supportVolume is None:
                raise ValueError("choose the support volume first")
            sliceWidget = slicer.app.layoutManager().sliceWidget(p.sliceView)
            if sliceWidget is None:
                raise ValueError(f"the {p.sliceView} view is not in the current layout")
            where = self.logic.currentSlice(sliceWidget.mrmlSliceNode(), p.supportVolume, f"the {p.sliceView} view")
            with slicer.util.NodeModify(p):
                p.supportAxis = where.axis
                p.supportSlice = where.index
                p.useAllLabelledSlices = False

    # -- advanced configuration
    def _fillConfigTable(self):
        p = self._parameterNode
        key = (p.backend, p.configOverrides)
        if key == self._configTableKey:
            return
        self._configTableKey = key
        self._updateDeviceLabel()
        try:
            rows = self.logic.configRows(BACKENDS[p.backend], p.configOverrides)
        except Exception as exc:  # a scene saved with a parameter this version lacks
            logging.warning(f"SynPo: ignoring configuration overrides: {exc}")
            rows = self.logic.configRows(BACKENDS[p.backend], "")
        table = self.ui.configTableWidget
        self._fillingConfigTable = True
        try:
            table.setRowCount(len(rows))
            for row, (name, value, changed) in enumerate(rows):
                nameItem = qt.QTableWidgetItem(name)
                nameItem.setFlags(qt.Qt.ItemIsEnabled | qt.Qt.ItemIsSelectable)
                valueItem = qt.QTableWidgetItem(value)
                if changed:
                    font = valueItem.font()
                    font.setBold(True)
                    valueItem.setFont(font)
                table.setItem(row, 0, nameItem)
                table.setItem(row, 1, valueItem)
        finally:
            self._fillingConfigTable = False

    def onConfigItemChanged(self, item):
        if self._fillingConfigTable or item.column() != 1:
            return
        with slicer.util.tryWithErrorDisplay("SynPo: invalid parameter value"):
            table = self.ui.configTableWidget
            edits = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount)}
            try:
                overrides = self.logic.overridesFromTable(BACKENDS[self._parameterNode.backend], edits)
                self._parameterNode.configOverrides = overrides
            finally:
                self._configTableKey = None  # redraw from the node: a refused value goes back
                self._fillConfigTable()

    def onResetConfig(self):
        with slicer.util.tryWithErrorDisplay("SynPo: cannot reset the parameters"):
            self._parameterNode.configOverrides = ""

    # -- run
    def onApplyButton(self):
        with slicer.util.tryWithErrorDisplay("SynPo could not start.", waitCursor=True):
            if self._run is not None and not self._run.finished:
                raise RuntimeError("a SynPo run is in progress: wait for it or cancel it")
            p = self._parameterNode
            backend = BACKENDS[p.backend]
            if not self.logic.ensureDependencies(backend, ask=True):
                return
            if not self.logic.ensureWeights(backend):
                return
            self._updateDeviceLabel()
            self._run = self.logic.startFromParameterNode(p, beforeFirstWrite=self.logic.saveStateForUndo)
            self.ui.scoresTableWidget.setRowCount(0)
            self.ui.progressBar.value = 0
            self.ui.progressBar.maximum = max(1, len(self._run.inputs.slices))
            self.ui.statusLabel.text = "starting"
            self._setRunning(True)
            self._timer.start()

    def onCancelButton(self):
        with slicer.util.tryWithErrorDisplay("SynPo: cannot cancel"):
            if self._run is not None and not self._run.finished:
                self._run.cancel()
                self.ui.statusLabel.text = "cancelling: the scene goes back to how it was before Apply"

    def onPollTimer(self):
        with slicer.util.tryWithErrorDisplay("SynPo: the run stopped with an error; the scene was restored."):
            if self._run is None:
                self._timer.stop()
                return
            status = self._run.poll()
            self._showStatus(status)
            if self._run.finished:
                self._finishRun()

    def _finishRun(self):
        self._timer.stop()
        run = self._run
        self._setRunning(False)
        status = run.status()
        self._showStatus(status)
        if status.state == "finished":
            self.logic.showResult(run)
            self.ui.statusLabel.text = f"done: {status.total} slices in {status.elapsed:.0f} s"
        elif status.state == "cancelled":
            self.ui.statusLabel.text = "cancelled: nothing was changed"
        elif status.state == "failed":
            self.ui.statusLabel.text = "failed: nothing was changed"
            raise RuntimeError(f"SynPo failed: {status.error}. Nothing was changed.") from status.error

    def _showStatus(self, status):
        self.ui.progressBar.maximum = max(1, status.total)
        self.ui.progressBar.value = status.done
        if status.state == "running":
            left = status.remaining
            leftText = f", about {int(left) // 60}:{int(left) % 60:02d} left" if left == left else ""
            self.ui.statusLabel.text = (f"{status.done} / {status.total} slices{leftText}"
                                        + (f" ({status.stage})" if status.stage and not status.done else ""))
        self._fillScores(status.records)

    def _fillScores(self, records):
        from SynPoLib.volume.qc import review_flags

        table = self.ui.scoresTableWidget
        if table.rowCount == len(records):
            return
        config = getattr(self._run, "config", None)
        flags = review_flags(records, config.mode_quality()) if config is not None else review_flags(records)
        ordered = sorted(records, key=lambda r: r.index)
        table.setRowCount(len(ordered))
        for row, r in enumerate(ordered):
            score = "support" if r.support_index < 0 else (f"{r.score:.3f}" if r.score == r.score else "")
            for column, text in enumerate((str(r.index), score, str(r.pixels), flags.get(r.index, ""))):
                item = qt.QTableWidgetItem(text)
                item.setFlags(qt.Qt.ItemIsEnabled | qt.Qt.ItemIsSelectable)
                if r.index in flags:
                    item.setBackground(qt.QBrush(qt.QColor(255, 230, 160)))
                table.setItem(row, column, item)

    def onScoreDoubleClicked(self, row, column):
        with slicer.util.tryWithErrorDisplay("SynPo: cannot show this slice"):
            if self._run is None:
                return
            index = int(self.ui.scoresTableWidget.item(row, 0).text())
            self.logic.jumpToSlice(self._run, index)

    def onUndoButton(self):
        with slicer.util.tryWithErrorDisplay("SynPo: cannot undo the last result"):
            if self._run is None or self._run.state != "finished":
                raise RuntimeError("there is no finished result to undo")
            self.logic.undo(self._run)
            self.ui.statusLabel.text = "the last result was removed"
            self.ui.undoButton.enabled = False

    def _setRunning(self, running):
        self.ui.cancelButton.enabled = running
        self.ui.undoButton.enabled = (not running and self._run is not None and self._run.state == "finished")
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.advancedCollapsibleButton, self.ui.outputCollapsibleButton):
            widget.enabled = not running
        if self._parameterNode is not None:
            self._checkCanApply()


#
# Logic
#

class SynPoLogic(ScriptedLoadableModuleLogic):
    """SynPo on MRML nodes, usable without the widget (Python console, scripts).

    Batch example::

        logic = slicer.util.getModuleLogic("SynPo")
        run = logic.segment(volume, segmentation, "Segment_1")   # waits, GUI stays live
        print(run.writer.segmentation_node.GetName(), run.writer.segment_id)
    """

    def getParameterNode(self):
        return SynPoParameterNode(super().getParameterNode())

    # -- dependencies and weights (first use only)
    def ensureDependencies(self, backend, ask=True):
        """Install what ``backend`` needs; False if the user declined. Never called at load."""
        from SynPoLib.backends import requirements

        torch, packages = requirements.missing_packages(backend)
        if torch is None and not packages:
            return True
        plan = requirements.install_plan_text(backend)
        if ask and not slicer.util.confirmOkCancelDisplay(
                "SynPo needs these Python packages, which will be downloaded and installed now "
                f"(this takes a few minutes, once):\n\n{plan}", windowTitle="SynPo: first-use installation"):
            return False
        if torch is not None:
            self._installTorch(torch.spec)
        if packages:
            self._pipInstall([r.spec for r in packages])
        torch, packages = requirements.missing_packages(backend)
        if torch is not None or packages:
            still = [r.spec for r in ([torch] if torch else []) + packages]
            raise RuntimeError("installation finished but these requirements are still not met: "
                               f"{', '.join(still)}. Restart Slicer and try again.")
        return True

    @staticmethod
    def _installTorch(spec):
        try:
            import PyTorchUtils
        except ModuleNotFoundError as exc:
            raise RuntimeError("SynPo needs the PyTorch extension: install 'PyTorch' from the Extensions "
                               "Manager, restart Slicer, then press Apply again") from exc
        torchLogic = PyTorchUtils.PyTorchUtilsLogic()
        requirement = spec[len("torch"):]
        import inspect

        kwargs = {"askConfirmation": False, "torchVersionRequirement": requirement}
        if "torchvisionVersionRequirement" in inspect.signature(torchLogic.installTorch).parameters:
            kwargs["torchvisionVersionRequirement"] = ">=0.16"  # the torchvision of torch 2.1
        if torchLogic.installTorch(**kwargs) is None:
            raise RuntimeError("PyTorch was not installed")

    @staticmethod
    def _pipInstall(specs):
        packaging = getattr(slicer, "packaging", None) or getattr(slicer, "pydeps", None)
        ensure = getattr(packaging, "pip_ensure", None)
        if ensure is not None:  # Slicer >= 5.11: progress dialog and restart detection
            import inspect

            parameters = inspect.signature(ensure).parameters
            kwargs = {name: value for name, value in (("requester", "SynPo"), ("prompt_install", False),
                                                      ("skip_in_testing", False)) if name in parameters}
            ensure(list(specs), **kwargs)
        else:
            slicer.util.pip_install(list(specs))
        importlib.invalidate_caches()

    def ensureWeights(self, backend):
        """Download missing model weights with a cancellable progress dialog; False if cancelled."""
        from SynPoLib.backends import requirements

        for name in requirements.missing_weights(backend):
            if not self._downloadWithProgress(name):
                return False
        return True

    @staticmethod
    def _downloadWithProgress(name):
        import threading

        from SynPoLib.backends import requirements

        dialog = slicer.util.createProgressDialog(labelText=f"Downloading {name}", maximum=100, value=0)
        dialog.setCancelButtonText("Cancel")
        cancelled = threading.Event()
        state = {"done": 0, "total": 0, "error": None, "finished": False}

        def progress(done, total):
            state["done"], state["total"] = done, total

        def work():
            try:
                requirements.download_weights(name, progress=progress, cancel=cancelled.is_set)
            except BaseException as exc:  # shown on the main thread
                state["error"] = exc
            finally:
                state["finished"] = True

        thread = threading.Thread(target=work, name=f"SynPo-download-{name}", daemon=True)
        thread.start()
        try:
            while not state["finished"]:
                if dialog.wasCanceled:
                    cancelled.set()
                if state["total"]:
                    dialog.value = int(100 * state["done"] / state["total"])
                    dialog.labelText = f"Downloading {name}: {state['done'] / 1e6:.0f} of {state['total'] / 1e6:.0f} MB"
                slicer.app.processEvents()
                time.sleep(0.05)
        finally:
            dialog.close()
        if cancelled.is_set():
            return False
        if state["error"] is not None:
            raise RuntimeError(f"downloading {name} failed: {state['error']}") from state["error"]
        return True

    # -- devices and configuration
    @staticmethod
    def describeDevice(choice="auto"):
        """(text, runs on a GPU) without installing anything; imports torch only if present."""
        if importlib.util.find_spec("torch") is None:
            return ("PyTorch is not installed yet: the first Apply installs the build that fits your GPU "
                    "(or the CPU build)."), False
        device = SynPoLogic.resolveDevice(choice)
        import torch

        if device.startswith("cuda"):
            return f"GPU: {torch.cuda.get_device_name(0)} (CUDA)", True
        if device == "mps":
            return "GPU: Apple silicon (MPS)", True
        note = " (no usable GPU found)" if choice in ("auto", "cuda", "mps") else ""
        return f"CPU{note}", False

    @staticmethod
    def resolveDevice(choice="auto"):
        """The torch device name for the GUI's choice ("auto": CUDA > MPS > CPU)."""
        from SynPoLib.backends.device import resolve_device

        return str(resolve_device(choice))

    @staticmethod
    def presetName(backend):
        from SynPoLib.backends.requirements import requirement_set

        return requirement_set(backend)  # "lite" or "paper": the preset measured for it

    def configFor(self, backend, overrides="", mode=None, autoStop=None):
        """The backend's preset with the "section.field=value" override lines applied, then the
        mode ("slices", "propagate", "video", "hybrid") and auto-stop when given."""
        from SynPoLib.config import Mode
        from SynPoLib.presets import config_for

        config = config_for(self.presetName(backend), overrides)
        if mode is not None:
            config = config.updated(**{"propagation.mode": Mode(mode)})
        if autoStop is not None:
            config = config.updated(**{"quality.auto_stop": bool(autoStop)})
        return config

    def configRows(self, backend, overrides=""):
        """(parameter, JSON value, differs from the preset) for the advanced table."""
        from SynPoLib.presets import config_rows

        return config_rows(self.presetName(backend), overrides)

    def overridesFromTable(self, backend, edits):
        """Override lines for the table's values that differ from the preset (checked)."""
        from SynPoLib.presets import overrides_from_values

        return overrides_from_values(self.presetName(backend), edits)

    # -- geometry helpers for the widget
    @staticmethod
    def currentSlice(sliceNode, volumeNode, viewName="the view"):
        from SynPoLib import scene

        return scene.slice_from_view(sliceNode.GetSliceToRAS(), volumeNode, viewName)

    @staticmethod
    def axisDirection(volumeNode, axis):
        from SynPoLib import scene

        try:
            return scene.axis_direction_name(scene.ijk_to_world(volumeNode), axis)
        except scene.MRMLInputError as exc:
            return str(exc)

    # -- runs
    def segment(self, supportVolume, segmentationNode, segmentId, *, axis=None, supportSlices=None,
                queryVolume=None, output="support", backend="lite", device="auto", sliceRange="whole",
                margin=20, first=0, last=-1, useDisplayWindow=True, batchSize=1, overrides="", name=None,
                color=None, mode="registration", autoStop=True, wait=True):
        """Segment from nodes. ``output``: "support" (new segment in ``segmentationNode``), "new"
        (new segmentation node) or a segmentation node. ``axis`` None: the axis on which the
        segment covers the fewest slices (one, for a single labelled slice). With ``wait`` the call
        returns when done (the GUI keeps updating) and raises if the run failed or was cancelled;
        without, it returns the started run: poll it (``run.poll()``) from the main thread.
        ``mode``: "registration" (measured best), "slices" (the paper's), "propagate", or (SAM2
        backends) "video" / "hybrid"; ``autoStop``
        stops past the structure's end instead of painting every slice."""
        from SynPoLib import scene

        if not self.ensureDependencies(backend, ask=not slicer.app.testingEnabled()):
            raise RuntimeError("SynPo needs its Python packages installed to run")
        if not self.ensureWeights(backend):
            raise RuntimeError("SynPo needs the model weights to run")
        if axis is None:
            axis = scene.guess_axis(scene.segment_array(segmentationNode, segmentId, supportVolume))
        target = segmentationNode if output == "support" else (None if output == "new" else output)
        run = scene.run_on_nodes(
            self.backendFactory(backend, device), supportVolume, segmentationNode, segmentId, axis=axis,
            support_slices=supportSlices, query_volume=queryVolume, output_segmentation=target, name=name,
            color=color, config=self.configFor(backend, overrides, mode, autoStop), slice_range=sliceRange,
            margin=margin,
            first=first, last=last, use_display_window=useDisplayWindow, batch_size=batchSize,
            before_first_write=self.saveStateForUndo)
        run.start()
        if not wait:
            return run
        status = run.wait(on_status=lambda s: slicer.app.processEvents())
        if status.state == "failed":
            raise RuntimeError(f"SynPo failed (nothing was changed): {status.error}") from status.error
        if status.state == "cancelled":
            raise RuntimeError("SynPo was cancelled (nothing was changed)")
        self.showResult(run)
        return run

    def startFromParameterNode(self, p, beforeFirstWrite=None):
        """Start a run from the module's parameter node (the widget's Apply)."""
        from SynPoLib import scene

        backend = BACKENDS[p.backend]
        support = p.supportVolume
        query = p.queryVolume if p.queryVolume is not None else None
        target = p.supportSegmentation if p.outputMode == OUTPUT_INTO_SUPPORT else None
        run = scene.run_on_nodes(
            self.backendFactory(backend, p.device), support, p.supportSegmentation, p.supportSegmentID,
            axis=p.supportAxis, support_slices=None if p.useAllLabelledSlices else [p.supportSlice],
            query_volume=query, output_segmentation=target, name=p.outputName.strip() or None,
            config=self.configFor(backend, p.configOverrides, MODES[p.mode], p.autoStop),
            slice_range=SLICE_RANGES[p.sliceRange],
            margin=p.sliceMargin, first=p.firstSlice, last=p.lastSlice if p.lastSlice > 0 else -1,
            use_display_window=p.useDisplayWindow, batch_size=p.batchSize, before_first_write=beforeFirstWrite)
        return run.start()

    def backendFactory(self, backend, device="auto"):
        """A callable that builds the backend; SynPoLib calls it on its worker thread."""
        def build():
            from SynPoLib.backends import create_backend

            return create_backend(backend, device=self.resolveDevice(device))

        return build

    @staticmethod
    def saveStateForUndo(segmentationNode):
        """If the Segment Editor edits this segmentation, make the whole run one undo step there."""
        try:
            editor = slicer.modules.segmenteditor.widgetRepresentation().self().editor
        except AttributeError:
            return
        current = editor.segmentationNode()
        if current is not None and current.GetID() == segmentationNode.GetID():
            editor.saveStateForUndo()

    @staticmethod
    def showResult(run):
        node = run.writer.segmentation_node
        if node is None or node.GetDisplayNode() is None:
            return
        node.GetDisplayNode().SetVisibility(True)
        node.GetDisplayNode().SetSegmentVisibility(run.writer.segment_id, True)

    @staticmethod
    def jumpToSlice(run, index):
        from SynPoLib import scene

        axis, native = run.native_slice(index)
        ras = scene.slice_center_ras(run.writer.reference, axis, native)
        slicer.modules.markups.logic().JumpSlicesToLocation(float(ras[0]), float(ras[1]), float(ras[2]), False)

    @staticmethod
    def undo(run):
        """Remove a finished run's result: its segment, or the node it created (nothing else)."""
        run.writer.undo()


#
# Self-test (runs inside Slicer: Developer Tools > Reload and Test)
#

class SynPoTest(ScriptedLoadableModuleTest):
    """On SampleData MRHead. The test puts an ellipsoidal lesion (defined in RAS mm) into a copy
    of the volume, labels it on its central slice, runs SynPo (lite backend) on the slices around
    it through the Logic, and checks the result's geometry (the query volume's grid, the lesion's
    RAS place) and a Dice floor (SynPoLib.scene.selftest; the same recipe runs in pytest on Colin27)."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_SynPoLogicOnSampleData()
        self.setUp()
        self.test_SynPoCancelRestoresScene()

    def _scene(self):
        import SampleData

        from SynPoLib import scene
        from SynPoLib.scene import selftest

        original = SampleData.SampleDataLogic().downloadSample("MRHead")
        case = selftest.lesion_case(scene.volume_array(original), scene.ijk_to_world(original), axis=0)
        volume = slicer.modules.volumes.logic().CloneVolume(slicer.mrmlScene, original, "MRHead with test lesion")
        slicer.util.updateVolumeFromArray(volume, case.image)
        segmentation = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", "support")
        segmentation.CreateDefaultDisplayNodes()
        segmentation.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        segmentId = segmentation.GetSegmentation().AddEmptySegment("", "lesion", [0.9, 0.6, 0.4])
        slicer.util.updateSegmentBinaryLabelmapFromArray(case.support, segmentation, segmentId, volume)
        return original, volume, segmentation, segmentId, case

    def test_SynPoLogicOnSampleData(self):
        import numpy as np

        from SynPoLib import metrics, scene
        from SynPoLib.scene import selftest

        self.delayDisplay("SynPo on MRHead (lite backend)")
        original, volume, segmentation, segmentId, case = self._scene()
        originalVoxels = slicer.util.arrayFromVolume(original).copy()
        logic = SynPoLogic()
        run = logic.segment(volume, segmentation, segmentId, axis=0, supportSlices=[case.slice], output="new",
                            backend="lite", sliceRange="around", margin=selftest.MARGIN)
        result = run.writer.segmentation_node
        # geometry: the query volume is the reference, and the labelmap lies on its grid
        role = slicer.vtkMRMLSegmentationNode.GetReferenceImageGeometryReferenceRole()
        self.assertEqual(result.GetNodeReference(role).GetID(), volume.GetID())
        labelmap = slicer.vtkOrientedImageData()
        result.GetBinaryLabelmapRepresentation(run.writer.segment_id, labelmap)
        segmentToWorld, volumeToWorld = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
        labelmap.GetImageToWorldMatrix(segmentToWorld)
        volume.GetIJKToRASMatrix(volumeToWorld)
        for r in range(4):
            for c in range(4):
                self.assertAlmostEqual(segmentToWorld.GetElement(r, c), volumeToWorld.GetElement(r, c), places=6)
        got = scene.segment_array(result, run.writer.segment_id, volume)
        dice = metrics.dice(got[case.scored], case.truth[case.scored])
        self.delayDisplay(f"Dice {dice:.3f} on {len(case.scored)} slices")
        self.assertGreaterEqual(dice, selftest.DICE_FLOOR)
        near = list(range(case.slice - selftest.MARGIN, case.slice + selftest.MARGIN + 1))
        self.assertFalse(np.delete(got, near, axis=0).any())
        self.assertEqual(len(run.records), len(near))
        # the result sits where the lesion was put, in RAS millimetres
        ijk = scene.ijk_to_world(volume)
        found = scene.voxel_centers_ras(ijk, np.argwhere(got > 0)).mean(axis=0)
        expected = scene.voxel_centers_ras(ijk, np.argwhere(case.truth[near] > 0) + [near[0], 0, 0]).mean(axis=0)
        self.assertLess(float(np.linalg.norm(found - expected)), 2.0)
        # the input volumes are untouched
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(original), originalVoxels))
        self.assertTrue(np.array_equal(slicer.util.arrayFromVolume(volume), case.image))

    def test_SynPoCancelRestoresScene(self):
        self.delayDisplay("Cancel restores the scene")
        original, volume, segmentation, segmentId, case = self._scene()
        before = [slicer.mrmlScene.GetNthNode(i).GetID() for i in range(slicer.mrmlScene.GetNumberOfNodes())]
        segmentsBefore = list(segmentation.GetSegmentation().GetSegmentIDs())
        logic = SynPoLogic()
        run = logic.segment(volume, segmentation, segmentId, axis=0, supportSlices=[case.slice], output="support",
                            backend="lite", wait=False)
        while len(run.records) < 2 and not run.finished:
            run.poll()
            slicer.app.processEvents()
        self.assertIn(run.writer.segment_id, list(segmentation.GetSegmentation().GetSegmentIDs()))
        run.cancel()
        status = run.wait(on_status=lambda s: slicer.app.processEvents())
        self.assertEqual(status.state, "cancelled")
        self.assertEqual(list(segmentation.GetSegmentation().GetSegmentIDs()), segmentsBefore)
        after = [slicer.mrmlScene.GetNthNode(i).GetID() for i in range(slicer.mrmlScene.GetNumberOfNodes())]
        self.assertEqual(after, before)
