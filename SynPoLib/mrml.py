"""The MRML adapter: 3D Slicer nodes in, a segment out (the only module that imports ``slicer``).

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

Slice and grid arithmetic lives in :mod:`SynPoLib.slicing`, the threaded run in
:mod:`SynPoLib.runs` (neither imports ``slicer``); their names are re-exported here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .runs import NodeInputs, RunInProgress, RunStatus, SegmentationRun, active_run
from .slicing import (AXIS_MATCH_DEGREES, MRMLInputError, Reorientation, axis_direction_name, guess_axis,
                      labelled_slices, map_slice, query_slices, spacing_kji, voxel_centers_ras)

__all__ = [
    # nodes in
    "MRMLInputError", "display_window", "ijk_to_world", "parent_to_world", "read_inputs", "same_node",
    "segment_array", "segment_color", "segment_names", "slice_center_ras", "slice_from_view", "volume_array",
    "ViewSlice", "ensure_converter_rules",
    # a segment out
    "SegmentWriter", "contrasting_color", "DEFAULT_COLOR",
    # runs (SynPoLib.runs)
    "NodeInputs", "RunInProgress", "RunStatus", "SegmentationRun", "active_run", "run_on_nodes",
    # slice geometry (SynPoLib.slicing)
    "AXIS_MATCH_DEGREES", "Reorientation", "axis_direction_name", "guess_axis", "labelled_slices", "map_slice",
    "query_slices", "spacing_kji", "voxel_centers_ras",
]

#: segment colour when none is given (Slicer's "tissue" green, as SynPoLib.io)   [G]
DEFAULT_COLOR = (0.5, 0.68, 0.5)
#: a view whose plane drifts by more than this many voxels across the volume
#: (because it is tilted against the voxel grid) is oblique: the slice the user sees
#: is not one voxel slice, so "the current slice" would be a guess                  [G]
OBLIQUE_DRIFT_VOXELS = 0.5
#: name Slicer gives the binary labelmap representation
BINARY_LABELMAP = "Binary labelmap"


# --------------------------------------------------------------------------- matrices

def _to_numpy(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def _to_vtk(array: np.ndarray):
    import vtk

    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def _name(node) -> str:
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
            f"'{_name(node)}' is under the non-linear transform '{_name(transform)}': SynPo needs voxels on "
            "a regular grid. Harden the transform on a copy of the volume (Data module: right-click > "
            "Harden transform) or remove it, then run again.")
    import vtk

    matrix = vtk.vtkMatrix4x4()
    transform.GetMatrixTransformToWorld(matrix)
    return _to_numpy(matrix)


def ijk_to_world(volume_node) -> np.ndarray:
    """4x4 matrix from voxel (i, j, k) to world RAS, parent transforms included."""
    import vtk

    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return parent_to_world(volume_node) @ _to_numpy(matrix)


# --------------------------------------------------------------------------- volumes

def _check_volume(volume_node, role: str) -> None:
    if volume_node is None:
        raise MRMLInputError(f"choose a {role} volume")
    if volume_node.IsA("vtkMRMLLabelMapVolumeNode"):
        raise MRMLInputError(
            f"{role} volume '{_name(volume_node)}' is a label map: choose the image it labels (the labels "
            "belong in the segmentation)")
    if not volume_node.IsA("vtkMRMLScalarVolumeNode") or any(
            volume_node.IsA(kind) for kind in ("vtkMRMLVectorVolumeNode", "vtkMRMLTensorVolumeNode")):
        raise MRMLInputError(
            f"{role} volume '{_name(volume_node)}' is a {volume_node.GetClassName()}: SynPo needs a grey "
            "(scalar) volume; convert colour/vector volumes with the 'Vector to Scalar Volume' module")
    image = volume_node.GetImageData()
    if image is None or image.GetPointData() is None or image.GetPointData().GetScalars() is None:
        raise MRMLInputError(f"{role} volume '{_name(volume_node)}' has no voxels loaded")
    if image.GetNumberOfScalarComponents() != 1:
        raise MRMLInputError(
            f"{role} volume '{_name(volume_node)}' has {image.GetNumberOfScalarComponents()} values per voxel; "
            "SynPo needs one (a grey volume)")
    dims = image.GetDimensions()
    if min(dims) < 1 or sum(d > 1 for d in dims) < 2:
        raise MRMLInputError(f"{role} volume '{_name(volume_node)}' is not a 3-D image (size {dims})")


def same_node(a, b) -> bool:
    """True when two wrappers name the same MRML node."""
    if a is None or b is None:
        return a is b
    return a is b or (a.GetScene() is not None and a.GetScene() is b.GetScene() and a.GetID() == b.GetID())


def volume_array(volume_node, role: str = "query") -> np.ndarray:
    """A copy of the voxels as a (k, j, i) array: later edits of the node never reach a run."""
    from vtk.util import numpy_support

    _check_volume(volume_node, role)
    image = volume_node.GetImageData()
    dims = image.GetDimensions()
    flat = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    return np.array(flat.reshape(dims[2], dims[1], dims[0]), copy=True)


def display_window(volume_node) -> Optional[Tuple[float, float]]:
    """The volume's current display window as (low, high), or None when it has none.

    Spec §0: inside Slicer the intensity window defaults to what the user sees.
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


