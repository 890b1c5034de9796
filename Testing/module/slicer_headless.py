"""Run the Slicer module (SynPo/SynPo.py, unchanged) without the Slicer application.

What is real here:

- the module: SynPo/SynPo.py and its .ui, unchanged, loaded as Slicer loads them;
- Qt: PySide6 from PyPI (offscreen platform: no display needed), with the .ui file
  loaded by Qt's own QUiLoader;
- MRML: PyPI's ``slicer-core`` (the wrapped MRML, segmentation and volumes libraries,
  and the Volumes and Segmentations modules' logics);
- ``slicer.util``: Slicer's own, shipped by slicer-core (loadUI, childWidgetVariables,
  VTKObservationMixin, NodeModify, tryWithErrorDisplay, reloadScriptedModule, ...).

What is a stand-in, written for these tests (none of it is Slicer's code), each with only
names and signatures the real one has (Testing/module/test_slicer_module_headless.py checks
them against Testing/module/slicer_api/slicer-api.json, read from Slicer's and CTK's sources):

- Slicer's pure-Python modules that slicer-core does not ship, in
  Testing/module/slicer_standins/ (put on ``slicer.__path__``):
  ``slicer.ScriptedLoadableModule`` (the four base classes, the members SynPo uses),
  ``slicer.parameterNodeWrapper`` (str/int/bool/node fields with Default, Choice,
  Minimum, WithinRange, stored in the real parameter node as Slicer stores them, bound
  to the .ui's widgets through their ``SlicerParameterName`` property) and
  ``slicer.packaging`` (pip_ensure, pip_install, without dialogs). What they do not
  cover (Slicer's other field kinds and widgets, parameter packs, the developer
  section, dialogs) only a real Slicer tests;
- PythonQt's conventions on top of PySide6 (the ``qt`` module): Qt properties read and
  written as attributes (``button.enabled = False``), ``obj.connect("signal(args)",
  slot)``, ``obj.name`` / ``className()``, ``exec_()``;
- the C++ widgets of Slicer and CTK the .ui uses (qMRMLWidget, qMRMLNodeComboBox,
  qMRMLSegmentSelectorWidget, ctkCollapsibleButton);
- ``slicer.app`` (a QApplication with the few qSlicerApplication calls made),
  ``slicer.modules`` (this module, and the Volumes and Segmentations modules' real
  logics), the scripted module's C++ parents (qSlicerScriptedLoadableModule/-Widget), a
  layout manager whose slice widgets hold the scene's real slice nodes, and
  ``SampleData`` (which returns the Colin27 MRI from Debian's mricron-data instead of
  downloading MRHead).
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import os
import sys
import threading
import types
import xml.etree.ElementTree as ET
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from PySide6 import QtCore, QtGui, QtUiTools, QtWidgets  # noqa: E402

import slicer  # noqa: E402  (slicer-core)
import vtk  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
MODULE_FILE = ROOT / "SynPo" / "SynPo.py"
#: stand-ins for Slicer's pure-Python modules that slicer-core lacks (an extra slicer.__path__ entry)
STANDINS = Path(__file__).resolve().parent / "slicer_standins"
#: their module names, as Slicer names them
STANDIN_MODULES = ("slicer.ScriptedLoadableModule", "slicer.parameterNodeWrapper", "slicer.packaging")
COLIN = Path("/usr/share/mricron/templates/ch2.nii.gz")

Signal, Property = QtCore.Signal, QtCore.Property


# ----------------------------------------------------------------------------- PythonQt's qt

def _meta_property_names(cls):
    meta = getattr(cls, "staticMetaObject", None)
    if meta is None:
        return []
    return [meta.property(i).name() for i in range(meta.propertyOffset(), meta.propertyCount())]


class _QtProperty(property):
    """A Qt property read and written as an attribute, as PythonQt shows it.

    When the property's READ function is virtual (``sizeHint``), PySide looks for a Python
    override of it by reading the attribute on instances of Python subclasses: that read,
    nested in the property read itself, gets the original method, so C++ calls its own."""

    _reading = threading.local()

    def __init__(self, cls, name):
        original = next((c.__dict__[name] for c in cls.__mro__
                         if name in c.__dict__ and not isinstance(c.__dict__[name], _QtProperty)), None)
        reading = self._reading

        def get(obj):
            key = (id(obj), name)
            active = reading.__dict__.setdefault("keys", set())
            if key in active and original is not None:
                return original.__get__(obj, type(obj))
            active.add(key)
            try:
                return QtCore.QObject.property(obj, name)
            finally:
                active.discard(key)

        super().__init__(get, lambda obj, value: QtCore.QObject.setProperty(obj, name, value))


_SIGNAL_TYPES = {"bool": bool, "int": int, "double": float, "float": float, "QString": str}


def _signal(obj, signature: str):
    name, _, args = signature.partition("(")
    signal = getattr(obj, name)
    types_ = [a.strip() for a in args.rstrip(")").split(",") if a.strip()]
    if types_ and all(t in _SIGNAL_TYPES for t in types_):
        try:
            return signal[tuple(_SIGNAL_TYPES[t] for t in types_)] if len(types_) > 1 else signal[_SIGNAL_TYPES[types_[0]]]
        except (KeyError, IndexError, TypeError):
            pass
    return signal


def _connect_by_signature(obj, signature, slot):
    _signal(obj, signature).connect(slot)
    return True


def _disconnect_by_signature(obj, signature, slot):
    try:
        _signal(obj, signature).disconnect(slot)
    except (RuntimeError, TypeError):
        return False
    return True


class PythonQtObject:
    """PythonQt's ``obj.connect("clicked(bool)", slot)`` for the classes defined here. PySide's
    QObject answers ``connect`` itself unless the instance's own class or the instance
    defines it, so it is put on each instance."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        _give_pythonqt_connect(self)


