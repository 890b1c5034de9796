"""Building real MRML scenes for the module's tests (PyPI ``slicer-core``, no Qt).

Geometry here is computed from the matrices the tests choose, independently of
SynPoLib.scene, so a test compares the adapter against ground truth, not against itself.
"""

from __future__ import annotations

import hashlib
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

import slicer  # noqa: F401  (a missing slicer-core must fail the tests, never skip them)
import vtk
from vtk.util import numpy_support

#: direction matrices (columns = world direction of i, j, k)
RAS = np.eye(3)
LPS = np.diag([-1.0, -1.0, 1.0])                       # what a DICOM/NIfTI LPS volume shows in Slicer
FLIPPED_K = np.diag([1.0, 1.0, -1.0])                  # slices stored head to foot
SAGITTAL = np.array([[0.0, 0.0, -1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])  # permuted: i = A, j = -S, k = -R
CORONAL = np.array([[-1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])   # i = L, j = -S, k = A


def geometry(directions: np.ndarray, spacing_ijk: Sequence[float], origin: Sequence[float]) -> np.ndarray:
    """4x4 IJK-to-RAS from direction columns, spacing (i, j, k) and origin."""
    m = np.eye(4)
    m[:3, :3] = np.asarray(directions, float) * np.asarray(spacing_ijk, float)[None, :]
    m[:3, 3] = origin
    return m


def rotation(axis: Sequence[float], degrees: float) -> np.ndarray:
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    t = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


def to_vtk(m: np.ndarray) -> vtk.vtkMatrix4x4:
    out = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            out.SetElement(r, c, float(m[r, c]))
    return out


def add_linear_transform(scene, to_parent: np.ndarray, *children):
    """A linear transform node with this 4x4 matrix, observed by ``children``."""
    node = slicer.vtkMRMLLinearTransformNode()
    scene.AddNode(node)
    node.SetMatrixTransformToParent(to_vtk(to_parent))
    for child in children:
        child.SetAndObserveTransformNodeID(node.GetID())
    return node


def to_numpy(m) -> np.ndarray:
    return np.array([[m.GetElement(r, c) for c in range(4)] for r in range(4)])


def new_scene() -> "slicer.vtkMRMLScene":
    from SynPoLib.scene import ensure_converter_rules

    ensure_converter_rules()
    return slicer.vtkMRMLScene()


def voxel_world(matrix: np.ndarray, shape_kji: Sequence[int]) -> np.ndarray:
    """(k, j, i, 3) world RAS of every voxel centre."""
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape_kji], indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], axis=-1).astype(float)
    return (ijk1 @ np.asarray(matrix).T)[..., :3]


def ellipsoid(points: np.ndarray, centre: Sequence[float], radii: Sequence[float]) -> np.ndarray:
    d = (points - np.asarray(centre, float)) / np.asarray(radii, float)
    return (d ** 2).sum(axis=-1) <= 1.0


def phantom(matrix: np.ndarray, shape_kji: Sequence[int], centre, radii, seed: int = 0):
    """A bright world-space ellipsoid (plus a dimmer one beside it) on noise, sampled on a grid."""
    pts = voxel_world(matrix, shape_kji)
    inside = ellipsoid(pts, centre, radii)
    other = ellipsoid(pts, np.asarray(centre) + np.array([0.0, 2.2 * radii[1], 0.0]), np.asarray(radii) * 0.6)
    rng = np.random.default_rng(seed)
    image = 80.0 + 700.0 * inside + 300.0 * other + rng.normal(0.0, 25.0, inside.shape)
    return image.astype(np.float32), inside.astype(np.uint8)


def add_volume(scene, array_kji: np.ndarray, matrix: np.ndarray, name: str = "volume",
               window: Optional[Tuple[float, float]] = None, vtk_type=vtk.VTK_FLOAT):
    node = slicer.vtkMRMLScalarVolumeNode()
    node.SetName(name)
    scene.AddNode(node)
    image = vtk.vtkImageData()
    image.SetDimensions(array_kji.shape[2], array_kji.shape[1], array_kji.shape[0])
    image.AllocateScalars(vtk_type, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = np.asarray(array_kji).ravel()
    node.SetAndObserveImageData(image)
    node.SetIJKToRASMatrix(to_vtk(matrix))
    if window is not None:
        display = slicer.vtkMRMLScalarVolumeDisplayNode()
        scene.AddNode(display)
        display.AutoWindowLevelOff()
        display.SetWindowLevel(window[1] - window[0], (window[0] + window[1]) / 2.0)
        node.SetAndObserveDisplayNodeID(display.GetID())
    return node


def oriented(mask_kji: np.ndarray, matrix: np.ndarray):
    image = slicer.vtkOrientedImageData()
    image.SetDimensions(mask_kji.shape[2], mask_kji.shape[1], mask_kji.shape[0])
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())[:] = (np.asarray(mask_kji) > 0).ravel()
    image.SetImageToWorldMatrix(to_vtk(matrix))
    return image


