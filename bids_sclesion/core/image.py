"""Loading, validation, reorientation and resampling of 3D images (numpy/scipy)."""
from __future__ import annotations

import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


class ImageError(ValueError):
    """An input image that cannot be processed; the message names file and problem."""


def load_image(path: str | Path) -> nib.Nifti1Image:
    """Load a 3D NIfTI image and check what the pipeline relies on.

    Raises :class:`ImageError` naming ``path`` for unreadable files, non-3D
    data, non-finite values, empty images and degenerate voxel sizes.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes)")
    try:
        img = nib.load(str(path))
        data = np.asarray(img.dataobj)
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise ImageError(f"{path}: cannot read image ({type(exc).__name__}: {exc})") from exc
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ImageError(f"{path}: expected a 3D image, got shape {data.shape}")
    if min(data.shape) < 2:
        raise ImageError(f"{path}: image has a dimension of size {min(data.shape)}: {data.shape}")
    zooms = np.asarray(img.header.get_zooms()[:3], dtype=float)
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise ImageError(f"{path}: invalid voxel size {tuple(zooms)}")
    affine = img.affine
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise ImageError(f"{path}: affine is singular or not finite")
    data = data.astype(np.float32)
    if not np.all(np.isfinite(data)):
        raise ImageError(f"{path}: image contains NaN or infinite values")
    if float(data.max()) == float(data.min()):
        raise ImageError(f"{path}: image is constant ({float(data.min())}), nothing to segment")
    out = nib.Nifti1Image(data, affine, img.header)
    out.set_data_dtype(np.float32)
    return out


def to_canonical(img: nib.Nifti1Image) -> nib.Nifti1Image:
    """Reorder axes to the closest RAS orientation (no interpolation)."""
    return nib.as_closest_canonical(img)


def resample_to_spacing(
    data: np.ndarray, affine: np.ndarray, spacing: float | tuple[float, float, float], order: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``data`` (axes aligned with ``affine``'s columns) to ``spacing`` mm.

    The new grid covers the same field of view; returns (data, affine).
    """
    spacing = np.broadcast_to(np.asarray(spacing, float), (3,))
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    extent = np.asarray(data.shape) * zooms
    shape = np.maximum(1, np.round(extent / spacing)).astype(int)
    scale = spacing / zooms
    new_affine = affine.copy()
    new_affine[:3, :3] = affine[:3, :3] * scale[None, :]
    # Keep the field of view centred: voxel centres shift by half the change.
    new_affine[:3, 3] = affine[:3, :3] @ ((scale - 1) / 2) + affine[:3, 3]
    return resample_to_grid(data, affine, tuple(shape), new_affine, order=order), new_affine


def resample_to_grid(
    data: np.ndarray,
    affine: np.ndarray,
    shape: tuple[int, ...],
    target_affine: np.ndarray,
    order: int = 1,
    cval: float = 0.0,
) -> np.ndarray:
    """Sample ``data`` (with ``affine``) on the grid ``shape``/``target_affine``."""
    mapping = np.linalg.inv(affine) @ target_affine
    matrix, offset = mapping[:3, :3], mapping[:3, 3]
    if np.allclose(matrix, np.diag(np.diag(matrix))):
        matrix = np.diag(matrix)  # fast path for axis-aligned grids
    prefilter = order > 1
    with warnings.catch_warnings():
        # SciPy notes that a 1-D matrix means a diagonal one, which is what we want.
        warnings.simplefilter("ignore", UserWarning)
        return ndimage.affine_transform(
            np.asarray(data, dtype=np.float32), matrix, offset, output_shape=tuple(shape), order=order,
            mode="constant", cval=cval, prefilter=prefilter,
        )


def voxel_volume(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(affine[:3, :3])))
