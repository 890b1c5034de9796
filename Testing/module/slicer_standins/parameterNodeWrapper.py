"""Stand-in for Slicer's ``slicer.parameterNodeWrapper``, written for the headless tests.

Not Slicer's code: a from-scratch implementation of the part SynPo's parameter node uses
(``str``, ``int``, ``bool`` and MRML node fields, annotated with ``Default``, ``Choice``,
``Minimum``, ``WithinRange``), bound to the widget classes SynPo's .ui uses. Anything else
raises, so a new kind of field in SynPo.py fails here instead of passing untested.

What it keeps from Slicer, because the tests depend on it:

- values live in the real ``vtkMRMLScriptedModuleNode`` of slicer-core, stored as Slicer
  stores them (``str(value)``; ``"True"``/``"False"``; a node as a node reference whose role
  is the parameter's name, plus an empty parameter of that name), so a scene saved here
  reads back there and the other way round;
- ``connectGui`` binds the widgets whose ``SlicerParameterName`` dynamic property names a
  parameter; the widget's class must be exactly the class Slicer binds for that field kind;
  a combo box gets the ``Choice`` items, a spin box the range;
- node -> GUI on the node's ModifiedEvent, GUI -> node on the widget's change signal.

Public names are a subset of Slicer's (Testing/module/test_slicer_module_headless.py checks
names and signatures against Testing/module/slicer_api/slicer-api.json).
"""

import typing

import qt
import slicer
import vtk

SlicerParameterNamePropertyName = "SlicerParameterName"


class Default:
    def __init__(self, value=None):
        self.value = value


class Choice:
    def __init__(self, choices):
        self.choices = choices

    def validate(self, value):
        if value not in self.choices:
            raise ValueError(f"Value is {value}, but must be in one of the following: {self.choices}")


class Minimum:
    def __init__(self, minimum):
        self.minimum = minimum

    def validate(self, value):
        if value < self.minimum:
            raise ValueError(f"Value must be at least {self.minimum}, is {value}")


class WithinRange:
    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value):
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"Value must be within range [{self.minimum}, {self.maximum}], is {value}")


# ----------------------------------------------------------------------------- storage

class _Field:
    """One parameter: its kind, default and validators, read from and written to the node."""

    def __init__(self, name, hint):
        kind, *annotations = typing.get_args(hint) if typing.get_origin(hint) is typing.Annotated else (hint,)
        if not (kind in (str, int, bool) or isinstance(kind, type) and issubclass(kind, slicer.vtkMRMLNode)):
            raise TypeError(f"{name}: the stand-in parameterNodeWrapper supports str, int, bool and MRML nodes, "
                            f"not {kind}")
        defaults = [a for a in annotations if isinstance(a, Default)]
        self.validators = [a for a in annotations if isinstance(a, (Choice, Minimum, WithinRange))]
        unknown = [a for a in annotations if not isinstance(a, (Default, Choice, Minimum, WithinRange))]
        if unknown or len(defaults) > 1:
            raise TypeError(f"{name}: annotations the stand-in does not support: {unknown or defaults}")
        self.name, self.kind = name, kind
        self.default = defaults[0].value if defaults else {str: "", int: 0, bool: False}.get(kind)

    @property
    def isNode(self):
        return self.kind not in (str, int, bool)

    def read(self, node):
        if not node.HasParameter(self.name):
            self.write(node, self.default)
        if self.isNode:
            return node.GetNodeReference(self.name)
        text = node.GetParameter(self.name)
        return text == "True" if self.kind is bool else self.kind(text)

    def write(self, node, value):
        if self.isNode:
            if value is not None and not isinstance(value, self.kind):
                raise TypeError(f"{self.name} must be a {self.kind.__name__}, is {type(value).__name__}")
        elif not isinstance(value, self.kind):
            raise TypeError(f"{self.name} must be a {self.kind.__name__}, is {value!r}")
        for validator in self.validators:
            validator.validate(value)
        if self.isNode:
            with slicer.util.NodeModify(node):
                node.SetParameter(self.name, "")  # marks the parameter present when the node is None
                node.SetNodeReferenceID(self.name, value.GetID() if value is not None else None)
        else:
            node.SetParameter(self.name, ("True" if value else "False") if self.kind is bool else str(value))


# ----------------------------------------------------------------------------- widgets