def _source_representation(segmentation) -> str:
    getter = getattr(segmentation, "GetSourceRepresentationName", None) \
        or segmentation.GetMasterRepresentationName  # Slicer < 5.4
    return getter()


def _oriented_image(shape_kji: Sequence[int], matrix: np.ndarray, values: Optional[np.ndarray] = None):
    import slicer
    import vtk
    from vtk.util import numpy_support

    image = slicer.vtkOrientedImageData()
    image.SetDimensions(int(shape_kji[2]), int(shape_kji[1]), int(shape_kji[0]))
    image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
    view = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars())
    view[:] = 0 if values is None else (np.asarray(values) > 0).astype(np.uint8).ravel()
    image.SetImageToWorldMatrix(_to_vtk(matrix))
    return image


def _image_to_world(image) -> np.ndarray:
    import vtk

    matrix = vtk.vtkMatrix4x4()
    image.GetImageToWorldMatrix(matrix)
    return _to_numpy(matrix)


def _image_to_array(image, shape_kji: Sequence[int]) -> np.ndarray:
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
        raise MRMLInputError(f"segment '{segment_id}' is not in '{_name(segmentation_node)}' (segments: {names})")
    if segment.GetRepresentation(BINARY_LABELMAP) is None:
        raise MRMLInputError(
            f"segment '{segment.GetName()}' has no binary labelmap (its source is "
            f"'{_source_representation(segmentation)}'): in the Segmentations module, create the binary "
            "labelmap representation, then run again")
    _check_volume(reference_volume, "support")
    labelmap = slicer.vtkOrientedImageData()
    segmentation_node.GetBinaryLabelmapRepresentation(segment_id, labelmap)
    shape = tuple(reversed(reference_volume.GetImageData().GetDimensions()))
    i0, i1, j0, j1, k0, k1 = labelmap.GetExtent()
    if i1 < i0 or j1 < j0 or k1 < k0:
        return np.zeros(shape, dtype=np.uint8)
    labelmap.SetImageToWorldMatrix(_to_vtk(parent_to_world(segmentation_node) @ _image_to_world(labelmap)))
    reference = slicer.vtkOrientedImageData()
    reference.SetExtent(0, shape[2] - 1, 0, shape[1] - 1, 0, shape[0] - 1)
    reference.SetImageToWorldMatrix(_to_vtk(ijk_to_world(reference_volume)))
    resampled = slicer.vtkOrientedImageData()
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, reference, resampled, False, False):
        raise MRMLInputError(f"cannot resample segment '{segment.GetName()}' onto '{_name(reference_volume)}'")
    return _image_to_array(resampled, shape)


def segment_color(segmentation_node, segment_id: str) -> Tuple[float, float, float]:
    return tuple(float(c) for c in segmentation_node.GetSegmentation().GetSegment(segment_id).GetColor())


def contrasting_color(color: Sequence[float]) -> Tuple[float, float, float]:
    """The colour with its hue turned half way round, so a result beside its support stands out."""
    import colorsys

    h, l, s = colorsys.rgb_to_hls(*[float(c) for c in color[:3]])
    if s < 0.15:  # grey has no hue to turn: use a clear orange
        return 0.95, 0.6, 0.2
    return tuple(float(c) for c in colorsys.hls_to_rgb((h + 0.5) % 1.0, l, s))


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
    _check_volume(volume_node, "support")
    s2r = slice_to_ras if isinstance(slice_to_ras, np.ndarray) else _to_numpy(slice_to_ras)
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
            f"{view_name} is oblique to '{_name(volume_node)}' ({angle:.1f} degrees off its voxel grid, "
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
            f"{view_name} shows a plane outside '{_name(volume_node)}' (slice {position:.1f} of "
            f"0..{dims[a] - 1}): move it onto the volume")
    index = int(min(dims[a] - 1, max(0, math.floor(position + 0.5))))
    return ViewSlice(axis=2 - a, index=index, drift_voxels=float(drift))


