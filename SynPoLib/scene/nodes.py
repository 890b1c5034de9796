"""MRML nodes in: volumes, segments and views of a 3D Slicer scene as numpy arrays.

It runs in the Slicer application and, without Qt, on PyPI's ``slicer-core`` (the tests
do that): ``slicer`` and ``vtk`` are imported inside the functions, so importing this
module costs nothing and needs neither.

Geometry rules kept here:

- arrays are (k, j, i) like ``slicer.util.arrayFromVolume``; "axis" is an axis of that
  array, so axis 0 is the volume's K direction whatever its orientation in RAS;
- a node's voxel-to-world matrix includes its parent transforms when they are linear;
  a non-linear parent transform is refused with a message saying what to do, because
  resampling through it would silently move voxels;
- the support segment is read on the support volume's grid (resampled from the
  segmentation's own grid if that differs) and the result is written on the query
  volume's grid, in the segmentation's own coordinate frame;
- input volumes and existing segments are never written to: the result goes into a new
  segment on its own labelmap layer, so a shared layer with other segments is never
  touched, and removing that segment (or the node we created) restores the prior state.

Writing the result is :mod:`.writer`'s job, the threaded run :mod:`.runs`'s; slice and
grid arithmetic (no ``slicer``) lives in :mod:`.slicing`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import MRMLInputError
from ..config import DEFAULT_COLOR
from .slicing import guess_axis, labelled_slices, voxel_centers_ras

__all__ = ["BINARY_LABELMAP", "DEFAULT_COLOR", "MRMLInputError", "ViewSlice", "check_volume", "contrasting_color",
           "default_inputs", "display_window", "ensure_converter_rules", "ijk_to_world", "image_to_array",
           "image_to_world", "node_name", "oriented_image", "parent_to_world", "same_node", "segment_array",
           "segment_color", "segment_names", "slice_center_ras", "slice_from_view", "source_representation",
           "support_slices_from_segment", "to_numpy", "to_vtk", "volume_array"]

#: a view whose plane drifts by more than this many voxels across the volume
#: (because it is tilted against the voxel grid) is oblique: the slice the user sees
#: is not one voxel slice, so "the current slice" would be a guess                  [G]
OBLIQUE_DRIFT_VOXELS = 0.5
#: name Slicer gives the binary labelmap representation
BINARY_LABELMAP = "Binary labelmap"


# --------------------------------------------------------------------------- matrices

def to_numpy(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def to_vtk(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def node_name(node) -> str:
    return node.GetName() if node is not None and node.GetName() else "(unnamed node)"


def parent_to_world(node) -> np.ndarray:
    """4x4 matrix from the node's coordinates to world RAS (its parent transforms).

    Raises :class:`MRMLInputError` when a parent transform is not linear.
    """
    transform = node.GetParentTransformNode()
    if transform is None:
        return np.eye(4)
    if not transform.IsTransformToWorldLinear():
        raise MRMLInputError(
            f"'{node_name(node)}' is under the non-linear transform '{node_name(transform)}': SynPo needs voxels on "
            "a regular grid. Harden the transform on a copy of the volume (Data module: right-click > "
            "Harden transform) or remove it, then run again.")
    import vtk

    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return to_numpy(matrix)


def ijk_to_world(volume_node) -> np.ndarray:
    """4x4 matrix from voxel (i, j, k) to world RAS, parent transforms included."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return parent_to_world(volume_node) @ to_numpy(matrix)


# --------------------------------------------------------------------------- volumes

def check_volume(volume_node, role: str) -> None:
    if volume_node is None:
        raise MRMLInputError(f"choose a {role} volume")
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise MRMLInputError(
            f"{role} volume '{node_name(volume_node)}' is a label map: choose the image it labels (the labels "
            "belong in the segmentation)")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or any(
            volume_node.IsA(kind) for kind in ("vtkMRMLVectorVolumeNode", "vtkMRMLTensorVolumeNode")):
        raise MRMLInputError(
            f"{role} volume '{node_name(volume_node)}' is a {volume_node.GetClassName()}: SynPo needs a grey "
            "(scalar) volume; convert colour/vector volumes with the 'Vector to Scalar Volume' module")
    image = volume_node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise MRMLInputError(f"{role} volume '{node_name(volume_node)}' has no voxels loaded")
    if image.GetNumberOfScalarComponents() != 1:
        raise MRMLInputError(
            f"{role} volume '{node_name(volume_node)}' has {image.GetNumberOfScalarComponents()} values per voxel; "
            "SynPo needs one (a grey volume)")
    dims = image.GetDimensions()
    if min(dims) < 1 or sum(d > 1 for d in dims) < 2:
        raise MRMLInputError(f"{role} volume '{node_name(volume_node)}' is not a 3-D image (size {dims})")


