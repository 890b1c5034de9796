"""Stand-in for Slicer's ``slicer.ScriptedLoadableModule``, written for the headless tests.

Not Slicer's code: the four base classes with the members SynPo/SynPo.py and the harness
use, behaving as Slicer's do for them:

- ScriptedLoadableModule: keeps ``parent`` (the C++ module object), registers the module's
  self-test in ``slicer.selfTests``, ``resourcePath``, ``runTest`` (runs ``<Name>Test``);
- ScriptedLoadableModuleWidget: ``parent``/``layout`` of the panel, ``resourcePath``,
  ``setup`` (developer mode off: no Reload & Test section), ``cleanup``, ``onReload``
  (slicer-core's real ``slicer.util.reloadScriptedModule``);
- ScriptedLoadableModuleLogic: the module's singleton ``vtkMRMLScriptedModuleNode`` in the
  real scene (``getParameterNode``, ``createParameterNode``);
- ScriptedLoadableModuleTest: a ``unittest.TestCase`` with ``delayDisplay``.

Every name and signature here is one Slicer's classes have (checked against
Testing/module/slicer_api/slicer-api.json by Testing/module/test_slicer_module_headless.py).
"""

import os
import sys
import unittest

import slicer


class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = type(self).__name__
        if not hasattr(slicer, "selfTests"):
            slicer.selfTests = {}
        slicer.selfTests[self.moduleName] = self.runTest

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(self.parent.path), "Resources", filename)

    def runTest(self, msec=100, **kwargs):
        testCase = getattr(sys.modules[type(self).__module__], self.moduleName + "Test")()
        testCase.messageDelay = msec
        testCase.runTest(**kwargs)


class ScriptedLoadableModuleWidget:
    def __init__(self, parent=None):
        if parent is None:
            raise NotImplementedError("the stand-in needs the panel Slicer creates (a top-level widget is not made)")
        self.moduleName = type(self).__name__.removesuffix("Widget")
        self.parent = parent
        self.layout = parent.layout()

    def resourcePath(self, filename):
        return os.path.join(os.path.dirname(slicer.util.modulePath(self.moduleName)), "Resources", filename)

    def setup(self):
        """Slicer adds its Reload & Test section here in developer mode, which is off here."""

    def cleanup(self):
        pass

    def onReload(self):
        slicer.util.reloadScriptedModule(self.moduleName)


class ScriptedLoadableModuleLogic:
    def __init__(self, parent=None):
        self.moduleName = type(self).__name__.removesuffix("Logic")

    def getParameterNode(self):
        node = slicer.mrmlScene.GetSingletonNode(self.moduleName, "vtkMRMLScriptedModuleNode")
        if node is None:
            return slicer.mrmlScene.AddNode(self.createParameterNode())
        if node.GetAttribute("ModuleName") != self.moduleName:  # a closed scene keeps the node, not the attribute
            node.SetAttribute("ModuleName", self.moduleName)
        return node

    def createParameterNode(self):
        node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLScriptedModuleNode")
        node.UnRegister(None)
        node.SetSingletonTag(self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        node.SetName(slicer.mrmlScene.GenerateUniqueName(self.moduleName))
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, requestedDelay=None, msec=None):
        """Slicer's order: the test's ``messageDelay``, then ``msec``, then ``requestedDelay``, 100 ms."""
        delay = next((d for d in (getattr(self, "messageDelay", None), msec, requestedDelay) if d is not None), 100)
        slicer.util.delayDisplay(message, delay)