def slice_center_ras(volume_node, axis: int, index: int) -> np.ndarray:
    """World RAS of the centre of slice ``index`` along array ``axis`` (to jump views there)."""
    dims = volume_node.GetImageData().GetDimensions()
    kji = [(dims[2] - 1) / 2.0, (dims[1] - 1) / 2.0, (dims[0] - 1) / 2.0]
    kji[axis] = float(index)
    return voxel_centers_ras(ijk_to_world(volume_node), np.array([kji]))[0]


# --------------------------------------------------------------------------- inputs

def read_inputs(support_volume, segmentation_node, segment_id: str, *, axis: int,
                support_slices: Optional[Sequence[int]] = None, query_volume=None,
                slice_range: str = "whole", margin: int = 10, first: int = 0, last: int = -1,
                use_display_window: bool = True) -> NodeInputs:
    """Copy support and query out of the scene, checking everything a user can get wrong.

    ``support_slices`` None means every slice along ``axis`` where the segment is drawn
    (k-shot when there are several). The query defaults to the support volume.
    """
    from .volume import Support

    if axis not in (0, 1, 2):
        raise MRMLInputError(f"axis must be 0, 1 or 2 (k, j, i of the volume), got {axis}")
    support_vol = volume_array(support_volume, "support")
    s_matrix = ijk_to_world(support_volume)
    mask = segment_array(segmentation_node, segment_id, support_volume)
    segment_name = segmentation_node.GetSegmentation().GetSegment(segment_id).GetName()
    drawn = labelled_slices(mask, axis)
    if not drawn:
        raise MRMLInputError(
            f"segment '{segment_name}' has no voxel inside '{_name(support_volume)}': draw the structure on "
            "one slice of the support volume first")
    if support_slices is None:
        chosen = drawn
    else:
        chosen = sorted(set(int(s) for s in support_slices))
        n = support_vol.shape[axis]
        outside = [s for s in chosen if not 0 <= s < n]
        if outside:
            raise MRMLInputError(f"support slice {outside[0]} is outside '{_name(support_volume)}' (0..{n - 1})")
        empty = [s for s in chosen if s not in drawn]
        if empty:
            shown = ", ".join(str(s) for s in drawn[:8]) + (" ..." if len(drawn) > 8 else "")
            raise MRMLInputError(
                f"segment '{segment_name}' is not drawn on slice {empty[0]} (axis {axis}); it is drawn on "
                f"slices {shown}")
        if not chosen:
            raise MRMLInputError("give at least one support slice")
    same = query_volume is None or same_node(query_volume, support_volume)
    if same:
        native, q_matrix, turn = support_vol, s_matrix, Reorientation()
    else:
        native, q_matrix = volume_array(query_volume, "query"), ijk_to_world(query_volume)
        turn = Reorientation.between(q_matrix, s_matrix, axis)
    query = turn.to_aligned(native)
    s_window = display_window(support_volume) if use_display_window else None
    q_window = s_window if same else (display_window(query_volume) if use_display_window else None)
    support = Support(volume=support_vol, mask=mask, slices=chosen, axis=axis,
                      spacing=spacing_kji(s_matrix), window=s_window)
    slices = query_slices(slice_range, query.shape[axis], chosen, support_vol.shape[axis],
                          margin=margin, first=first, last=last)
    return NodeInputs(query=query, query_spacing=turn.aligned_spacing(spacing_kji(q_matrix)),
                      native_shape=tuple(native.shape), reorientation=turn, support=support, slices=slices,
                      same_volume=same, query_window=q_window, support_name=segment_name)


# --------------------------------------------------------------------------- writing

