"""Preprocessing shared by the app and by training: canonical grid, N4, model grid."""
from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np

from .image import resample_to_spacing, to_canonical
from .intensity import n4_bias_correction, normalize_intensity


@dataclass
class ModelInput:
    data: np.ndarray  # normalised intensities on the model grid
    affine: np.ndarray  # model grid -> scanner mm


def bias_correct_image(img: nib.Nifti1Image) -> nib.Nifti1Image:
    data = np.asarray(img.dataobj, np.float32)
    corrected = n4_bias_correction(data, tuple(img.header.get_zooms()[:3]))
    out = nib.Nifti1Image(corrected, img.affine, img.header)
    out.set_data_dtype(np.float32)
    return out


def to_model_grid(img: nib.Nifti1Image, spacing: tuple[float, float, float]) -> ModelInput:
    """Resample a canonical image to the model's voxel size and normalise it."""
    data = np.asarray(img.dataobj, np.float32)
    resampled, affine = resample_to_spacing(data, img.affine, spacing, order=1)
    return ModelInput(normalize_intensity(resampled), affine)


def mask_to_model_grid(mask_img: nib.Nifti1Image, reference: nib.Nifti1Image, spacing) -> np.ndarray:
    """A binary mask of the same grid as ``reference`` on the model grid (>= 50 % coverage)."""
    mask = to_canonical(mask_img)
    if mask.shape != reference.shape or not np.allclose(mask.affine, reference.affine, atol=1e-3):
        raise ValueError(f"mask and image grids differ (mask {mask.shape}, image {reference.shape} in RAS)")
    resampled, _ = resample_to_spacing(np.asarray(mask.dataobj, np.float32) > 0.5, reference.affine, spacing, order=1)
    return resampled >= 0.5


def prepare_for_model(img: nib.Nifti1Image, spacing, bias_correct: bool = True) -> tuple[nib.Nifti1Image, ModelInput]:
    """Canonical reorientation, optional N4, resampling and normalisation."""
    canonical = to_canonical(img)
    if bias_correct:
        canonical = bias_correct_image(canonical)
    return canonical, to_model_grid(canonical, spacing)
