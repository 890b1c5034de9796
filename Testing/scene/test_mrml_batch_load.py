"""A batch's files into a real MRML scene (slicer-core): the volume and its segmentation land
where the files say, on a permuted, flipped (left-handed), anisotropic grid."""

import numpy as np
import pytest
import SimpleITK as sitk

import vtk

import slicer  # noqa: F401  (a missing slicer-core must fail the tests, never skip them)
from slicer_scene import new_scene, to_numpy

from SynPoLib import scene as mrml
from SynPoLib.errors import MRMLInputError
from SynPoLib.io import read_volume, write_segmentation
from SynPoLib.scene.loading import load_results

from conftest import ellipsoid_volume

# LPS direction columns for i, j, k: i runs posterior->anterior, j right->left, k up
DIRECTION = (0.0, -1.0, 0.0,
             -1.0, 0.0, 0.0,
             0.0, 0.0, 1.0)
SPACING_IJK = (0.8, 1.1, 2.5)
ORIGIN_LPS = (12.5, -30.0, 7.25)


@pytest.fixture
def result_files(tmp_path):
    volume, mask = ellipsoid_volume(shape=(12, 20, 24), centre=(5.5, 7.0, 15.0), radii=(3.6, 5.0, 6.0))
    image = sitk.GetImageFromArray(volume)
    image.SetSpacing(SPACING_IJK)
    image.SetOrigin(ORIGIN_LPS)
    image.SetDirection(DIRECTION)
    query = tmp_path / "case.nii.gz"
    sitk.WriteImage(image, str(query))
    seg = write_segmentation(tmp_path / "case.seg.nrrd", mask, read_volume(query), name="SynPo label 5")
    return query, seg, mask


def test_results_load_onto_the_files_geometry(result_files):
    query, seg, mask = result_files
    volume_array = sitk.GetArrayFromImage(sitk.ReadImage(str(query)))
    scene = new_scene()
    ((volume, segmentation),) = load_results(scene, [(query, seg, "case")])
    assert volume.GetName() == "case" and segmentation.GetName() == "case SynPo"
    # every loaded voxel's world place, mapped back to the file's own index (computed here from
    # the file's LPS geometry; Slicer may store the grid flipped, the content must follow)
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    shape = tuple(reversed(volume.GetImageData().GetDimensions()))
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    ras = np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4) @ to_numpy(matrix).T
    lps = ras[:, :3] * np.array([-1.0, -1.0, 1.0])
    file_matrix = np.array(DIRECTION).reshape(3, 3) * np.array(SPACING_IJK)[None, :]
    ijk = np.rint(np.linalg.solve(file_matrix, (lps - ORIGIN_LPS).T).T).astype(int)
    assert ijk.min() >= 0 and (ijk.max(axis=0) < np.array(volume_array.shape[::-1])).all()
    in_file = (ijk[:, 2], ijk[:, 1], ijk[:, 0])
    assert np.array_equal(mrml.volume_array(volume).reshape(-1), volume_array[in_file])
    (segment_id, name), = mrml.segment_names(segmentation)
    assert name == "SynPo label 5"
    loaded_mask = mrml.segment_array(segmentation, segment_id, volume).reshape(-1)
    assert loaded_mask.sum() == mask.sum() > 100
    assert np.array_equal(loaded_mask, mask[in_file].astype(np.uint8))


def test_an_unreadable_result_adds_nothing(result_files, tmp_path):
    query, _, _ = result_files
    broken = tmp_path / "broken.seg.nrrd"
    broken.write_text("not a segmentation")
    scene = new_scene()
    before = scene.GetNumberOfNodes()
    with pytest.raises(MRMLInputError, match="cannot read the segmentation"):
        load_results(scene, [(query, broken, "case")])
    assert scene.GetNumberOfNodes() == before
    with pytest.raises(MRMLInputError, match="cannot read the volume"):
        load_results(scene, [(tmp_path / "missing.nii.gz", broken, "case")])
    assert scene.GetNumberOfNodes() == before
