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
# As Slicer's scripted-module template does. Both classes are wrapped in MRMLCore, which
# "import slicer" loads before any module file runs, so the parameter node class below
# can use them when Slicer loads this file (Testing/module/test_slicer_names.py checks it).
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
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
#: keys that step through the slices flagged for review (also in the buttons' tooltips)
SHORTCUT_NEXT_FLAGGED = "Alt+N"
SHORTCUT_PREVIOUS_FLAGGED = "Alt+P"
#: "Name (Organization)", as the Extensions Index asks (the top-level CMakeLists.txt says the same)
CONTRIBUTORS = ["SynPo maintainers (SynPo project)"]
#: the method's paper
PAPER_URL = "https://liu-yufei.github.io/synpo-project-page/"
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
        self.parent.contributors = list(CONTRIBUTORS)
        self.parent.helpText = """
Label one slice of a structure in the Segment Editor, choose the segment, press Apply: SynPo
segments the structure in every slice (training-free one-shot segmentation: DINOv2 and SAM2
features fused into a confidence map, positive and negative point prompts, SAM draws the masks
slice by slice). Results stream in and can be cancelled back to the state before Apply.
Needs 3D Slicer 5.10 or later. See <a href="https://github.com/SynPo/SlicerSynPo#readme">the documentation</a>.
"""
        self.parent.acknowledgementText = f"""
<a href="{PAPER_URL}">SynPo: Boosting Training-Free Few-Shot Medical Segmentation via High-Quality
Negative Prompts</a> (Liu et al., MICCAI 2025). Uses SAM2 (Meta), DINOv2 (Meta) and LiteMedSAM (Ma et al.).
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
    #: False: the labelled slice(s) and the axis come from the segment itself
    manualSupportSlice: Annotated[bool, Default(False)]
    sliceView: Annotated[str, Choice(SLICE_VIEWS), Default("Red")]
    supportAxis: Annotated[int, WithinRange(0, 2), Default(0)]
    supportSlice: Annotated[int, Minimum(0), Default(0)]
    useAllLabelledSlices: Annotated[bool, Default(False)]
    #: segment every structure drawn on the labelled slice(s), in one run (one result each)
    allSegments: Annotated[bool, Default(False)]
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
        #: True while packages install or weights download (Apply stays disabled)
        self._busy = False
        self._supportInfoKey = None

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
        self.ui.nextFlaggedButton.connect("clicked(bool)", self.onNextFlagged)
        self.ui.previousFlaggedButton.connect("clicked(bool)", self.onPreviousFlagged)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.undoButton.connect("clicked(bool)", self.onUndoButton)
        self.ui.rerunButton.connect("clicked(bool)", self.onRerunButton)

        self.ui.configTableWidget.setHorizontalHeaderLabels(["Parameter", "Value"])
        self.ui.scoresTableWidget.setHorizontalHeaderLabels(["Slice", "Score", "Area", "Review"])
        self.ui.nextFlaggedButton.toolTip = f"Show the next slice flagged for review ({SHORTCUT_NEXT_FLAGGED})"
        self.ui.previousFlaggedButton.toolTip = f"Show the previous slice flagged for review ({SHORTCUT_PREVIOUS_FLAGGED})"
        self._updateReviewButtons()
        tooOld = self.logic.pythonTooOld()
        if tooOld:
            self.ui.statusLabel.text = tooOld
        self._setRunning(False)
        self.initializeParameterNode()

    def onReload(self):
        """Reload SynPo.py and SynPoLib: Slicer's reload re-reads only the module file, and
        SynPoLib's modules would otherwise stay as first imported."""
        with slicer.util.tryWithErrorDisplay("SynPo: cannot reload"):
            if self._run is not None and not self._run.finished:
                raise RuntimeError("a SynPo run is in progress: cancel it before reloading")
            for name in [n for n in sys.modules if n == "SynPoLib" or n.startswith("SynPoLib.")]:
                del sys.modules[name]
            ScriptedLoadableModuleWidget.onReload(self)

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
        self.setParameterNode(None)

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
        volume, segmentation = self.logic.defaultInputs(slicer.mrmlScene)
        if not p.supportVolume and volume is not None:
            p.supportVolume = volume
        if not p.supportSegmentation and segmentation is not None:
            p.supportSegmentation = segmentation

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
        self._updateSupportSliceInfo()
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

    def _updateSupportSliceInfo(self):
        """The line under the segment: where it is labelled (or what is missing)."""
        p = self._parameterNode
        manual = p.manualSupportSlice
        for widget in (self.ui.sliceViewComboBox, self.ui.useCurrentSliceButton, self.ui.supportAxisSpinBox,
                       self.ui.supportSliceSpinBox, self.ui.allLabelledSlicesCheckBox):
            widget.enabled = manual
        segmentation = p.supportSegmentation
        key = (manual, p.supportAxis, p.supportSlice, p.useAllLabelledSlices, p.supportSegmentID,
               segmentation.GetID() if segmentation else None, segmentation.GetMTime() if segmentation else 0,
               p.supportVolume.GetID() if p.supportVolume else None)
        if key == self._supportInfoKey:
            return
        self._supportInfoKey = key
        if manual:
            shown = "every labelled slice" if p.useAllLabelledSlices else f"slice {p.supportSlice}"
            self.ui.supportSliceInfoLabel.text = f"Set by hand (Advanced): {shown} along {'KJI'[p.supportAxis]}"
            return
        self.ui.supportSliceInfoLabel.text = self.logic.describeSupportSlices(
            p.supportVolume, p.supportSegmentation, p.supportSegmentID)

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
        if not problem:
            problem = self.logic.pythonTooOld()
        if not problem and self._busy:
            problem = "SynPo is installing its packages or downloading model weights"
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
                p.manualSupportSlice = True
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
            if self._busy:
                return  # a click while packages install or weights download
            p = self._parameterNode
            backend = BACKENDS[p.backend]
            self._setBusy(True)
            try:
                if not self.logic.ensureDependencies(backend, ask=True):
                    return
                if not self.logic.ensureWeights(backend):
                    return
            finally:
                self._setBusy(False)
            self._updateDeviceLabel()
            self._run = self.logic.startFromParameterNode(p, beforeFirstWrite=self.logic.saveStateForUndo)
            self.ui.scoresTableWidget.setRowCount(0)
            self._updateReviewButtons()
            self.ui.progressBar.value = 0
            self.ui.progressBar.maximum = max(1, len(self._run.inputs.slices))
            self.ui.statusLabel.text = "starting"
            self._setRunning(True)
            self._timer.start()

    def _setBusy(self, busy):
        self._busy = bool(busy)
        self._checkCanApply()
        slicer.app.processEvents()  # show the disabled button before the dialogs

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
        self._showStatus(status, refresh=True)  # the 3D clean-up may have changed the areas
        if status.state == "finished":
            self.logic.showResult(run)
            notes = "".join(f"; {note}" for note in getattr(run.result, "notes", ()) or ())  # e.g. NaN voxels
            self.ui.statusLabel.text = f"done: {status.total} slices in {status.elapsed:.0f} s{notes}"
            if status.corrected:
                changed = sorted({i for slices in status.changed.values() for i in slices})
                self.ui.statusLabel.text = (f"done again: {status.total} slice(s) recomputed, the correction "
                                            f"changed {len(changed)} (marked in the review list)")
        elif status.state == "cancelled":
            self.ui.statusLabel.text = "cancelled: nothing was changed"
        elif status.state == "failed":
            self.ui.statusLabel.text = "failed: nothing was changed"
            raise RuntimeError(f"SynPo failed: {status.error}. Nothing was changed.") from status.error

    def _showStatus(self, status, refresh=False):
        self.ui.progressBar.maximum = max(1, status.total)
        self.ui.progressBar.value = status.done
        if status.state == "running":
            left = status.remaining
            leftText = f", about {int(left) // 60}:{int(left) % 60:02d} left" if left == left else ""
            self.ui.statusLabel.text = (f"{status.done} / {status.total} slices{leftText}"
                                        + (f" ({status.stage})" if status.stage and not status.done else ""))
        self._fillScores(status.records, refresh, status)

    def _fillScores(self, records, refresh=False, status=None):
        """The review list (SynPoLib.scene.review_rows): every slice of every result segment;
        after a run again, which slices the correction changed and which you corrected."""
        table = self.ui.scoresTableWidget
        if status is None and self._run is not None:
            status = self._run.status()
        rows = self.logic.reviewRows(self._run, status) if status is not None else []
        if table.rowCount == len(rows) and not refresh:
            return
        table.setRowCount(len(rows))
        for row, r in enumerate(rows):
            for column, text in enumerate((str(r.index), r.score, str(r.pixels), r.flag)):
                item = qt.QTableWidgetItem(text)
                item.setFlags(qt.Qt.ItemIsEnabled | qt.Qt.ItemIsSelectable)
                if r.flag:
                    item.setBackground(qt.QBrush(qt.QColor(255, 230, 160)))
                table.setItem(row, column, item)
        self._updateReviewButtons()

    def _flaggedRows(self):
        table = self.ui.scoresTableWidget
        return [row for row in range(table.rowCount) if table.item(row, 3) is not None and table.item(row, 3).text()]

    def _updateReviewButtons(self):
        flagged = bool(self._flaggedRows())
        self.ui.nextFlaggedButton.enabled = flagged
        self.ui.previousFlaggedButton.enabled = flagged

    def _showFlagged(self, step):
        rows = self._flaggedRows()
        if not rows or self._run is None:
            return
        table = self.ui.scoresTableWidget
        current = table.currentRow()
        if step > 0:
            row = next((r for r in rows if r > current), rows[0])
        else:
            row = next((r for r in reversed(rows) if r < current), rows[-1])
        table.setCurrentCell(row, 0)
        self.logic.jumpToSlice(self._run, int(table.item(row, 0).text()))

    def onNextFlagged(self):
        with slicer.util.tryWithErrorDisplay("SynPo: cannot show the next flagged slice"):
            self._showFlagged(+1)

    def onPreviousFlagged(self):
        with slicer.util.tryWithErrorDisplay("SynPo: cannot show the previous flagged slice"):
            self._showFlagged(-1)

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

    def onRerunButton(self):
        with slicer.util.tryWithErrorDisplay("SynPo could not run again.", waitCursor=True):
            if self._run is None or self._run.state != "finished":
                raise RuntimeError("run again needs a finished result: correct its slices in the Segment Editor first")
            self._run = self.logic.rerunWithCorrections(self._run, beforeFirstWrite=self.logic.saveStateForUndo)
            self.ui.scoresTableWidget.setRowCount(0)
            self._updateReviewButtons()
            self.ui.progressBar.value = 0
            self.ui.statusLabel.text = "running again with your corrections"
            self._setRunning(True)
            self._timer.start()

    def _setRunning(self, running):
        self.ui.cancelButton.enabled = running
        self.ui.undoButton.enabled = (not running and self._run is not None and self._run.state == "finished")
        self.ui.rerunButton.enabled = self.ui.undoButton.enabled
        for widget in (self.ui.inputsCollapsibleButton, self.ui.modelCollapsibleButton,
                       self.ui.advancedCollapsibleButton, self.ui.outputCollapsibleButton):
            widget.enabled = not running
        if self._parameterNode is not None:
            self._checkCanApply()