def same_node(a, b) -> bool:
    """True when two wrappers name the same MRML node."""
    if a is None or b is None:
        return a is b
    return a is b or (a.GetScene() is not None and a.GetScene() is b.GetScene() and a.GetID() == b.GetID())


def volume_array(volume_node, role: str = "query") -> np.ndarray:
    """A copy of the voxels as a (k, j, i) array: later edits of the node never reach a run."""
    from vtk.util import numpy_support

    check_volume(volume_node, role)
    image = volume_node.GetImageData()
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return np.array(flat.reshape(dims[2], dims[1], dims[0]), copy=True)


def display_window(volume_node) -> Optional[Tuple[float, float]]:
    """The volume's current display window as (low, high), or None when it has none.

    Inside Slicer the intensity window defaults to what the user sees.
    """
    display = volume_node.GetDisplayNode() if volume_node is not None else None
    if display is None or not display.IsA("vtkMRMLScalarVolumeDisplayNode"):
        return None
    width, level = float(display.GetWindow()), float(display.GetLevel())
    if not width > 0 or not math.isfinite(width) or not math.isfinite(level):
        return None
    return level - width / 2.0, level + width / 2.0


# --------------------------------------------------------------------------- segments

def ensure_converter_rules() -> None:
    """Register labelmap <-> surface conversion rules if nobody has (slicer-core has none).

    The Slicer application registers them at start-up; a bare MRML runtime aborts when a
    segment is added without them.
    """
    import slicer

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    present = {rule.GetClassName() for rule in factory.GetConverterRules()}
    for rule in (slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule,
                 slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule):
        if rule.__name__ not in present:
            factory.RegisterConverterRule(rule())


def source_representation(segmentation) -> str:
    getter = getattr(segmentation, "GetSourceRepresentationName", None) \
        or segmentation.GetMasterRepresentationName  # Slicer < 5.4
    return getter()


def oriented_image(shape_kji: Sequence[int], matrix: np.ndarray, values: Optional[np.ndarray] = None):
    import slicer
    import vtk
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    image.SetDimensions(int(shape_kji[2]), int(shape_kji[1]), int(shape_kji[0]))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    view = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    view[:] = 0 if values is None else (np.asarray(values) > 0).astype(np.uint8).ravel()
    image.SetImageToWorldMatrix(to_vtk(matrix))
    return image


def image_to_world(image) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return to_numpy(matrix)


def image_to_array(image, shape_kji: Sequence[int]) -> np.ndarray:
    """Place an oriented image's extent into a zero (k, j, i) array of ``shape_kji``."""
    from vtk.util import numpy_support

    out = np.zeros(tuple(int(s) for s in shape_kji), dtype=np.uint8)
    i0, i1, j0, j1, k0, k1 = image.GetExtent()
    if i1 < i0 or j1 < j0 or k1 < k0 or image.GetPointData().GetScalars() is None:
        return out
    data = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(k1 - k0 + 1, j1 - j0 + 1, i1 - i0 + 1)
    lo = [max(0, v) for v in (k0, j0, i0)]
    hi = [min(n - 1, v) for n, v in zip(out.shape, (k1, j1, i1))]
    if any(h < l for l, h in zip(lo, hi)):
        return out
    out[lo[0]:hi[0] + 1, lo[1]:hi[1] + 1, lo[2]:hi[2] + 1] = data[
        lo[0] - k0:hi[0] - k0 + 1, lo[1] - j0:hi[1] - j0 + 1, lo[2] - i0:hi[2] - i0 + 1] > 0
    return out


def segment_names(segmentation_node) -> List[Tuple[str, str]]:
    """(segment ID, name) of every segment, in display order."""
    segmentation = segmentation_node.GetSegmentation()
    return [(sid, segmentation.GetSegment(sid).GetName()) for sid in segmentation.GetSegmentIDs()]


