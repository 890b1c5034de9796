"""A segment out: SynPo's result written into a 3D Slicer segmentation, and taken back.

The only scene change a run makes goes through :class:`SegmentWriter`: a new segment on
its own labelmap layer, on the query volume's grid, in the segmentation's own frame;
:meth:`~SegmentWriter.rollback` and :meth:`~SegmentWriter.undo` take it back exactly.
A re-run after corrections rewrites existing result segments through
:class:`SegmentUpdater`, whose rollback and undo put them back as the user left them.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Sequence

import numpy as np

from ..errors import MRMLInputError
from ..config import DEFAULT_COLOR
from .nodes import (BINARY_LABELMAP, RESULT_TAG, check_volume, ensure_converter_rules, ijk_to_world, node_name,
                    oriented_image, parent_to_world, source_representation)


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
        check_volume(reference_volume, "query")
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
            raise MRMLInputError(f"query volume '{node_name(self.reference)}' is not in a scene")
        ensure_converter_rules()
        world = ijk_to_world(self.reference)  # refuses non-linear transforms before any change
        node = self.segmentation_node
        if node is not None:
            if node.GetScene() is None:
                raise MRMLInputError(f"segmentation '{node_name(node)}' is not in the scene any more")
            segmentation = node.GetSegmentation()
            source = source_representation(segmentation)
            if source != BINARY_LABELMAP:
                raise MRMLInputError(
                    f"segmentation '{node_name(node)}' keeps its segments as '{source}': write the result into a "
                    "new segmentation instead (or change its source representation to binary labelmap)")
            local = np.linalg.inv(parent_to_world(node)) @ world
            if self.before_first_write is not None:
                self.before_first_write(node)
        else:
            node = slicer.vtkMRMLSegmentationNode()
            node.SetName(self.scene.GenerateUniqueName(f"{node_name(self.reference)} SynPo"))
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
        labelmap = oriented_image(self.shape, local)
        segment = slicer.vtkSegment()
        segment.SetName(self.name)
        segment.SetColor(*self.color)
        segment.AddRepresentation(BINARY_LABELMAP, labelmap)
        segment.SetLabelValue(1)
        segment.SetTag(RESULT_TAG, "1")  # never taken for a user's labelled structure later
        base = "".join(ch if ch.isalnum() else "_" for ch in self.name) or "SynPo"
        segment_id = segmentation.GenerateUniqueSegmentID(base)
        if not segmentation.AddSegment(segment, segment_id):
            self.rollback()
            raise RuntimeError(f"Slicer refused to add segment '{self.name}' to '{node_name(node)}'")
        self.segment_id = segment_id
        self._labelmap = segmentation.GetSegment(segment_id).GetRepresentation(BINARY_LABELMAP)
        scalars = self._labelmap.GetPointData().GetScalars()
        self._array = numpy_support.vtk_to_numpy(scalars).reshape(self.shape)
        self.state = "open"
        return segment_id

    def _live_segment(self):
        """The result segment, or a clear error when the writer or the segment is gone."""
        if self.state != "open":
            raise RuntimeError(f"writer is {self.state}")
        node = self.segmentation_node
        segmentation = node.GetSegmentation() if node is not None and node.GetScene() is not None else None
        segment = segmentation.GetSegment(self.segment_id) if segmentation is not None else None
        if segment is None:
            raise MRMLInputError(f"the result segment '{self.name}' was removed during the run")
        return segment

    def _check_alive(self) -> None:
        # writes go straight into the segment's labelmap: one the user replaced is not ours
        if self._live_segment().GetRepresentation(BINARY_LABELMAP) is not self._labelmap:
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
        self._changed()
        if notify:
            self.notify()

    def write_volume(self, mask: np.ndarray) -> None:
        """Write the whole result (k, j, i) on the query grid."""
        self._check_alive()
        if tuple(np.shape(mask)) != self.shape:
            raise ValueError(f"mask shape {np.shape(mask)} differs from the query volume's {self.shape}")
        self._array[...] = np.asarray(mask) > 0
        self._changed()
        self.notify()

    def _changed(self) -> None:
        """The array was written (the writer's segment shares its memory: nothing to do)."""

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


class SegmentUpdater(SegmentWriter):
    """Rewrites an existing segment on the query grid (a run again after corrections);
    :meth:`rollback` and :meth:`undo` put it back exactly as it was before :meth:`begin`.

    Every write goes through Slicer's own ``SetBinaryLabelmapToSegment`` (replace), as
    the Segment Editor writes: the segment keeps its labelmap layer, its label value and
    its neighbours in a shared layer. Taking the result back puts a segment that had a
    layer of its own back as that very layer (its extent, label value, voxels: a copy
    kept at :meth:`begin`), and a segment sharing a layer back as its voxels of
    :meth:`begin`, written the same way; a segment whose voxels never changed is never
    written. Replacing rewrites the whole segment, so streamed slices are collected and
    written once per :meth:`notify` (a run notifies once per poll).
    """

    def __init__(self, reference_volume, segmentation_node, segment_id: str, *,
                 before_first_write: Optional[Callable[[Any], None]] = None) -> None:
        if segmentation_node is None or segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
            raise MRMLInputError(f"the segment '{segment_id}' to run again is not in the scene any more")
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        super().__init__(reference_volume, segmentation_node, name=segment.GetName(), color=segment.GetColor(),
                         before_first_write=before_first_write)
        self.segment_id = segment_id
        self._before: Optional[np.ndarray] = None
        self._image = None
        self._dirty = False
        self._written = False
        self._saved = None
        self._saved_label = 1

    @property
    def before(self) -> np.ndarray:
        """The segment's voxels (k, j, i) on the query grid when :meth:`begin` was called."""
        if self._before is None:
            raise RuntimeError("the updater has not begun")
        return self._before

    def begin(self) -> str:
        import slicer
        from vtk.util import numpy_support

        from .nodes import segment_array

        if self.state != "new":
            raise RuntimeError(f"writer already {self.state}")
        node = self.segmentation_node
        if node.GetScene() is None:
            raise MRMLInputError(f"segmentation '{node_name(node)}' is not in the scene any more")
        segmentation = node.GetSegmentation()
        if segmentation.GetSegment(self.segment_id) is None:
            raise MRMLInputError(f"the segment '{self.name}' to run again was removed")
        if source_representation(segmentation) != BINARY_LABELMAP:
            raise MRMLInputError(f"segmentation '{node_name(node)}' no longer keeps its segments as binary labelmaps")
        ensure_converter_rules()
        world = ijk_to_world(self.reference)
        self._before = segment_array(node, self.segment_id, self.reference)
        if self.before_first_write is not None:
            self.before_first_write(node)
        segment = segmentation.GetSegment(self.segment_id)
        if not _shares_layer(segmentation, self.segment_id):  # its own layer: keep that layer
            self._saved = slicer.vtkOrientedImageData()
            self._saved.DeepCopy(segment.GetRepresentation(BINARY_LABELMAP))
            self._saved_label = segment.GetLabelValue()
        local = np.linalg.inv(parent_to_world(node)) @ world
        self._image = oriented_image(self.shape, local, self._before)
        self._array = numpy_support.vtk_to_numpy(self._image.GetPointData().GetScalars()).reshape(self.shape)
        surface = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
        self._shown_surface = segmentation.GetSegment(self.segment_id).GetRepresentation(surface) is not None
        self.state = "open"
        return self.segment_id

    def _check_alive(self) -> None:
        # the updater hands a copy to Slicer: the segment's labelmap may be replaced freely
        self._live_segment()

    def _put(self) -> None:
        import slicer

        if not self._written and np.array_equal(self._array, self._before):
            self._dirty = False  # nothing changed: the segment stays untouched
            return
        self._written = True
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        self._image.Modified()
        if not logic.SetBinaryLabelmapToSegment(self._image, self.segmentation_node, self.segment_id,
                                                logic.MODE_REPLACE, list(self._image.GetExtent())):
            raise MRMLInputError(f"Slicer refused to update segment '{self.name}'")
        self._dirty = False

    def notify(self) -> None:
        """Write the slices collected since the last write (Slicer updates its views then)."""
        self._check_alive()
        if self._dirty:
            self._put()

    def _changed(self) -> None:
        """The array is a copy: :meth:`notify` hands it to Slicer."""
        self._dirty = True

    def _update_shown_representations(self) -> None:
        if self._shown_surface:
            import slicer

            name = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()
            segmentation = self.segmentation_node.GetSegmentation()
            segmentation.CreateRepresentation(name, True)  # rebuilds what the writes left stale

    def rollback(self) -> None:
        if self.state == "new":
            self.state = "rolled back"
            return
        if self.state in ("rolled back", "committed", "undone"):
            return
        self._restore()
        self.state = "rolled back"

    def undo(self) -> None:
        if self.state != "committed":
            raise RuntimeError(f"nothing to undo: the result is {self.state}")
        self._restore()
        self.state = "undone"

    def _restore(self) -> None:
        import slicer

        node = self.segmentation_node
        if node is None or node.GetScene() is None or node.GetSegmentation().GetSegment(self.segment_id) is None:
            return
        if not self._written:
            return
        segmentation = node.GetSegmentation()
        if self._saved is not None and not _shares_layer(segmentation, self.segment_id):
            segment = segmentation.GetSegment(self.segment_id)
            segment.AddRepresentation(BINARY_LABELMAP, self._saved)
            segment.SetLabelValue(self._saved_label)
            segmentation.InvokeEvent(slicer.vtkSegmentation.SourceRepresentationModified, self.segment_id)
        else:
            self._array[...] = self._before
            self._put()
        self._written = False
        if self._shown_surface:
            self._update_shown_representations()


def _shares_layer(segmentation, segment_id: str) -> bool:
    """Whether another segment lives on the same labelmap layer (label values of one image)."""
    layer = segmentation.GetLayerIndex(segment_id)
    return any(segmentation.GetLayerIndex(other) == layer for other in segmentation.GetSegmentIDs()
               if other != segment_id)


__all__ = ["SegmentUpdater", "SegmentWriter"]