def _give_pythonqt_connect(obj):
    """The same for an object PySide created (e.g. by QUiLoader): on the instance."""
    original_connect, original_disconnect = obj.connect, obj.disconnect

    def connect(*args, **kwargs):
        if len(args) == 2 and isinstance(args[0], str):
            return _connect_by_signature(obj, *args)
        return original_connect(*args, **kwargs)

    def disconnect(*args, **kwargs):
        if len(args) == 2 and isinstance(args[0], str):
            return _disconnect_by_signature(obj, *args)
        return original_disconnect(*args, **kwargs)

    if "connect" not in obj.__dict__:
        obj.__dict__["connect"], obj.__dict__["disconnect"] = connect, disconnect


def _patch_pythonqt_conventions():
    if getattr(QtCore.QObject, "_synpo_pythonqt", False):
        return
    for module in (QtCore, QtGui, QtWidgets):
        for cls in [getattr(module, n) for n in dir(module)]:  # dir(): PySide6 creates classes lazily
            if isinstance(cls, type) and issubclass(cls, QtCore.QObject):
                for name in _meta_property_names(cls):
                    setattr(cls, name, _QtProperty(cls, name))
    QtCore.QObject.name = property(lambda self: self.objectName, lambda self, v: self.setObjectName(v))
    QtCore.QObject.className = lambda self: self.metaObject().className()
    for cls in (QtWidgets.QDialog, QtWidgets.QMessageBox, QtCore.QCoreApplication):
        if not hasattr(cls, "exec_"):
            cls.exec_ = cls.exec
    QtCore.QObject._synpo_pythonqt = True


