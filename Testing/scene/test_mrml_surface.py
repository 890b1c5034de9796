"""The 3D view after a run: a segmentation shown as closed surfaces gets the result's surface.

On slicer-core (the real MRML and segmentation libraries, no views), a segment added to a
segmentation that has closed surfaces gets an empty surface, and writing its labelmap in
place does not rebuild it: before SegmentWriter re-converted it, the result stayed at 0
points until someone pressed "Show 3D" again.
"""

from __future__ import annotations

import numpy as np

import slicer
from slicer_scene import RAS, add_segmentation, add_volume, geometry, new_scene

from SynPoLib.scene import SegmentWriter

SURFACE = slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName()


def surface_points(node, segment_id):
    polydata = node.GetSegmentation().GetSegment(segment_id).GetRepresentation(SURFACE)
    return None if polydata is None else polydata.GetNumberOfPoints()


def scene_with_support(show_3d: bool):
    scene = new_scene()
    matrix = geometry(RAS, (1.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    volume = add_volume(scene, np.zeros((20, 20, 20), np.float32), matrix)
    mask = np.zeros((20, 20, 20), np.uint8)
    mask[9, 5:15, 5:15] = 1
    segmentation, (support,) = add_segmentation(scene, volume, [("support", mask, (1, 0, 0))])
    if show_3d:
        assert segmentation.CreateClosedSurfaceRepresentation()
        assert surface_points(segmentation, support) > 0
    return scene, volume, segmentation, support  # the scene must outlive the test's use of its nodes


def result_mask():
    out = np.zeros((20, 20, 20), np.uint8)
    out[4:16, 5:15, 5:15] = 1
    return out


def test_a_shown_surface_is_built_for_the_result():
    scene, volume, segmentation, support = scene_with_support(show_3d=True)
    writer = SegmentWriter(volume, segmentation, name="result")
    result = writer.begin()
    for k in range(4, 16):  # streamed as the GUI does, then the whole result
        writer.write_slice(k, 0, result_mask()[k])
    writer.write_volume(result_mask())
    assert surface_points(segmentation, result) == 0  # what a view-less scene shows before commit
    writer.commit()
    assert surface_points(segmentation, result) > 100
    assert surface_points(segmentation, support) > 0  # the neighbour keeps its surface
    bounds = [0.0] * 6
    segmentation.GetSegmentation().GetSegment(result).GetRepresentation(SURFACE).GetBounds(bounds)
    assert bounds[4] < 5 and bounds[5] > 14  # the surface spans the segmented slices 4..15 (k = S here)


def test_no_surface_is_made_when_none_was_shown():
    scene, volume, segmentation, _ = scene_with_support(show_3d=False)
    writer = SegmentWriter(volume, segmentation, name="result")
    result = writer.begin()
    writer.write_volume(result_mask())
    writer.commit()
    assert surface_points(segmentation, result) is None  # conversion costs time: only when shown