def segment_array(segmentation_node, segment_id: str, reference_volume) -> np.ndarray:
    """The segment as a uint8 0/1 (k, j, i) array on ``reference_volume``'s voxel grid.

    The segmentation may have its own grid and its own (linear) parent transform: its
    labelmap is resampled (nearest neighbour) into the reference volume's grid in world
    coordinates. Nothing in the scene is modified.
    """
    import slicer

    if segmentation_node is None:
        raise MRMLInputError("choose the segmentation that holds the labelled support")
    segmentation = segmentation_node.GetSegmentation()
    segment = segmentation.GetSegment(segment_id) if segment_id else None
    if segment is None:
        names = ", ".join(f"'{n}'" for _, n in segment_names(segmentation_node)) or "none"
        raise MRMLInputError(f"segment '{segment_id}' is not in '{node_name(segmentation_node)}' (segments: {names})")
    if segment.GetRepresentation(BINARY_LABELMAP) is None:
        raise MRMLInputError(
            f"segment '{segment.GetName()}' has no binary labelmap (its source is "
            f"'{source_representation(segmentation)}'): in the Segmentations module, create the binary "
            "labelmap representation, then run again")
    check_volume(reference_volume, "support")
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    shape = tuple(reversed(reference_volume.GetImageData().GetDimensions()))
    i0, i1, j0, j1, k0, k1 = labelmap.GetExtent()
    if i1 < i0 or j1 < j0 or k1 < k0:
        return np.zeros(shape, dtype=np.uint8)
    labelmap.SetImageToWorldMatrix(to_vtk(parent_to_world(segmentation_node) @ image_to_world(labelmap)))
    reference = slicer.vtkOrientedImageData()
    reference.SetExtent(0, shape[2] - 1, 0, shape[1] - 1, 0, shape[0] - 1)
    reference.SetImageToWorldMatrix(to_vtk(ijk_to_world(reference_volume)))
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, reference, resampled, False, False):
        raise MRMLInputError(f"cannot resample segment '{segment.GetName()}' onto '{node_name(reference_volume)}'")
    return image_to_array(resampled, shape)


def segment_color(segmentation_node, segment_id: str) -> Tuple[float, float, float]:
    return tuple(float(c) for c in segmentation_node.GetSegmentation().GetSegment(segment_id).GetColor())


def contrasting_color(color: Sequence[float]) -> Tuple[float, float, float]:
    """The colour with its hue turned half way round, so a result beside its support stands out."""
    import colorsys

    h, l, s = colorsys.rgb_to_hls(*[float(c) for c in color[:3]])
    if s < 0.15:  # grey has no hue to turn: use a clear orange
        return 0.95, 0.6, 0.2
    return tuple(float(c) for c in colorsys.hls_to_rgb((h + 0.5) % 1.0, l, s))


def support_slices_from_segment(volume_node, segmentation_node, segment_id: str) -> Tuple[int, List[int]]:
    """(axis, labelled slices) of a segment on ``volume_node``'s grid: the array axis along
    which it covers the fewest slices (one, for a single labelled slice), and those slices.
    This is what lets the user pick only the segment: the slice and the axis follow from it."""
    mask = segment_array(segmentation_node, segment_id, volume_node)
    axis = guess_axis(mask)
    return axis, labelled_slices(mask, axis)


#: segment tag SynPo sets on the segments it writes, so they are never taken for a
#: user's labelled structure (they hold the labelled slice too)
RESULT_TAG = "SynPo.result"


def is_result_segment(segmentation_node, segment_id: str) -> bool:
    """Whether SynPo wrote this segment (a run's result, not a user's label)."""
    import vtk

    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    value = vtk.reference("")
    return segment is not None and bool(segment.GetTag(RESULT_TAG, value)) and str(value) == "1"


def segments_drawn_on(volume_node, segmentation_node, axis: int, slices: Sequence[int]) -> List[str]:
    """IDs of the segments drawn on any of ``slices`` (along ``axis`` of ``volume_node``'s
    grid), in display order: every structure labelled on the chosen slice(s). SynPo's own
    results (:data:`RESULT_TAG`) are left out."""
    wanted = set(int(s) for s in slices)
    out = []
    for segment_id, _ in segment_names(segmentation_node):
        if is_result_segment(segmentation_node, segment_id):
            continue
        try:
            mask = segment_array(segmentation_node, segment_id, volume_node)
        except MRMLInputError:  # a segment without a binary labelmap cannot be a support
            continue
        if wanted & set(labelled_slices(mask, axis)):
            out.append(segment_id)
    return out


# --------------------------------------------------------------------------- the inputs to start from

def _is_image_volume(node) -> bool:
    return node is not None and node.IsA("vtkMRMLScalarVolumeNode") and not node.IsA("vtkMRMLLabelMapVolumeNode")