class SegmentWriter:
    """Writes one new segment on the query volume's grid; :meth:`rollback` undoes all of it.

    The segment gets its own labelmap layer, so no other segment's voxels are ever
    rewritten (a shared layer holds several segments as label values; writing 0/1 into
    it would overwrite a neighbour). Slices can be streamed in as they are segmented.
    Into an existing segmentation the segment is added; otherwise a new segmentation
    node is created with the query volume as its reference geometry, under the query
    volume's parent transform so the two stay together.
    """

    def __init__(self, reference_volume, segmentation_node=None, *, name: str = "SynPo",
                 color: Sequence[float] = DEFAULT_COLOR, scene=None,
                 before_first_write: Optional[Callable[[Any], None]] = None) -> None:
        _check_volume(reference_volume, "query")
        self.reference = reference_volume
        self.segmentation_node = segmentation_node
        self.name = str(name) or "SynPo"
        self.color = tuple(float(c) for c in color[:3])
        self.scene = scene or reference_volume.GetScene()
        self.before_first_write = before_first_write
        self.segment_id: Optional[str] = None
        self.created_node = False
        self.state = "new"
        self._labelmap = None
        self._array: Optional[np.ndarray] = None
        self._shown_surface = False
        self.shape = tuple(reversed(reference_volume.GetImageData().GetDimensions()))

    # -- lifecycle
    def begin(self) -> str:
        """Create the (empty) segment; returns its ID."""
        import slicer
        from vtk.util import numpy_support

        if self.state != "new":
            raise RuntimeError(f"writer already {self.state}")
        if self.scene is None:
            raise MRMLInputError(f"query volume '{_name(self.reference)}' is not in a scene")
        ensure_converter_rules()
        world = ijk_to_world(self.reference)  # refuses non-linear transforms before any change
        node = self.segmentation_node
        if node is not None:
            if node.GetScene() is None:
                raise MRMLInputError(f"segmentation '{_name(node)}' is not in the scene any more")
            segmentation = node.GetSegmentation()
            source = _source_representation(segmentation)
            if source != BINARY_LABELMAP:
                raise MRMLInputError(
                    f"segmentation '{_name(node)}' keeps its segments as '{source}': write the result into a "
                    "new segmentation instead (or change its source representation to binary labelmap)")
            local = np.linalg.inv(parent_to_world(node)) @ world
            if self.before_first_write is not None:
                self.before_first_write(node)
        else:
            node = slicer.vtkMRMLSegmentationNode()
            node.SetName(self.scene.GenerateUniqueName(f"{_name(self.reference)} SynPo"))
            self.scene.AddNode(node)
            self.created_node = True
            self.segmentation_node = node
            node.CreateDefaultDisplayNodes()
            node.SetReferenceImageGeometryParameterFromVolumeNode(self.reference)
            parent = self.reference.GetParentTransformNode()
            if parent is not None:
                node.SetAndObserveTransformNodeID(parent.GetID())
            local = np.linalg.inv(parent_to_world(node)) @ world
            segmentation = node.GetSegmentation()
        surface = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
        self._shown_surface = any(segmentation.GetSegment(sid).GetRepresentation(surface) is not None
                                  for sid in segmentation.GetSegmentIDs())
        labelmap = _oriented_image(self.shape, local)
        segment = slicer.vtkSegment()
        segment.SetName(self.name)
        segment.SetColor(*self.color)
        segment.AddRepresentation(BINARY_LABELMAP, labelmap)
        segment.SetLabelValue(1)
        base = "".join(ch if ch.isalnum() else "_" for ch in self.name) or "SynPo"
        segment_id = segmentation.GenerateUniqueSegmentID(base)
        if not segmentation.AddSegment(segment, segment_id):
            self.rollback()
            raise RuntimeError(f"Slicer refused to add segment '{self.name}' to '{_name(node)}'")
        self.segment_id = segment_id
        self._labelmap = segmentation.GetSegment(segment_id).GetRepresentation(BINARY_LABELMAP)
        scalars = self._labelmap.GetPointData().GetScalars()
        self._array = numpy_support.vtk_to_numpy(scalars).reshape(self.shape)
        self.state = "open"
        return segment_id

    def _check_alive(self) -> None:
        if self.state != "open":
            raise RuntimeError(f"writer is {self.state}")
        node = self.segmentation_node
        segmentation = node.GetSegmentation() if node is not None and node.GetScene() is not None else None
        if segmentation is None or segmentation.GetSegment(self.segment_id) is None:
            raise MRMLInputError(f"the result segment '{self.name}' was removed during the run")
        if segmentation.GetSegment(self.segment_id).GetRepresentation(BINARY_LABELMAP) is not self._labelmap:
            raise MRMLInputError(f"the result segment '{self.name}' was edited during the run")

    def notify(self) -> None:
        """Tell Slicer the segment changed (display, 3D surface): once per batch of slices."""
        self._check_alive()
        import slicer

        self._labelmap.GetPointData().GetScalars().Modified()
        self._labelmap.Modified()
        segmentation = self.segmentation_node.GetSegmentation()
        segmentation.InvokeEvent(slicer.vtkSegmentation.SourceRepresentationModified, self.segment_id)

    def write_slice(self, index: int, axis: int, mask: np.ndarray, notify: bool = True) -> None:
        """Write one native slice (rows, cols) of the result; ``notify=False`` leaves the
        display update to a later :meth:`notify` (a 3D surface is rebuilt on each one)."""
        self._check_alive()
        where = [slice(None)] * 3
        where[axis] = int(index)
        target = self._array[tuple(where)]
        if np.shape(mask) != target.shape:
            raise ValueError(f"slice mask shape {np.shape(mask)} does not match {target.shape} (axis {axis})")
        target[...] = np.asarray(mask) > 0
        if notify:
            self.notify()

    def write_volume(self, mask: np.ndarray) -> None:
        """Write the whole result (k, j, i) on the query grid."""
        self._check_alive()
        if tuple(np.shape(mask)) != self.shape:
            raise ValueError(f"mask shape {np.shape(mask)} differs from the query volume's {self.shape}")
        self._array[...] = np.asarray(mask) > 0
        self.notify()

    def commit(self) -> None:
        self._check_alive()
        self._update_shown_representations()
        self.state = "committed"

    def _update_shown_representations(self) -> None:
        """Give the result the closed surface ("Show 3D") its segmentation already had. The
        segment got an empty surface when it was added, which writing the labelmap in place
        does not rebuild; Slicer's 3D view may re-convert on demand while it draws, but nothing
        else does (a script, a hidden view, slicer-core), so the surface would stay empty."""
        if self._shown_surface:
            import slicer

            name = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
            segmentation = self.segmentation_node.GetSegmentation()
            segmentation.GetSegment(self.segment_id).RemoveRepresentation(name)
            segmentation.CreateRepresentation(name)  # converts the segments that lack it: ours

    def rollback(self) -> None:
        """Put the scene back as it was before :meth:`begin` (safe to call twice; a
        committed result stays: use :meth:`undo` to remove it)."""
        if self.state in ("rolled back", "committed", "undone"):
            return
        self._remove()
        self.state = "rolled back"

    def undo(self) -> None:
        """Remove a committed result: our segment, or the node we created. Segments the
        user added or edited since are left alone."""
        if self.state != "committed":
            raise RuntimeError(f"nothing to undo: the result is {self.state}")
        self._remove()
        self.state = "undone"

    def _remove(self) -> None:
        node = self.segmentation_node
        if node is not None and node.GetScene() is not None:
            if self.created_node:
                scene = node.GetScene()
                displays = [node.GetNthDisplayNode(i) for i in range(node.GetNumberOfDisplayNodes())]
                storage = node.GetStorageNode()
                scene.RemoveNode(node)
                for extra in displays + [storage]:
                    if extra is not None and extra.GetScene() is not None:
                        scene.RemoveNode(extra)
            elif self.segment_id is not None and node.GetSegmentation().GetSegment(self.segment_id) is not None:
                node.GetSegmentation().RemoveSegment(self.segment_id)
        if self.created_node:
            self.segmentation_node = None
        self._labelmap = self._array = None


