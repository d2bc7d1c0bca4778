"""Synthetic MS lesions inserted into real spinal cords (numpy/scipy only).

Real images of healthy cords with a manual cord mask become test cases with known lesions drawn
after what is published on MS cord lesions (docs/phantoms.md, "Lesions inserted into real cords"):
mostly in the lateral and dorsal white-matter columns, often reaching the cord surface, covering
less than half of the cross-section, 3 to 30 mm long, oval or wedge-shaped in axial view, with
irregular soft edges, partial-volume averaged through thick slices. A lesion's intensity is set
relative to the *local white matter* (not to the voxel it replaces, which may be grey matter),
with a spread inside the lesion, and the scanner's noise and texture are kept.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.image import voxel_volume
from ..core.centerline import extract_centerline
from .lesion_shape import LESION_CONTRAST, LesionGeometry, draw_lesion_geometry, lesion_level

#: Version of the rules below: a dataset of inserted lesions made by other rules is another dataset.
#: 1: ellipsoids anywhere in the cord, intensity scaled voxel by voxel; 2: the rules of this module.
INSERTION_VERSION = 2


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: np.ndarray) -> np.ndarray:
    """Smooth random field of unit standard deviation (irregular edges, heterogeneous intensity)."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox, mode="wrap")
    return field / max(float(field.std()), 1e-6)


def _cross_section_frame(tangent: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors across the cord: towards +x of the image and towards anterior, both normal to ``tangent``."""
    x_axis = np.array([1.0, 0.0, 0.0])
    e_lr = x_axis - (x_axis @ tangent) * tangent
    e_lr /= np.linalg.norm(e_lr)
    e_ap = np.cross(tangent, e_lr)
    if e_ap[1] < 0:  # RAS: anterior is +y
        e_ap = -e_ap
    return e_lr, e_ap


def insert_lesions(
    data: np.ndarray,
    affine: np.ndarray,
    cord_mask: np.ndarray,
    suffix: str,
    rng: np.random.Generator,
    n_lesions: int = 2,
    min_volume_mm3: float = 8.0,
    max_tries: int = 60,
    grey_matter: np.ndarray | None = None,
    drawn: list[LesionGeometry] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (image with lesions, lesion mask) for one real image and its cord mask.

    Voxels thicker than 1.5 mm are supersampled along that axis so a lesion in a thick slice is
    partial-volume averaged as a scanner would. Lesions that would touch another, that would cover
    more than half of the cord's cross-section, or whose part inside the cord is smaller than
    ``min_volume_mm3``, are redrawn. The local white matter, the reference of a lesion's intensity,
    is the median of the cord around it outside the lesion and outside ``grey_matter`` where given.
    ``drawn``, if given, receives the geometry of each placed lesion.
    """
    if suffix not in LESION_CONTRAST:
        raise ValueError(f"no lesion contrast defined for suffix {suffix!r}; known: {sorted(LESION_CONTRAST)}")
    cord = np.asarray(cord_mask) > 0.5
    if cord.sum() < 10:
        raise ValueError("the cord mask has fewer than 10 voxels")
    gm = np.zeros(cord.shape, bool) if grey_matter is None else np.asarray(grey_matter) > 0.5
    cl = extract_centerline(cord.astype(np.float32), affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    voxel_mm3 = voxel_volume(affine)
    offsets = [np.linspace(-0.5, 0.5, int(np.ceil(z / 1.0)) + 2)[1:-1] if z > 1.5 else np.zeros(1) for z in zooms]
    sub = np.stack(np.meshgrid(*offsets, indexing="ij"), axis=-1).reshape(-1, 3)
    cord_idx = np.argwhere(cord)
    cord_world = cord_idx @ affine[:3, :3].T + affine[:3, 3]
    inverse = np.linalg.inv(affine)
    out = np.asarray(data, np.float32).copy()
    lesions = np.zeros(cord.shape, bool)
    placed = 0
    for _ in range(max_tries):
        if placed >= n_lesions:
            break
        k = int(rng.integers(len(cl.points)))
        point, tangent = cl.points[k], cl.tangents[k]
        e_lr, e_ap = _cross_section_frame(tangent, affine)
        near = np.abs((cord_world - point) @ tangent) <= max(1.0, 0.6 * zooms.max())
        if near.sum() < 4:
            continue
        r_lr = float(np.percentile(np.abs((cord_world[near] - point) @ e_lr), 98)) + 0.5 * zooms.min()
        r_ap = float(np.percentile(np.abs((cord_world[near] - point) @ e_ap), 98)) + 0.5 * zooms.min()
        geom = draw_lesion_geometry(rng, r_lr, r_ap, suffix)
        direction = np.cos(geom.angle) * e_lr + np.sin(geom.angle) * e_ap
        across_dir = np.cross(tangent, direction)
        reach_mm = max(geom.half_length_mm, r_lr, r_ap) + 3.0
        centre_vox = inverse[:3, :3] @ point + inverse[:3, 3]
        reach = np.ceil(reach_mm / zooms).astype(int) + 1
        lo = np.maximum(np.round(centre_vox).astype(int) - reach, 0)
        hi = np.minimum(np.round(centre_vox).astype(int) + reach + 1, cord.shape)
        if np.any(hi <= lo):
            continue
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1)
        irregular = _smooth_noise(rng, ijk.shape[:3], 1.2 / zooms)
        weight = np.zeros(ijk.shape[:3], np.float32)
        for off in sub:
            d = (ijk + off) @ affine[:3, :3].T + affine[:3, 3] - point
            level = lesion_level(d @ tangent, d @ across_dir, d @ direction, geom) * (1.0 + 0.12 * irregular)
            weight += 1.0 / (1.0 + np.exp(np.clip((level - 1.0) / 0.08, -50, 50)))
        weight = weight / len(sub) * cord[box]
        mask = weight >= 0.5
        if mask.sum() * voxel_mm3 < min_volume_mm3:
            continue
        if np.any(ndimage.binary_dilation(lesions[box], iterations=1) & mask):
            continue
        # Share of the cross-section: lesion against cord voxels in the lesion's middle third along the cord.
        d = ijk @ affine[:3, :3].T + affine[:3, 3] - point
        middle = np.abs(d @ tangent) <= max(geom.half_length_mm / 3, 0.6 * zooms.max())
        if mask[middle].sum() > 0.5 * max(int(cord[box][middle].sum()), 1):
            continue
        reference = cord[box] & ~gm[box] & (weight < 0.05) & ~lesions[box]
        if reference.sum() < 5:
            continue
        image = out[box]
        white_matter = float(np.median(image[reference]))
        # The scanner's noise, kept in the lesion: the image minus its mean over the cord nearby (the cord
        # only, so that the cord's edge against the CSF is not taken for texture).
        inside = cord[box].astype(np.float32)
        local_mean = ndimage.gaussian_filter(image * inside, 1.0) / np.maximum(ndimage.gaussian_filter(inside, 1.0), 1e-3)
        texture = (image - local_mean) * inside
        spread = np.clip(1.0 + 0.25 * _smooth_noise(rng, image.shape, 1.5 / zooms), 0.5, 1.5)  # heterogeneous lesions
        target = white_matter * (1.0 + geom.contrast * spread) + texture
        out[box] = image * (1.0 - weight) + weight * target
        lesions[box] |= mask
        placed += 1
        if drawn is not None:
            drawn.append(geom)
    return out, lesions