class QUiLoader(QtUiTools.QUiLoader):
    """Qt's loader with Slicer's custom widgets registered. Connections in the .ui are made
    by signal and slot name (Qt would look them up by C++ signature, which Python-defined
    signals carrying MRML objects do not have)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        for cls in CUSTOM_WIDGETS:
            self.registerCustomWidget(cls)

    def load(self, device, parent=None):
        if isinstance(device, (str, Path)):
            data = Path(device).read_bytes()
        else:
            data = bytes(device.readAll())
        root = ET.fromstring(data)
        connections = root.find("connections")
        wiring = []
        if connections is not None:
            for c in connections.findall("connection"):
                wiring.append(tuple(c.find(k).text for k in ("sender", "signal", "receiver", "slot")))
            root.remove(connections)
        buffer = QtCore.QBuffer()
        buffer.setData(QtCore.QByteArray(ET.tostring(root)))
        buffer.open(QtCore.QIODevice.ReadOnly)
        widget = super().load(buffer, parent)
        if widget is None:
            return None

        for obj in [widget] + widget.findChildren(QtCore.QObject):
            _give_pythonqt_connect(obj)

        def find(name):
            return widget if widget.objectName == name else widget.findChild(QtCore.QObject, name)

        for sender, signal, receiver, slot in wiring:
            _signal(find(sender), signal).connect(getattr(find(receiver), slot.split("(")[0]))
        return widget


def make_qt_module():
    qt = types.ModuleType("qt", "PySide6 with PythonQt's conventions (Testing/slicer_headless.py)")
    for module in (QtCore, QtGui, QtWidgets, QtUiTools):
        for name in dir(module):
            if not name.startswith("_") and not hasattr(qt, name):
                setattr(qt, name, getattr(module, name))
    qt.QUiLoader = QUiLoader
    qt.QTimer = type("QTimer", (PythonQtObject, QtCore.QTimer), {})  # SynPo connects "timeout()"
    return qt


# ----------------------------------------------------------------------------- stand-ins

class qMRMLWidget(PythonQtObject, QtWidgets.QWidget):
    mrmlSceneChanged = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._scene = None

    def setMRMLScene(self, scene):
        self._scene = scene
        self.mrmlSceneChanged.emit(scene)

    def mrmlScene(self):
        return self._scene


def _scene_nodes(scene, class_names, hidden=False, excluded=()):
    out = []
    if scene is None:
        return out
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        if any(node.IsA(c) for c in class_names) and not any(node.IsA(c) for c in excluded) \
                and (hidden or not node.GetHideFromEditors()):
            out.append(node)
    return out


class qMRMLNodeComboBox(PythonQtObject, QtWidgets.QWidget):
    """A combo box of the scene's nodes of ``nodeTypes`` (selection by node, as the real one)."""

    currentNodeChanged = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._combo = QtWidgets.QComboBox(self)
        self._combo.setSizeAdjustPolicy(QtWidgets.QComboBox.AdjustToMinimumContentsLengthWithIcon)
        self._combo.setMinimumContentsLength(8)
        layout.addWidget(self._combo)
        self._types, self._hide, self._none, self._noneDisplay = [], [], False, "None"
        self._scene, self._tags, self._nodes, self._current = None, [], [], None
        self._combo.currentIndexChanged.connect(self._onIndex)

    def _get_types(self):
        return list(self._types)

    def _set_types(self, value):
        self._types = list(value)
        self._populate()

    nodeTypes = Property(list, _get_types, _set_types)
    hideChildNodeTypes = Property(list, lambda s: list(s._hide), lambda s, v: (setattr(s, "_hide", list(v)), s._populate()))
    noneEnabled = Property(bool, lambda s: s._none, lambda s, v: (setattr(s, "_none", bool(v)), s._populate()))
    noneDisplay = Property(str, lambda s: s._noneDisplay, lambda s, v: (setattr(s, "_noneDisplay", v), s._populate()))
    addEnabled = Property(bool, lambda s: False, lambda s, v: None)
    removeEnabled = Property(bool, lambda s: False, lambda s, v: None)
    renameEnabled = Property(bool, lambda s: False, lambda s, v: None)
    editEnabled = Property(bool, lambda s: False, lambda s, v: None)
    showChildNodeTypes = Property(bool, lambda s: True, lambda s, v: None)

    def setMRMLScene(self, scene):
        for tag in self._tags:
            self._scene.RemoveObserver(tag)
        self._scene, self._tags = scene, []
        if scene is not None:
            self._tags = [scene.AddObserver(e, lambda *a: self._populate())
                          for e in (scene.NodeAddedEvent, scene.NodeRemovedEvent, scene.EndCloseEvent)]
        self._populate()

    def mrmlScene(self):
        return self._scene

    def _populate(self):
        nodes = _scene_nodes(self._scene, self._types, excluded=self._hide)
        self._nodes = ([None] if self._none else []) + nodes
        current = self._current if self._current in nodes else None
        if current is None and not self._none and nodes:
            current = nodes[0]
        blocked = self._combo.blockSignals(True)
        self._combo.clear()
        for node in self._nodes:
            self._combo.addItem(self._noneDisplay if node is None else node.GetName())
        self._combo.setCurrentIndex(self._nodes.index(current) if current in self._nodes else -1)
        self._combo.blockSignals(blocked)
        self._set(current)

    def _onIndex(self, index):
        self._set(self._nodes[index] if 0 <= index < len(self._nodes) else None)

    def _set(self, node):
        if node is not self._current:
            self._current = node
            self.currentNodeChanged.emit(node)

    def currentNode(self):
        return self._current

    def currentNodeID(self):
        return self._current.GetID() if self._current is not None else ""

    def setCurrentNode(self, node):
        if node is not None and node not in self._nodes:
            self._populate()
        index = self._nodes.index(node) if node in self._nodes else (0 if self._none else -1)
        blocked = self._combo.blockSignals(True)
        self._combo.setCurrentIndex(index)
        self._combo.blockSignals(blocked)
        self._set(node if node in self._nodes else None)


