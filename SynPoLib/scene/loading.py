"""Files into the scene: a batch's results (query volume and ``.seg.nrrd``) for review.

Nodes are read through MRML's own storage nodes (``vtkMRMLVolumeArchetypeStorageNode``,
``vtkMRMLSegmentationStorageNode``), so a result lands in the scene exactly where the
file says, in the Slicer application and on PyPI's ``slicer-core`` alike. A file that
cannot be read adds nothing: the nodes created for it are removed again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

from ..errors import MRMLInputError

#: extensions stripped from a file name to name its node
_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def node_name_for(path: os.PathLike) -> str:
    name = Path(path).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem


def remove_with_helpers(scene, node) -> None:
    """Remove a node with the display and storage nodes made for it."""
    helpers = [node.GetNthDisplayNode(n) for n in range(node.GetNumberOfDisplayNodes())]
    helpers.append(node.GetStorageNode())
    for helper in helpers:
        if helper is not None:
            scene.RemoveNode(helper)
    scene.RemoveNode(node)


def _read(scene, node, storage, path: os.PathLike, what: str):
    scene.AddNode(node)
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    node.SetAndObserveStorageNodeID(storage.GetID())
    if not Path(path).is_file() or not storage.ReadData(node):
        remove_with_helpers(scene, node)
        raise MRMLInputError(f"cannot read {what} {path}")
    return node


def load_volume(scene, path: os.PathLike, name: Optional[str] = None):
    """A scalar volume node read from ``path`` (NIfTI, NRRD, MHA)."""
    import slicer

    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name or node_name_for(path))
    _read(scene, node, slicer.vtkMRMLVolumeArchetypeStorageNode(), path, "the volume")
    node.CreateDefaultDisplayNodes()
    return node


def load_segmentation(scene, path: os.PathLike, name: Optional[str] = None, reference_volume=None):
    """A segmentation node read from a ``.seg.nrrd``, its geometry tied to ``reference_volume``."""
    import slicer

    from .nodes import ensure_converter_rules

    ensure_converter_rules()
    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(name or node_name_for(path))
    _read(scene, node, slicer.vtkMRMLSegmentationStorageNode(), path, "the segmentation")
    node.CreateDefaultDisplayNodes()
    if reference_volume is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    return node


def load_results(scene, pairs: Sequence[Tuple[os.PathLike, os.PathLike, str]]) -> List[tuple]:
    """Each (volume path, segmentation path, name) as a (volume node, segmentation node) pair.

    The pairs are loaded in order; one that cannot be read stops here with a
    :class:`~SynPoLib.errors.MRMLInputError` and leaves the pairs already loaded.
    """
    loaded = []
    for volume_path, segmentation_path, name in pairs:
        volume = load_volume(scene, volume_path, name)
        try:
            segmentation = load_segmentation(scene, segmentation_path, f"{name} SynPo", volume)
        except MRMLInputError:
            remove_with_helpers(scene, volume)
            raise
        loaded.append((volume, segmentation))
    return loaded


__all__ = ["load_results", "load_segmentation", "load_volume", "node_name_for", "remove_with_helpers"]