def default_inputs(scene) -> Tuple[Optional[Any], Optional[Any]]:
    """(support volume, segmentation) the user most likely means, either may be None.

    The Segment Editor's source volume and segmentation first (where the user just labelled
    the slice); else the volume in the red slice view's background; else the scene's first
    scalar volume. Label map volumes are never the support: they hold labels, not an image.
    """
    volume = segmentation = None
    editor = scene.GetFirstNodeByClass("vtkMRMLSegmentEditorNode")
    if editor is not None:
        volume, segmentation = editor.GetSourceVolumeNode(), editor.GetSegmentationNode()
    if volume is None:
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSliceCompositeNode")):
            composite = scene.GetNthNodeByClass(i, "vtkMRMLSliceCompositeNode")
            if composite.GetLayoutName() == "Red" and composite.GetBackgroundVolumeID():
                volume = scene.GetNodeByID(composite.GetBackgroundVolumeID())
    if not _is_image_volume(volume):
        volumes = (scene.GetNthNodeByClass(i, "vtkMRMLScalarVolumeNode")
                   for i in range(scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode")))
        volume = next((v for v in volumes if _is_image_volume(v)), None)
    if segmentation is None:
        segmentation = scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    return volume, segmentation


# --------------------------------------------------------------------------- views

@dataclass(frozen=True)
class ViewSlice:
    """The voxel slice a slice view shows: array axis, index, and how far it is off-grid."""

    axis: int
    index: int
    #: largest distance, in voxels along the axis, between the view plane and the slice
    drift_voxels: float


def slice_from_view(slice_to_ras, volume_node, view_name: str = "the view") -> ViewSlice:
    """Which (axis, index) of ``volume_node`` a slice view shows.

    ``slice_to_ras`` is the view's SliceToRAS matrix (vtkMatrix4x4 or 4x4 array); its
    third column is the plane normal and its last column a point on the plane. The axis
    is the volume's IJK direction parallel to the normal, whatever the volume's
    orientation (LPS, RAS, permuted, flipped). A view tilted against the voxel grid is
    refused: the slice it shows is not one voxel slice.
    """
    check_volume(volume_node, "support")
    s2r = slice_to_ras if isinstance(slice_to_ras, np.ndarray) else to_numpy(slice_to_ras)
    normal = s2r[:3, 2] / np.linalg.norm(s2r[:3, 2])
    ijk2w = ijk_to_world(volume_node)
    spacing_ijk = np.linalg.norm(ijk2w[:3, :3], axis=0)
    directions = ijk2w[:3, :3] / spacing_ijk
    cosines = np.abs(directions.T @ normal)
    a = int(np.argmax(cosines))  # IJK axis: 0 = i, 1 = j, 2 = k
    angle = math.degrees(math.acos(min(1.0, float(cosines[a]))))
    dims = volume_node.GetImageData().GetDimensions()
    in_plane = [b for b in range(3) if b != a]
    extent_mm = math.hypot(*[dims[b] * spacing_ijk[b] for b in in_plane])
    drift = extent_mm * math.tan(math.radians(angle)) / spacing_ijk[a]
    if drift > OBLIQUE_DRIFT_VOXELS:
        raise MRMLInputError(
            f"{view_name} is oblique to '{node_name(volume_node)}' ({angle:.1f} degrees off its voxel grid, "
            f"{drift:.1f} voxels across the volume): the slice it shows is not one voxel slice. Use "
            "'Rotate to volume plane' in the view's menu (or reset it to Axial/Sagittal/Coronal), "
            "then take the slice again.")
    # The plane crosses the line through the volume's centre along that IJK axis here:
    centre_ijk = (np.asarray(dims, dtype=float) - 1.0) / 2.0
    centre = (ijk2w @ np.append(centre_ijk, 1.0))[:3]
    point = s2r[:3, 3]
    direction = directions[:, a]
    t = float(normal @ (point - centre)) / float(normal @ direction)
    hit = centre + t * direction
    ijk = np.linalg.solve(ijk2w, np.append(hit, 1.0))[:3]
    position = float(ijk[a])
    if not -0.5 <= position <= dims[a] - 0.5:
        raise MRMLInputError(
            f"{view_name} shows a plane outside '{node_name(volume_node)}' (slice {position:.1f} of "
            f"0..{dims[a] - 1}): move it onto the volume")
    index = int(min(dims[a] - 1, max(0, math.floor(position + 0.5))))
    return ViewSlice(axis=2 - a, index=index, drift_voxels=float(drift))


def slice_center_ras(volume_node, axis: int, index: int) -> np.ndarray:
    """World RAS of the centre of slice ``index`` along array ``axis`` (to jump views there)."""
    dims = volume_node.GetImageData().GetDimensions()
    kji = [(dims[2] - 1) / 2.0, (dims[1] - 1) / 2.0, (dims[0] - 1) / 2.0]
    kji[axis] = float(index)
    return voxel_centers_ras(ijk_to_world(volume_node), np.array([kji]))[0]
