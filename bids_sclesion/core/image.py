"""Loading, validation, reorientation and resampling of 3D images (numpy/scipy)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage


class ImageError(ValueError):
    """An input image that cannot be processed; the message names file and problem."""


#: Largest image accepted, in voxels (a 3D T2w is ~4.4 M; 512^3 = 134 M voxels is 0.5 GB as float32).
#: The check reads only the header, so a huge or lying file never fills the memory.
MAX_VOXELS = int(os.environ.get("BIDS_SCLESION_MAX_VOXELS", 512 ** 3))
#: qform and sform may differ by this much (mm, at the image corners) before the image is refused.
QFORM_SFORM_TOLERANCE_MM = 1.0


def load_image(path: str | Path) -> nib.Nifti1Image:
    """Load a 3D NIfTI image and check what the pipeline relies on.

    Raises :class:`ImageError` naming ``path``, the problem and what to do, for unreadable or truncated files,
    images that are not 3D, too large, with non-finite or constant values, degenerate voxel sizes or affines,
    or qform and sform that place the image in different positions.
    """
    path = Path(path)
    if not path.exists():
        raise ImageError(f"{path}: file does not exist")
    if path.stat().st_size == 0:
        raise ImageError(f"{path}: file is empty (0 bytes); copy or convert it again")
    try:
        img = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for corrupt files
        raise ImageError(f"{path}: cannot read image ({type(exc).__name__}: {exc}); the file is corrupt or "
                         "not NIfTI") from exc
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ImageError(f"{path}: not a NIfTI image ({type(img).__name__})")
    shape = tuple(int(d) for d in img.header.get_data_shape())
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    if len(shape) != 3:
        raise ImageError(f"{path}: expected a 3D image, got shape {shape}"
                         + ("; split the volumes (one file per volume) or select one" if len(shape) == 4 else ""))
    if min(shape) < 2:
        raise ImageError(f"{path}: image has a dimension of size {min(shape)}: {shape}")
    n_voxels = int(np.prod(shape, dtype=np.int64))
    if n_voxels > MAX_VOXELS:
        raise ImageError(f"{path}: image too large ({'x'.join(map(str, shape))} = {n_voxels / 1e6:.0f} M voxels, "
                         f"{n_voxels * 4 / 1e9:.1f} GB as float32; limit {MAX_VOXELS / 1e6:.0f} M voxels): crop or "
                         "downsample it, or raise BIDS_SCLESION_MAX_VOXELS")
    zooms = np.minimum(np.asarray(img.header.get_zooms()[:3], dtype=float), _stored_voxel_size(path, img))
    if not np.all(np.isfinite(zooms)) or np.any(zooms <= 0):
        raise ImageError(f"{path}: invalid voxel size {tuple(float(z) for z in zooms)} in the header (pixdim); "
                         "fix the header")
    affine = img.affine
    if affine is None or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-6:
        raise ImageError(f"{path}: affine is singular or not finite; fix the header (qform/sform)")
    _check_qform_sform(path, img, shape)
    try:
        data = np.asarray(img.dataobj)
    except Exception as exc:
        raise ImageError(f"{path}: cannot read image data ({type(exc).__name__}: {exc}); the file is truncated "
                         "or corrupt") from exc
    if data.ndim == 4:
        data = data[..., 0]
    data = data.astype(np.float32)
    if not np.all(np.isfinite(data)):
        bad = int(np.count_nonzero(~np.isfinite(data)))
        raise ImageError(f"{path}: image contains NaN or infinite values ({bad} voxels)")
    if float(data.max()) == float(data.min()):
        raise ImageError(f"{path}: image is constant ({float(data.min())}), nothing to segment")
    out = nib.Nifti1Image(data, affine, img.header)
    out.set_data_dtype(np.float32)
    return out


def _stored_voxel_size(path: Path, img) -> np.ndarray:
    """The voxel sizes as written in the file: nibabel silently replaces a zero size by 1 mm when loading."""
    from nibabel.openers import ImageOpener

    header_class = type(img.header)
    try:
        with ImageOpener(str(path)) as fh:
            raw = fh.read(header_class.template_dtype.itemsize)
        stored = header_class(raw, endianness=img.header.endianness, check=False)["pixdim"][1:4]
        return np.asarray(stored, dtype=float)
    except Exception:  # the header was readable a moment ago: keep what nibabel found
        return np.full(3, np.inf)


def _check_qform_sform(path: Path, img, shape: tuple[int, ...]) -> None:
    """Refuse images whose two header transforms disagree: which one is right cannot be guessed."""
    header = img.header
    qform, qcode = header.get_qform(coded=True)
    sform, scode = header.get_sform(coded=True)
    if not qcode or not scode or qform is None or sform is None:
        return
    corners = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                        for k in (0, shape[2] - 1)]).T
    distance = float(np.max(np.linalg.norm((qform @ corners - sform @ corners)[:3], axis=0)))
    if distance > QFORM_SFORM_TOLERANCE_MM:
        raise ImageError(f"{path}: qform and sform disagree (up to {distance:.1f} mm apart at the image corners); "
                         "fix the header so that both describe the same position (e.g. copy the sform to the qform)")


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
    """Sample ``data`` (with ``affine``) on the grid ``shape``/``target_affine``.

    A source voxel covers half a voxel on each side of its centre: target
    points there take the edge voxel's value, points farther out ``cval``
    (SciPy's "constant" mode alone would return ``cval`` past the edge
    centres, e.g. 2 of the 5 mm of each end slice of a 5 mm slab at 1 mm).
    """
    mapping = np.linalg.inv(affine) @ target_affine
    # Snap values within 1e-6 of an integer (rounding errors at the grid's edges).
    mapping = np.where(np.abs(mapping - np.round(mapping)) < 1e-6, np.round(mapping), mapping)
    matrix, offset = mapping[:3, :3], mapping[:3, 3]
    shape = tuple(int(n) for n in shape)
    source = np.asarray(data, dtype=np.float32)
    if shape == source.shape[:3] and np.array_equal(mapping, np.eye(4)):
        return source.copy()  # the same grid (a 1 mm image on a 1 mm model grid): interpolation would copy it
    reordered = reorder_voxels(source, matrix, offset, shape)
    if reordered is not None:
        return reordered
    upper = np.asarray(source.shape[:3], float) - 0.5
    diagonal = np.allclose(matrix, np.diag(np.diag(matrix)))
    with warnings.catch_warnings():
        # SciPy notes that a 1-D matrix means a diagonal one (the fast path for axis-aligned grids).
        warnings.simplefilter("ignore", UserWarning)
        out = ndimage.affine_transform(source, np.diag(matrix) if diagonal else matrix, offset, output_shape=shape,
                                       order=order, mode="nearest", prefilter=order > 1)
    inside = np.ones(shape, bool)
    if diagonal:  # which target points lie in the source is separable
        for axis in range(3):
            c = matrix[axis, axis] * np.arange(shape[axis]) + offset[axis]
            inside &= ((c >= -0.5) & (c <= upper[axis])).reshape([-1 if a == axis else 1 for a in range(3)])
    else:  # slab by slab, to bound memory
        jk = np.indices(shape[1:], dtype=np.float64).reshape(2, -1)
        for i in range(shape[0]):
            coords = matrix[:, 0:1] * i + matrix[:, 1:] @ jk + offset[:, None]
            inside[i] = np.all((coords >= -0.5) & (coords <= upper[:, None]), axis=0).reshape(shape[1:])
    out[~inside] = cval
    return out


def reorder_voxels(source: np.ndarray, matrix: np.ndarray, offset: np.ndarray,
                   shape: tuple[int, ...]) -> np.ndarray | None:
    """``source`` on a grid whose voxels are its own voxels reordered (the target index maps to the source index
    by a signed axis permutation ``matrix`` and a whole-voxel ``offset``, every target voxel inside the source),
    or None for any other grid.

    A canonical (RAS) image brought back to its scanner's orientation is such a grid: its voxels are gathered,
    which is what interpolation at whole-voxel positions gives, without interpolating.
    """
    if not (np.all(np.isin(matrix, (-1.0, 0.0, 1.0))) and np.all(np.abs(matrix).sum(axis=0) == 1)
            and np.all(np.abs(matrix).sum(axis=1) == 1) and np.all(offset == np.round(offset))):
        return None
    source_axis = np.abs(matrix).argmax(axis=0)  # the source axis of each target axis
    index = []
    for axis in range(3):
        s = source_axis[axis]
        i = (matrix[s, axis] * np.arange(shape[axis]) + offset[s]).astype(int)
        if i.min() < 0 or i.max() >= source.shape[s]:
            return None
        index.append(i)
    return np.ascontiguousarray(np.transpose(source, source_axis)[np.ix_(*index)], dtype=np.float32)


def voxel_volume(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(affine[:3, :3])))


def nifti_image(data: np.ndarray, affine: np.ndarray, dtype=None) -> nib.Nifti1Image:
    """A NIfTI image whose qform and sform both hold ``affine`` (code 1, scanner) and whose units are mm:
    every reader (ANTs, FSL, ITK-SNAP) then places it the same way."""
    array = np.ascontiguousarray(data if dtype is None else np.asarray(data).astype(dtype))
    img = nib.Nifti1Image(array, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img