class qMRMLSegmentSelectorWidget(qMRMLWidget):
    """A segmentation node combo box and a segment combo box, as the real widget."""

    currentNodeChanged = Signal(object)
    currentSegmentChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self._nodeBox = qMRMLNodeComboBox(self)
        self._nodeBox.nodeTypes = ["vtkMRMLSegmentationNode"]
        self._segmentBox = QtWidgets.QComboBox(self)
        layout.addWidget(self._nodeBox)
        layout.addWidget(self._segmentBox)
        self._ids, self._segmentation, self._tags = [], None, []
        self._nodeBox.currentNodeChanged.connect(self._onNode)
        self._segmentBox.currentIndexChanged.connect(self._onSegment)
        self.mrmlSceneChanged.connect(self._nodeBox.setMRMLScene)

    noneEnabled = Property(bool, lambda s: s._nodeBox.noneEnabled, lambda s, v: setattr(s._nodeBox, "noneEnabled", v))
    editEnabled = Property(bool, lambda s: False, lambda s, v: None)

    def _onNode(self, node):
        for tag in self._tags:
            self._segmentation.RemoveObserver(tag)
        self._tags, self._segmentation = [], node.GetSegmentation() if node is not None else None
        if self._segmentation is not None:
            self._tags = [self._segmentation.AddObserver(e, lambda *a: self._populate())
                          for e in (slicer.vtkSegmentation.SegmentAdded, slicer.vtkSegmentation.SegmentRemoved,
                                    slicer.vtkSegmentation.SegmentModified)]
        self._populate()
        self.currentNodeChanged.emit(node)

    def _populate(self):
        previous = self.currentSegmentID()
        self._ids = list(self._segmentation.GetSegmentIDs()) if self._segmentation is not None else []
        blocked = self._segmentBox.blockSignals(True)
        self._segmentBox.clear()
        for sid in self._ids:
            self._segmentBox.addItem(self._segmentation.GetSegment(sid).GetName())
        index = self._ids.index(previous) if previous in self._ids else (0 if self._ids else -1)
        self._segmentBox.setCurrentIndex(index)
        self._segmentBox.blockSignals(blocked)
        if self.currentSegmentID() != previous:
            self.currentSegmentChanged.emit(self.currentSegmentID())

    def _onSegment(self, index):
        self.currentSegmentChanged.emit(self.currentSegmentID())

    def currentNode(self):
        return self._nodeBox.currentNode()

    def setCurrentNode(self, node):
        self._nodeBox.setCurrentNode(node)

    def currentSegmentID(self):
        index = self._segmentBox.currentIndex
        return self._ids[index] if 0 <= index < len(self._ids) else ""

    def setCurrentSegmentID(self, segmentID):
        if segmentID in self._ids:
            self._segmentBox.setCurrentIndex(self._ids.index(segmentID))

    def segmentIDs(self):
        return list(self._ids)


