"""Synthetic MS lesions inserted into real spinal cords (numpy/scipy only).

Real images of healthy cords with a manual cord mask become test cases with
known lesions: ellipsoids elongated along the cord (as MS lesions are),
restricted to the cord, with soft edges and partial-volume averaging over
thick slices. Intensities are *scaled* (not replaced), so the scanner's
noise and texture stay in the lesion.
"""
from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..core.centerline import extract_centerline

#: Relative intensity change of a lesion, (low, high), per image suffix:
#: bright on T2-weighted contrasts, dark on T1w and PSIR, faint on MT.
LESION_CONTRAST: dict[str, tuple[float, float]] = {
    "T2w": (0.35, 0.8),
    "T2starw": (0.3, 0.7),
    "STIR": (0.4, 0.9),
    "T1w": (-0.45, -0.2),
    "PSIR": (-0.5, -0.25),
    "MTS": (0.15, 0.35),
}


def _soft_ellipsoid(world: np.ndarray, centre: np.ndarray, tangent: np.ndarray, r_across: float,
                    r_along: float, edge: float = 0.15) -> np.ndarray:
    d = world - centre
    along = d @ tangent
    across = np.linalg.norm(d - along[..., None] * tangent, axis=-1)
    radius = np.sqrt((along / r_along) ** 2 + (across / r_across) ** 2)
    return 1.0 / (1.0 + np.exp(np.clip((radius - 1.0) / edge, -50, 50)))


def insert_lesions(
    data: np.ndarray,
    affine: np.ndarray,
    cord_mask: np.ndarray,
    suffix: str,
    rng: np.random.Generator,
    n_lesions: int = 2,
    min_volume_mm3: float = 8.0,
    max_tries: int = 50,
) -> tuple[np.ndarray, np.ndarray]:
    """Return (image with lesions, lesion mask) for one real image and its cord mask.

    Voxels thicker than 1.5 mm are supersampled along that axis so a lesion
    in a thick slice is partial-volume averaged as a scanner would. Lesions
    that would overlap, or whose part inside the cord is smaller than
    ``min_volume_mm3``, are redrawn.
    """
    if suffix not in LESION_CONTRAST:
        raise ValueError(f"no lesion contrast defined for suffix {suffix!r}; known: {sorted(LESION_CONTRAST)}")
    cord = np.asarray(cord_mask) > 0.5
    if cord.sum() < 10:
        raise ValueError("the cord mask has fewer than 10 voxels")
    cl = extract_centerline(cord.astype(np.float32), affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
    offsets = [np.linspace(-0.5, 0.5, int(np.ceil(z / 1.0)) + 2)[1:-1] if z > 1.5 else np.zeros(1) for z in zooms]
    sub = np.stack(np.meshgrid(*offsets, indexing="ij"), axis=-1).reshape(-1, 3)
    cord_idx = np.argwhere(cord)
    out = np.asarray(data, np.float32).copy()
    lesions = np.zeros(cord.shape, bool)
    lo_c, hi_c = LESION_CONTRAST[suffix]
    placed = 0
    for _ in range(max_tries):
        if placed >= n_lesions:
            break
        centre_vox = cord_idx[rng.integers(len(cord_idx))].astype(float)
        centre = affine[:3, :3] @ centre_vox + affine[:3, 3]
        k = int(np.argmin(np.linalg.norm(cl.points - centre, axis=1)))
        tangent = cl.tangents[k]
        r_across, r_along = rng.uniform(1.5, 3.5), rng.uniform(3.0, 10.0)
        reach = np.ceil(max(r_across, r_along) * 1.5 / zooms).astype(int) + 1
        lo = np.maximum(centre_vox.astype(int) - reach, 0)
        hi = np.minimum(centre_vox.astype(int) + reach + 1, cord.shape)
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        ijk = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), axis=-1)
        weight = np.zeros(ijk.shape[:3], np.float32)
        for off in sub:
            world = (ijk + off) @ affine[:3, :3].T + affine[:3, 3]
            weight += _soft_ellipsoid(world, centre, tangent, r_across, r_along)
        weight = weight / len(sub) * cord[box]
        mask = weight >= 0.5
        if mask.sum() * voxel_mm3 < min_volume_mm3:
            continue
        if np.any(ndimage.binary_dilation(lesions[box], iterations=1) & mask):
            continue
        contrast = rng.uniform(lo_c, hi_c)
        out[box] *= 1.0 + contrast * weight
        lesions[box] |= mask
        placed += 1
    return out, lesions