def add_segmentation(scene, reference_volume, segments: Sequence[Tuple[str, np.ndarray, Sequence[float]]],
                     matrix: Optional[np.ndarray] = None, name: str = "segmentation"):
    """A segmentation filled as the Segment Editor does (shared layers, label values).

    ``matrix`` is the geometry of the given masks in the segmentation's coordinates
    (default: the reference volume's IJK-to-RAS).
    """
    node = slicer.vtkMRMLSegmentationNode()
    node.SetName(name)
    scene.AddNode(node)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    if matrix is None:
        m = vtk.vtkMatrix4x4()
        reference_volume.GetIJKToRASMatrix(m)
        matrix = to_numpy(m)
    logic = slicer.vtkSlicerSegmentationsModuleLogic
    ids = []
    for seg_name, mask, color in segments:
        sid = node.GetSegmentation().AddEmptySegment("", seg_name, list(color))
        image = oriented(mask, matrix)
        assert logic.SetBinaryLabelmapToSegment(image, node, sid, logic.MODE_REPLACE, image.GetExtent())
        ids.append(sid)
    return node, ids


def node_to_world(node) -> np.ndarray:
    t = node.GetParentTransformNode()
    if t is None:
        return np.eye(4)
    m = vtk.vtkMatrix4x4()
    t.GetMatrixTransformToWorld(m)
    return to_numpy(m)


def segment_voxels(seg_node, segment_id: str):
    """(labelmap array (k, j, i) over its extent, labelmap-to-world 4x4 incl. transforms, extent)."""
    image = slicer.vtkOrientedImageData()
    seg_node.GetBinaryLabelmapRepresentation(segment_id, image)
    e = image.GetExtent()
    m = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(m)
    if e[1] < e[0] or image.GetPointData().GetScalars() is None:
        return np.zeros((0, 0, 0), np.uint8), node_to_world(seg_node) @ to_numpy(m), e
    arr = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(
        e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1).copy()
    return arr, node_to_world(seg_node) @ to_numpy(m), e


def segment_world_points(seg_node, segment_id: str) -> np.ndarray:
    """World RAS of the centres of the segment's voxels (N, 3), parent transforms included."""
    arr, matrix, e = segment_voxels(seg_node, segment_id)
    kji = np.argwhere(arr > 0)
    if not len(kji):
        return np.zeros((0, 3))
    ijk = kji[:, ::-1] + np.array([e[0], e[2], e[4]])
    return (np.c_[ijk, np.ones(len(ijk))] @ matrix.T)[:, :3]


def sorted_points(points: np.ndarray, decimals: int = 4) -> np.ndarray:
    p = np.round(np.asarray(points, float), decimals)
    return p[np.lexsort(p.T[::-1])] if len(p) else p


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def snapshot(scene) -> Dict:
    """Everything a run may not change: nodes, their names, volume voxels and geometry,
    every segment's name, colour, label layer, voxels (on their own grid) and world grid."""
    state = {"nodes": []}
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        entry = {"id": node.GetID(), "class": node.GetClassName(), "name": node.GetName()}
        if node.IsA("vtkMRMLTransformableNode"):
            entry["parent"] = node.GetTransformNodeID()
        if node.IsA("vtkMRMLVolumeNode") and node.GetImageData() is not None:
            m = vtk.vtkMatrix4x4()
            node.GetIJKToRASMatrix(m)
            scalars = numpy_support.vtk_to_numpy(node.GetImageData().GetPointData().GetScalars())
            entry["voxels"] = _digest(scalars)
            entry["ijk_to_ras"] = np.round(to_numpy(m), 9).tolist()
        if node.IsA("vtkMRMLSegmentationNode"):
            seg = node.GetSegmentation()
            segments = []
            for sid in seg.GetSegmentIDs():
                segment = seg.GetSegment(sid)
                arr, matrix, extent = segment_voxels(node, sid)
                segments.append({"id": sid, "name": segment.GetName(),
                                 "color": [round(c, 6) for c in segment.GetColor()],
                                 "label": segment.GetLabelValue(), "layer": seg.GetLayerIndex(sid),
                                 "voxels": _digest(arr), "count": int(arr.sum()), "extent": list(extent),
                                 "matrix": np.round(matrix, 9).tolist()})
            entry["segments"] = segments
            entry["layers"] = seg.GetNumberOfLayers()
        state["nodes"].append(entry)
    return state