class ctkCollapsibleButton(PythonQtObject, QtWidgets.QGroupBox):
    """A titled section that hides its contents when collapsed."""

    contentsCollapsed = Signal(bool)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._collapsed = False

    def _set_collapsed(self, value):
        self._collapsed = bool(value)
        for child in self.findChildren(QtWidgets.QWidget, options=QtCore.Qt.FindDirectChildrenOnly):
            child.setVisible(not self._collapsed)
        self.setMaximumHeight(self.fontMetrics().height() + 8 if self._collapsed else 16777215)
        self.setTitle(("\u25b6 " if self._collapsed else "\u25bc ") + self.title.lstrip("\u25b6\u25bc "))
        self.contentsCollapsed.emit(self._collapsed)

    collapsed = Property(bool, lambda s: s._collapsed, _set_collapsed)
    text = Property(str, lambda s: s.title.lstrip("\u25b6\u25bc "),
                    lambda s, v: s.setTitle(("\u25b6 " if s._collapsed else "\u25bc ") + v))

    def childEvent(self, event):  # children added while collapsed stay hidden
        super().childEvent(event)
        if self._collapsed and event.added() and isinstance(event.child(), QtWidgets.QWidget):
            event.child().setVisible(False)


CUSTOM_WIDGETS = [qMRMLWidget, qMRMLNodeComboBox, qMRMLSegmentSelectorWidget, ctkCollapsibleButton]


class qSlicerScriptedLoadableModule(PythonQtObject, QtCore.QObject):
    """The C++ module object a scripted module's ``parent`` is (title, categories, ... path)."""

    def __init__(self, path, logic=None):
        super().__init__()
        self.path = str(path)
        self.title, self.categories, self.dependencies, self.contributors = "", [], [], []
        self.helpText = self.acknowledgementText = ""
        self.icon = None
        self._widget = None
        self._logic = logic

    def widgetRepresentation(self):
        return self._widget

    def logic(self):
        return self._logic


class qSlicerScriptedLoadableModuleWidget(qMRMLWidget):
    """The C++ panel a scripted module's widget lives in: ``isEntered``, ``reload()``, ``self()``."""

    def __init__(self, moduleName):
        super().__init__()
        self.setLayout(QtWidgets.QVBoxLayout())
        self.moduleName = moduleName
        self.isEntered = False
        self._self = None

    def self(self):
        return self._self

    def reload(self):
        """Recreate the Python widget from the (re-executed) module file, as Slicer does."""
        module = sys.modules[self.moduleName]
        self._self = getattr(module, self.moduleName + "Widget")(self)
        setattr(slicer.modules, self.moduleName + "Widget", self._self)
        self._self.setup()
        if self.isEntered:
            self._self.enter()


class SliceWidget:
    def __init__(self, node):
        self._node = node

    def mrmlSliceNode(self):
        return self._node


class LayoutManager:
    """Slice views by name, each holding the scene's real vtkMRMLSliceNode."""

    def __init__(self, scene):
        self._scene = scene

    def sliceWidget(self, name):
        for node in _scene_nodes(self._scene, ["vtkMRMLSliceNode"], hidden=True):
            if node.GetLayoutName() == name:
                return SliceWidget(node)
        return None


class ModuleManager(PythonQtObject, QtCore.QObject):
    moduleAboutToBeUnloaded = Signal(str)

    def module(self, name):
        return getattr(slicer.modules, name.lower(), None)