#
# Logic
#

class DependenciesMissing(RuntimeError):
    """A package SynPo needs is not installed, and this Slicer runs in testing mode."""


class SynPoLogic(ScriptedLoadableModuleLogic):
    """SynPo on MRML nodes, usable without the widget (Python console, scripts).

    Batch example::

        logic = slicer.util.getModuleLogic("SynPo")
        run = logic.segment(volume, segmentation, "Segment_1")   # waits, GUI stays live
        print(run.writer.segmentation_node.GetName(), run.writer.segment_id)
    """

    def getParameterNode(self):
        return SynPoParameterNode(super().getParameterNode())

    # -- inputs
    @staticmethod
    def defaultInputs(mrmlScene):
        """(support volume, segmentation) to start with (SynPoLib.scene.default_inputs): the
        Segment Editor's, else the volume shown in the red view, else the scene's first ones."""
        from SynPoLib import scene

        return scene.default_inputs(mrmlScene)

    @staticmethod
    def supportSlicesFromSegment(volume, segmentationNode, segmentId):
        """(axis, labelled slices) of the segment on the volume's grid (SynPoLib.scene)."""
        from SynPoLib import scene

        return scene.support_slices_from_segment(volume, segmentationNode, segmentId)

    def describeSupportSlices(self, volume, segmentationNode, segmentId):
        """One line for the panel: where the segment is labelled, or what to do first."""
        if volume is None or segmentationNode is None or not segmentId:
            return "Label the structure on one slice in the Segment Editor, then choose it above."
        try:
            axis, slices = self.supportSlicesFromSegment(volume, segmentationNode, segmentId)
        except ValueError as exc:  # empty segment, no labelmap, ...
            return f"Not usable yet: {exc}"
        direction = self.axisDirection(volume, axis)
        if len(slices) == 1:
            return f"Labelled on slice {slices[0]} along {'KJI'[axis]} ({direction})"
        shown = ", ".join(str(i) for i in slices[:6]) + (" ..." if len(slices) > 6 else "")
        return f"Labelled on {len(slices)} slices along {'KJI'[axis]}: {shown} (each query slice uses the nearest)"

    @staticmethod
    def pythonTooOld():
        """One line when this Slicer's Python cannot install SynPo's packages, else None."""
        from SynPoLib.backends.install import python_too_old

        return python_too_old()

    # -- dependencies and weights (first use only)
    def ensureDependencies(self, backend, ask=True):
        """Install what ``backend`` needs; False if the user declined. Never called at load.

        In testing mode (Slicer's build and test machines) nothing is installed: a missing
        package raises :class:`DependenciesMissing` instead."""
        from SynPoLib.backends import requirements

        tooOld = self.pythonTooOld()
        if tooOld:
            raise RuntimeError(tooOld)
        torch, packages = requirements.missing_packages(backend)
        if torch is None and not packages:
            return True
        if slicer.app.testingEnabled():
            missing = [r.spec for r in ([torch] if torch else []) + packages]
            raise DependenciesMissing(f"not installed: {', '.join(missing)} (testing mode installs nothing)")
        plan = requirements.install_plan_text(backend)
        if ask and not slicer.util.confirmOkCancelDisplay(
                "SynPo needs these Python packages, which will be downloaded and installed now "
                f"(this takes a few minutes, once):\n\n{plan}", windowTitle="SynPo: first-use installation"):
            return False
        if torch is not None:
            self._installTorch(torch.spec)
        if packages:
            from SynPoLib.backends.install import installed_torch_versions, pip_steps

            for step in pip_steps([r.spec for r in packages], installed=installed_torch_versions()):
                self._pipInstall(step)
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
    def _pipInstall(step):
        """One step of SynPoLib.backends.install.pip_steps: ``pip install <options> <requirements>``
        with the step's environment variables (pip runs as a child process and inherits them)."""
        from SynPoLib.backends.install import offline_message

        try:  # a submodule (Slicer >= 5.12): not an attribute of slicer until imported
            packaging = importlib.import_module("slicer.packaging")
        except ImportError:
            packaging = None
        saved = {name: os.environ.get(name) for name in step.environment}
        os.environ.update(step.environment)
        try:
            if packaging is not None and not step.options:  # progress dialog, restart detection
                packaging.pip_ensure(list(step.requirements), prompt_install=False, requester="SynPo")
            elif packaging is not None:
                packaging.pip_install(step.args, requester="SynPo")
            else:  # Slicer 5.10
                slicer.util.pip_install(step.args)
        except Exception as exc:
            raise RuntimeError(offline_message(list(step.requirements), f"pip failed: {exc}")) from exc
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
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
            from SynPoLib.backends.install import offline_message

            raise RuntimeError(offline_message([f"the model weights {name}"], f"download failed: {state['error']}")) \
                from state["error"]
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

        if choice in ("cuda", "mps") and device != choice:  # e.g. a scene saved on a GPU computer
            return (f"{choice} is not available on this computer: SynPo runs on the "
                    f"{'GPU (' + device + ')' if device != 'cpu' else 'CPU'} instead"), device != "cpu"
        if device.startswith("cuda"):
            return f"GPU: {torch.cuda.get_device_name(0)} (CUDA)", True
        if device == "mps":
            return "GPU: Apple silicon (MPS)", True
        note = " (no usable GPU found)" if choice in ("auto", "cuda", "mps") else ""
        return f"CPU{note}", False

    @staticmethod
    def resolveDevice(choice="auto"):
        """The device to run on. A GPU this computer lacks (a scene saved on another computer)
        falls back to what 'auto' picks, with a warning, instead of failing."""
        from SynPoLib.backends.device import resolve_device_or_fallback

        device, problem = resolve_device_or_fallback(choice)
        if problem:
            logging.warning(f"SynPo: {problem}; using {device} instead")
        return str(device)

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
        if p.manualSupportSlice:
            axis, supportSlices = p.supportAxis, None if p.useAllLabelledSlices else [p.supportSlice]
        else:  # every slice the segment is drawn on, along the axis it is drawn across
            axis, supportSlices = self.supportSlicesFromSegment(support, p.supportSegmentation, p.supportSegmentID)
        segments = self.structureSegments(p, axis, supportSlices)
        run = scene.run_on_nodes(
            self.backendFactory(backend, p.device), support, p.supportSegmentation, segments,
            axis=axis, support_slices=supportSlices,
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
        """If the Segment Editor edits this segmentation, make the whole run one undo step there.
        Its panel is looked up only if the user has opened it (``slicer.modules.SegmentEditorWidget``
        exists from then on): SynPo never builds another module's GUI."""
        editor = getattr(getattr(slicer.modules, "SegmentEditorWidget", None), "editor", None)
        if editor is None:
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
        slicer.vtkMRMLSliceNode.JumpAllSlices(slicer.mrmlScene, float(ras[0]), float(ras[1]), float(ras[2]))

    @staticmethod
    def structureSegments(p, axis, supportSlices):
        """The chosen segment, or (allSegments) every segment drawn on the labelled slice(s)."""
        from SynPoLib import scene

        if not p.allSegments:
            return p.supportSegmentID
        if supportSlices is None:  # every labelled slice of the chosen segment
            mask = scene.segment_array(p.supportSegmentation, p.supportSegmentID, p.supportVolume)
            supportSlices = scene.labelled_slices(mask, axis)
        ids = scene.segments_drawn_on(p.supportVolume, p.supportSegmentation, axis, supportSlices)
        return ids or p.supportSegmentID

    def rerunWithCorrections(self, run, beforeFirstWrite=None):
        """Run again after the user corrected slices of ``run``'s result segments (one undo step)."""
        from SynPoLib import scene

        return scene.rerun_on_nodes(run.backend, run, before_first_write=beforeFirstWrite).start()

    @staticmethod
    def reviewRows(run, status):
        """The review list's rows (SynPoLib.scene.review_rows), named after the result segments."""
        from SynPoLib import scene

        config = getattr(run, "config", None)
        quality = config.mode_quality() if config is not None else None
        names = {}
        for key, writer in getattr(run, "writers", {}).items():
            node = writer.segmentation_node
            segment = node.GetSegmentation().GetSegment(writer.segment_id) if node is not None and \
                writer.segment_id else None
            names[key] = segment.GetName() if segment is not None else key
        return scene.review_rows(status, quality, names)

    @staticmethod
    def undo(run):
        """Take a finished run's result back in one step: its segments (or the node it created),
        or, for a run again after corrections, the segments as you had corrected them."""
        run.undo()

    # -- cohorts: SynPoLib.files.run_batch (the same as `synpo batch`)
    def batch(self, manifest, outputFolder, shared=None, engine="local", workers=None, address=None,
              cancel=None, progress=None):
        """Segment every case of a manifest (CSV or JSON: query, support, support_mask, support_slice,
        label, ..., output) into ``outputFolder``; returns SynPoLib's BatchOutcome. ``shared``: options
        for every case, as ``synpo segment`` names them (e.g. ``{"support_mask": path, "support_slice":
        [81], "label": 77, "backend": "lite"}``). Runs on a worker thread while the GUI stays live;
        set the ``cancel`` threading.Event to stop (finished cases are kept; the same call resumes).
        ``progress`` receives a BatchProgress after each case. Load the results with loadBatchResults."""
        import threading

        from SynPoLib.files import BatchRequest, run_batch

        request = BatchRequest(manifest=manifest, out=str(outputFolder), shared=dict(shared or {}), engine=engine,
                               workers=workers, address=address)
        done = {}

        def work():
            try:
                done["outcome"] = run_batch(request, progress=progress, cancel=cancel)
            except BaseException as exc:  # noqa: BLE001 - re-raised on the main thread below
                done["error"] = exc

        worker = threading.Thread(target=work, name="SynPo batch", daemon=True)
        worker.start()
        while worker.is_alive():
            worker.join(0.1)
            slicer.app.processEvents()
        if "error" in done:
            raise done["error"]
        return done["outcome"]

    @staticmethod
    def loadBatchResults(outputFolder, count=None):
        """Load a batch's finished cases (query volume + segmentation), worst first, into the scene;
        ``count`` limits how many. Returns (volume node, segmentation node) pairs."""
        import os

        from SynPoLib import scene
        from SynPoLib.files import batch_results

        pairs = [(record["query"], os.path.join(str(outputFolder), "cases", record["case"],
                                                record["case"] + ".seg.nrrd"), record["case"])
                 for record in batch_results(outputFolder) if record.get("state") == "done"]
        return scene.load_results(slicer.mrmlScene, pairs[:count] if count else pairs)


#
# Self-test (runs inside Slicer: Developer Tools > Reload and Test)
#

class SynPoTest(ScriptedLoadableModuleTest):
    """On SampleData MRHead. The test puts an ellipsoidal lesion (defined in RAS mm) into a copy
    of the volume, labels it on its central slice, runs SynPo (lite backend) on the slices around
    it through the Logic, and checks the result's geometry (the query volume's grid, the lesion's
    RAS place) and a Dice floor (SynPoLib.scene.selftest; the same recipe runs in pytest on Colin27).

    Each test method starts from an empty scene and needs nothing from another, so they pass
    in any order. On Slicer's build machines (testing mode) SynPo installs nothing: without
    its packages the tests are skipped with the reason, and no other module's GUI is built."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        for test in (self.test_SynPoLogicOnSampleData, self.test_SynPoCancelRestoresScene):
            self.setUp()
            test()
            self.tearDown()

    def _skipUnlessInstalled(self):
        from SynPoLib.backends import requirements

        torch, packages = requirements.missing_packages("lite")
        missing = [r.spec for r in ([torch] if torch else []) + packages]
        if missing and slicer.app.testingEnabled():
            reason = f"SynPo's packages are not installed ({', '.join(missing)}) and testing mode installs nothing"
            logging.warning(f"SynPoTest skipped: {reason}")
            self.skipTest(reason)

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

        self._skipUnlessInstalled()
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
        self._skipUnlessInstalled()
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