# --------------------------------------------------------------------------- runs

def run_on_nodes(backend: Any, support_volume, segmentation_node, segment_id: str, *, axis: int,
                 support_slices: Optional[Sequence[int]] = None, query_volume=None,
                 output_segmentation=None, name: Optional[str] = None,
                 color: Optional[Sequence[float]] = None, config=None, slice_range: str = "whole",
                 margin: int = 10, first: int = 0, last: int = -1, use_display_window: bool = True,
                 batch_size: int = 1, stream: bool = True,
                 before_first_write: Optional[Callable[[Any], None]] = None) -> SegmentationRun:
    """Build (not start) a run from nodes: read and check inputs, prepare the writer.

    ``output_segmentation`` None writes into a new segmentation node; a node (e.g. the
    support's own segmentation) gets a new segment. Name and colour default to the
    support segment's name + " SynPo" and its colour (turned to a contrasting one when
    the result goes into the support's own segmentation).
    """
    inputs = read_inputs(support_volume, segmentation_node, segment_id, axis=axis,
                         support_slices=support_slices, query_volume=query_volume,
                         slice_range=slice_range, margin=margin, first=first, last=last,
                         use_display_window=use_display_window)
    if color is None:
        color = segment_color(segmentation_node, segment_id)
        if same_node(output_segmentation, segmentation_node):
            color = contrasting_color(color)
    writer = SegmentWriter(support_volume if query_volume is None else query_volume, output_segmentation,
                           name=name or f"{inputs.support_name} SynPo", color=color,
                           before_first_write=before_first_write)
    return SegmentationRun(backend, inputs, writer, config=config, batch_size=batch_size, stream=stream)