class qSlicerApplication(PythonQtObject, QtWidgets.QApplication):
    """``slicer.app``: a real QApplication with the calls SynPo and Slicer's Python make."""

    def __init__(self):
        super().__init__(["SynPoHeadless"])
        self._testing = True  # Slicer's --testing: nothing is installed, dialogs close themselves
        self._moduleManager = ModuleManager()
        self.applicationName = "Slicer"

    def testingEnabled(self):
        return self._testing

    def processEvents(self, *args):
        """PySide6's processEvents() drops one reference to None per call on Python < 3.12 (None
        is immortal from 3.12 on, as in Slicer's Python 3.12): give it back, or a loop that pumps
        events thousands of times (SynPoTest does) frees None and aborts the interpreter."""
        QtWidgets.QApplication.processEvents(*args)
        if sys.version_info < (3, 12):
            ctypes.pythonapi.Py_IncRef(ctypes.py_object(None))

    def layoutManager(self):
        return LayoutManager(slicer.mrmlScene)

    def moduleManager(self):
        return self._moduleManager

    def userSettings(self):
        return QtCore.QSettings()

    def settings(self):
        return QtCore.QSettings()


def add_views(scene):
    """The slice views and composite nodes Slicer's layout puts into every scene."""
    scene.AddDefaultNode(slicer.vtkMRMLSliceNode())
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)
    for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal")):
        node = scene.CreateNodeByClass("vtkMRMLSliceNode")
        node.UnRegister(None)
        node.SetName(name)
        node.SetLayoutName(name)
        node.SetSingletonTag(name)
        scene.AddNode(node)
        node.SetOrientation(orientation)
        composite = slicer.vtkMRMLSliceCompositeNode()
        composite.SetLayoutName(name)
        composite.SetSingletonTag(name)
        scene.AddNode(composite)


def load_colin(scene, name="MRHead"):
    """Stand-in for SampleData's MRHead: a real T1 MRI (Colin27, Debian mricron-data)."""
    import numpy as np
    import SimpleITK as sitk

    assert COLIN.is_file(), f"{COLIN} missing: apt-get install mricron-data"
    image = sitk.ReadImage(str(COLIN))
    array = sitk.GetArrayFromImage(image).astype(np.int16)
    direction = np.array(image.GetDirection()).reshape(3, 3) * np.array(image.GetSpacing())[None, :]
    lps_to_ras = np.diag([-1.0, -1.0, 1.0])
    matrix = np.eye(4)
    matrix[:3, :3] = lps_to_ras @ direction
    matrix[:3, 3] = lps_to_ras @ np.array(image.GetOrigin())
    node = slicer.util.addVolumeFromArray(array, ijkToRAS=matrix, name=name)
    node.CreateDefaultDisplayNodes()
    return node


def make_sample_data_module():
    module = types.ModuleType("SampleData", "Stand-in for Slicer's SampleData (Testing/slicer_headless.py)")

    class SampleDataLogic:
        def downloadSample(self, name):
            assert name == "MRHead", name
            return load_colin(slicer.mrmlScene, name)

    module.SampleDataLogic = SampleDataLogic
    return module


#: every stand-in for a C++ class of Slicer or CTK -> the class it stands in for
CPP_STAND_INS = {
    **{cls: cls.__name__ for cls in CUSTOM_WIDGETS},
    qSlicerScriptedLoadableModule: "qSlicerScriptedLoadableModule",
    qSlicerScriptedLoadableModuleWidget: "qSlicerScriptedLoadableModuleWidget",
    qSlicerApplication: "qSlicerApplication",
    ModuleManager: "qSlicerModuleManager",
    LayoutManager: "qSlicerLayoutManager",
    SliceWidget: "qMRMLSliceWidget",
}


# ----------------------------------------------------------------------------- the session

STAND_IN_NAMES = ("app", "mrmlScene", "modules", "moduleNames", "selfTests", "qMRMLWidget", "qMRMLNodeComboBox",
                  "qMRMLSegmentSelectorWidget", "qSlicerScriptedLoadableModule",
                  "qSlicerScriptedLoadableModuleWidget")


