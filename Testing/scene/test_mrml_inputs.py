"""What the module starts from, on a real scene (slicer-core): which volume and segmentation
it proposes (SynPoLib.scene.default_inputs) and where the chosen segment is labelled
(SynPoLib.scene.support_slices_from_segment), so the user only has to pick the segment."""

from __future__ import annotations

import numpy as np
import pytest

import slicer
from slicer_scene import LPS, add_segmentation, add_volume, geometry, new_scene

from SynPoLib import scene as mrml
from SynPoLib.scene import MRMLInputError

SHAPE = (12, 16, 14)  # (k, j, i)
MATRIX = geometry(LPS, (1.0, 1.0, 1.5), (7.0, 10.0, -10.0))


def volume(scene, name):
    return add_volume(scene, np.zeros(SHAPE, np.float32), MATRIX, name=name)


def show_in(scene, view, node):
    composite = slicer.vtkMRMLSliceCompositeNode()
    composite.SetLayoutName(view)
    composite.SetSingletonTag(view)
    scene.AddNode(composite)
    composite.SetBackgroundVolumeID(node.GetID())


def labelmap_volume(scene, name="labels"):
    node = slicer.vtkMRMLLabelMapVolumeNode()
    node.SetName(name)
    scene.AddNode(node)
    return node


def test_an_empty_scene_proposes_nothing():
    assert mrml.default_inputs(new_scene()) == (None, None)


def test_the_red_view_volume_before_the_first_volume():
    scene = new_scene()
    first, shown = volume(scene, "first"), volume(scene, "shown")
    show_in(scene, "Yellow", first)
    show_in(scene, "Red", shown)
    segmentation, _ = add_segmentation(scene, first, [("a", np.zeros(SHAPE, np.uint8), (1, 0, 0))])
    got_volume, got_segmentation = mrml.default_inputs(scene)
    assert got_volume.GetID() == shown.GetID() and got_segmentation.GetID() == segmentation.GetID()


def test_the_segment_editor_inputs_come_first():
    scene = new_scene()
    scene.RegisterNodeClass(slicer.vtkMRMLSegmentEditorNode())
    shown, edited = volume(scene, "shown"), volume(scene, "edited")
    show_in(scene, "Red", shown)
    add_segmentation(scene, shown, [("a", np.zeros(SHAPE, np.uint8), (1, 0, 0))], name="first")
    segmentation, _ = add_segmentation(scene, edited, [("b", np.zeros(SHAPE, np.uint8), (0, 1, 0))], name="edited")
    editor = scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    editor.SetAndObserveSourceVolumeNode(edited)
    editor.SetAndObserveSegmentationNode(segmentation)
    got_volume, got_segmentation = mrml.default_inputs(scene)
    assert (got_volume.GetName(), got_segmentation.GetName()) == ("edited", "edited")


def test_an_editor_without_a_source_volume_falls_back_to_the_red_view():
    scene = new_scene()
    scene.RegisterNodeClass(slicer.vtkMRMLSegmentEditorNode())
    volume(scene, "first")
    shown = volume(scene, "shown")
    show_in(scene, "Red", shown)
    scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
    assert mrml.default_inputs(scene) == (shown, None)


def test_a_label_map_is_never_the_support_volume():
    scene = new_scene()
    labels = labelmap_volume(scene)
    show_in(scene, "Red", labels)
    assert mrml.default_inputs(scene) == (None, None)  # only labels: nothing to propose
    image = volume(scene, "image")
    assert mrml.default_inputs(scene)[0].GetID() == image.GetID()


@pytest.mark.parametrize("axis, slices", [(0, [5]), (1, [3]), (2, [9]), (1, [4, 6, 11])])
def test_the_labelled_slices_and_axis_come_from_the_segment(axis, slices):
    scene = new_scene()
    image = volume(scene, "image")
    label = np.zeros(SHAPE, np.uint8)
    where = [slice(2, 8)] * 3
    for index in slices:
        where[axis] = index
        label[tuple(where)] = 1
    segmentation, (segment,) = add_segmentation(scene, image, [("organ", label, (1, 0, 0))])
    assert mrml.support_slices_from_segment(image, segmentation, segment) == (axis, slices)


def test_the_segment_is_read_on_the_volumes_grid():
    """A segmentation drawn on another volume (half the voxel size, same origin) gives the slice
    of the volume asked about: slice 8 of the fine grid is at 8 x 0.75 mm = 6 mm, which is
    slice 4 (6 / 1.5 mm) of the image."""
    scene = new_scene()
    image = volume(scene, "image")
    fine_shape = tuple(2 * n for n in SHAPE)
    fine = add_volume(scene, np.zeros(fine_shape, np.float32), geometry(LPS, (0.5, 0.5, 0.75), (7.0, 10.0, -10.0)),
                      name="fine")
    label = np.zeros(fine_shape, np.uint8)
    label[8, 8:20, 8:20] = 1
    segmentation, (segment,) = add_segmentation(scene, fine, [("organ", label, (1, 0, 0))])
    assert mrml.support_slices_from_segment(fine, segmentation, segment) == (0, [8])
    assert mrml.support_slices_from_segment(image, segmentation, segment) == (0, [4])


def test_an_empty_segment_says_what_to_do():
    scene = new_scene()
    image = volume(scene, "image")
    segmentation, (segment,) = add_segmentation(scene, image, [("organ", np.zeros(SHAPE, np.uint8), (1, 0, 0))])
    with pytest.raises(MRMLInputError, match="empty: draw the structure on one slice"):
        mrml.support_slices_from_segment(image, segmentation, segment)
