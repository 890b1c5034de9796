"""The batch tests' cohort is real anatomy: the support's structure is on its slice, the
MNI152 crops show the same place as the Colin27 crops, the broken files are refused."""

import numpy as np
import SimpleITK as sitk


def test_cohort_crops_show_the_structure(batch_cohort):
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(batch_cohort["aal_a"])))
    assert (labels[0] == 77).sum() > 200 and (labels[1] == 77).sum() > 200  # the left thalamus on both slices
    colin = sitk.ReadImage(str(batch_cohort["colin_a"]))
    mni = sitk.ReadImage(str(batch_cohort["mni_a"]))
    assert np.allclose(colin.GetOrigin(), mni.GetOrigin(), atol=1.0)  # the same place, within a voxel
    a = sitk.GetArrayFromImage(colin).astype(float).ravel()
    b = sitk.GetArrayFromImage(mni).astype(float).ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.5, "the MNI152 crop should show the same anatomy as Colin27's"
