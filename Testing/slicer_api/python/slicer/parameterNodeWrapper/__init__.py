# Copied unchanged from 3D Slicer v5.12.0-87-g583e9b37d5 (583e9b37d50ead7daf7b783dce465ccaecec8809),
# Base/Python/slicer/parameterNodeWrapper/__init__.py, by Testing/slicer_api/regenerate.py (3D Slicer license: ../../../LICENSE-Slicer.txt).
"""The parameter node wrapper allows wrapping around a ``vtkMRMLScriptedModuleNode`` parameter node with typed member
access.
"""

from .default import *
from .guiConnectors import *
from .guiCreation import *
from .parameterPack import *
from .serializers import *
from .types import *
from .validators import *
from .util import (
    findFirstAnnotation,
    getNodeTypes,
    isNodeOrUnionOfNodes,
    splitAnnotations,
    unannotatedType,
)
from .wrapper import *
