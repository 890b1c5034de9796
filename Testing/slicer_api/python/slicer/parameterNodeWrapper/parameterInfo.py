# Copied unchanged from 3D Slicer v5.12.0-87-g583e9b37d5 (583e9b37d50ead7daf7b783dce465ccaecec8809),
# Base/Python/slicer/parameterNodeWrapper/parameterInfo.py, by Testing/slicer_api/regenerate.py (3D Slicer license: ../../../LICENSE-Slicer.txt).
from dataclasses import dataclass
import typing

from .serializers import Serializer

# this is totally private to the implementation, so not exposed
__all__ = []


@dataclass
class ParameterInfo:
    basename: str
    serializer: Serializer
    default: typing.Any
    unalteredType: typing.Any