def _connector(widget, field):
    """(read, write, change signal) for the widget class Slicer binds to this kind of field."""
    cls = type(widget)
    choice = next((v for v in field.validators if isinstance(v, Choice)), None)
    if cls is qt.QComboBox and choice is not None:
        widget.clear()
        for c in choice.choices:
            widget.addItem(str(c))

        def write(value):
            widget.currentIndex = list(choice.choices).index(value)

        return (lambda: choice.choices[widget.currentIndex]), write, widget.currentIndexChanged
    if cls is qt.QSpinBox and field.kind is int:
        bounds = next((v for v in field.validators if isinstance(v, WithinRange)), None)
        minimum = next((v for v in field.validators if isinstance(v, Minimum)), None)
        if bounds is not None:
            widget.setRange(bounds.minimum, bounds.maximum)
        else:
            widget.setRange(minimum.minimum if minimum is not None else -(2**31), 2**31 - 1)
        return (lambda: widget.value), (lambda value: setattr(widget, "value", value)), widget.valueChanged
    if cls is qt.QCheckBox and field.kind is bool:
        return (lambda: widget.checked), (lambda value: setattr(widget, "checked", value)), widget.stateChanged
    if cls is qt.QLineEdit and field.kind is str:
        def write(value):
            if widget.text != value:  # rewriting the same text would move the cursor
                widget.text = value

        return (lambda: widget.text), write, widget.textChanged
    if cls is slicer.qMRMLNodeComboBox and field.isNode:
        widget.nodeTypes = [field.kind.__name__]
        return widget.currentNode, widget.setCurrentNode, widget.currentNodeChanged
    raise TypeError(f"the stand-in parameterNodeWrapper cannot bind {field.name} ({field.kind.__name__}) "
                    f"to a {cls.__name__}")


class _WrapperMethods:
    """Copied onto every wrapped class (Slicer's wrapper adds the same names)."""

    def __init__(self, parameterNode):
        self.parameterNode = parameterNode
        self._guis, self._nextGuiTag, self._updatingGui = {}, 0, False
        for field in self.allParameters.values():
            if not parameterNode.HasParameter(field.name):
                field.write(parameterNode, field.default)

    def StartModify(self):
        return self.parameterNode.StartModify()

    def EndModify(self, wasModified):
        return self.parameterNode.EndModify(wasModified)

    def AddObserver(self, event, callback, priority=0.0):
        return self.parameterNode.AddObserver(event, callback, priority)

    def RemoveObserver(self, tag):
        self.parameterNode.RemoveObserver(tag)

    def connectGui(self, gui):
        """Bind every widget of ``gui`` (an object whose attributes are widgets, as
        ``slicer.util.childWidgetVariables`` returns) that names a parameter; returns a tag."""
        bindings = []
        for widget in vars(gui).values():
            name = widget.property(SlicerParameterNamePropertyName)
            if not name:
                continue
            if name not in self.allParameters:
                raise ValueError(f"{widget.objectName} is bound to {name}, which is not a parameter")
            field = self.allParameters[name]
            read, write, signal = _connector(widget, field)
            write(field.read(self.parameterNode))

            def onWidgetChanged(*args, field=field, read=read):
                if not self._updatingGui:
                    field.write(self.parameterNode, read())

            signal.connect(onWidgetChanged)
            bindings.append((field, write, signal, onWidgetChanged))

        def onNodeModified(caller, event):
            self._updatingGui = True
            try:
                for field, write, _, _ in bindings:
                    write(field.read(self.parameterNode))
            finally:
                self._updatingGui = False

        tag = self._nextGuiTag
        self._nextGuiTag += 1
        self._guis[tag] = (bindings, self.parameterNode.AddObserver(vtk.vtkCommand.ModifiedEvent, onNodeModified))
        return tag

    def disconnectGui(self, guiTag):
        bindings, observer = self._guis.pop(guiTag, ([], None))
        for _, _, signal, slot in bindings:
            signal.disconnect(slot)
        if observer is not None:
            self.parameterNode.RemoveObserver(observer)


def parameterNodeWrapper(classtype):
    """Class decorator: typed attributes over a vtkMRMLScriptedModuleNode's parameters."""
    hints = typing.get_type_hints(classtype, include_extras=True)
    classtype.allParameters = {name: _Field(name, hint) for name, hint in hints.items()}
    for name, field in classtype.allParameters.items():
        setattr(classtype, name, property(lambda self, f=field: f.read(self.parameterNode),
                                          lambda self, value, f=field: f.write(self.parameterNode, value)))
    for name, method in vars(_WrapperMethods).items():
        if callable(method):
            setattr(classtype, name, method)
    return classtype