class Session:
    """The Slicer-like environment: install() once per test module, uninstall() after."""

    def __init__(self):
        self.app = None
        self.saved_modules = {}
        self.excepthook = None
        self.errors = []

    def install(self):
        _patch_pythonqt_conventions()
        from SynPoLib.scene import ensure_converter_rules

        ensure_converter_rules()
        for name in ("qt", "SampleData", "SynPo"):
            self.saved_modules[name] = sys.modules.get(name)
        sys.modules["qt"] = make_qt_module()
        sys.modules["SampleData"] = make_sample_data_module()
        if str(STANDINS) not in slicer.__path__:
            slicer.__path__.append(str(STANDINS))
        self.app = QtWidgets.QApplication.instance() or qSlicerApplication()
        assert isinstance(self.app, qSlicerApplication), "another QApplication is running"
        slicer.app = self.app
        slicer.modules = types.ModuleType("slicer.modules")
        slicer.moduleNames = types.ModuleType("slicer.moduleNames")
        for cls in CUSTOM_WIDGETS[:3] + [qSlicerScriptedLoadableModule, qSlicerScriptedLoadableModuleWidget]:
            setattr(slicer, cls.__name__, cls)
        self.new_scene()
        self.excepthook = sys.excepthook
        sys.excepthook = self._unraised  # exceptions raised in Qt slots land here
        return self

    def _unraised(self, kind, value, tb):
        import traceback

        self.errors.append(value)
        traceback.print_exception(kind, value, tb)

    def new_scene(self):
        scene = slicer.vtkMRMLScene()
        scene.RegisterNodeClass(slicer.vtkMRMLSegmentEditorNode())  # as Slicer's Segmentations module does
        slicer.mrmlScene = scene
        add_views(scene)
        volumes = slicer.vtkSlicerVolumesLogic()
        volumes.SetMRMLScene(scene)
        segmentations = slicer.vtkSlicerSegmentationsModuleLogic()
        segmentations.SetMRMLScene(scene)
        # the real logics of the two modules whose logic Slicer's Python calls here
        slicer.modules.volumes = types.SimpleNamespace(logic=lambda: volumes)
        slicer.modules.segmentations = types.SimpleNamespace(logic=lambda: segmentations)
        return scene

    def load_module(self, path=MODULE_FILE):
        """Load the module file as Slicer does: execute it, create the module object, register it."""
        spec = importlib.util.spec_from_file_location("SynPo", str(path))
        module = importlib.util.module_from_spec(spec)
        sys.modules["SynPo"] = module
        spec.loader.exec_module(module)
        parent = qSlicerScriptedLoadableModule(path)
        instance = module.SynPo(parent)
        slicer.modules.synpo = parent
        slicer.modules.SynPoInstance = instance
        slicer.moduleNames.SynPo = "SynPo"
        return module

    def create_widget(self):
        """What Slicer does when the user first opens the module: the panel, then setup()."""
        panel = qSlicerScriptedLoadableModuleWidget("SynPo")
        panel.setMRMLScene(slicer.mrmlScene)
        slicer.modules.synpo._widget = panel
        panel.reload()
        return panel.self()

    def enter(self, widget):
        widget.parent.isEntered = True
        widget.enter()

    def pump(self, until=None, timeout=120.0, interval=0.01):
        """Run the Qt event loop (timers, queued signals) until ``until()`` or the timeout."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            self.app.processEvents()
            if until is None or until():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(interval)

    def uninstall(self):
        sys.excepthook = self.excepthook or sys.__excepthook__
        for name, module in self.saved_modules.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module
        for name in STAND_IN_NAMES:
            if hasattr(slicer, name):
                delattr(slicer, name)
        if str(STANDINS) in slicer.__path__:
            slicer.__path__.remove(str(STANDINS))
        for name in STANDIN_MODULES:
            sys.modules.pop(name, None)
            if name.split(".")[1] in vars(slicer):
                delattr(slicer, name.split(".")[1])
