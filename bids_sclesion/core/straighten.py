"""Cord straightening: displacement fields between the native grid and a
straightened, cropped grid along the centreline (numpy/scipy only).

Straight space: voxel (i, j, k) sits at ``u`` (left-right), ``v``
(posterior-anterior) across the cord and ``s`` (arc length) along it; its
world position is ``origin + (u, v, s)`` with the origin at the first
centreline point, so the straight image overlays the native anatomy.

Fields are written as ITK displacement fields (NIfTI, 5D, vectors in LPS)
that ANTs applies directly: the *straightening* field lives on the straight
grid and points to native positions; the *unstraightening* field lives on the
native grid and points to straight positions.
"""
from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .centerline import Centerline


@dataclass
class StraightGrid:
    shape: tuple[int, int, int]
    affine: np.ndarray
    radius_mm: float
    spacing_mm: tuple[float, float, float]


def straight_grid(centerline: Centerline, radius_mm: float = 20.0, spacing_mm=(0.5, 0.5, 1.0)) -> StraightGrid:
    """A grid of half-width ``radius_mm`` around the cord, ``spacing_mm`` (u, v, s)."""
    du, dv, ds = (float(x) for x in spacing_mm)
    nu, nv = int(np.ceil(2 * radius_mm / du)) + 1, int(np.ceil(2 * radius_mm / dv)) + 1
    ns = int(np.floor(centerline.length_mm / ds)) + 1
    affine = np.diag([du, dv, ds, 1.0])
    affine[:3, 3] = centerline.points[0] + np.array([-(nu - 1) / 2 * du, -(nv - 1) / 2 * dv, 0.0])
    return StraightGrid((nu, nv, ns), affine, float(radius_mm), (du, dv, ds))


def _frame_at(centerline: Centerline, s: np.ndarray):
    """Centreline point and frame at arc lengths ``s`` (linear between samples, linear extrapolation)."""
    pos = np.asarray(s, float) / centerline.step_mm
    n = len(centerline.points)
    i0 = np.clip(np.floor(pos).astype(int), 0, n - 2)
    w = (pos - i0)[..., None]
    p = centerline.points[i0] * (1 - w) + centerline.points[i0 + 1] * w
    normal = centerline.normals[i0] * (1 - w) + centerline.normals[i0 + 1] * w
    binormal = centerline.binormals[i0] * (1 - w) + centerline.binormals[i0 + 1] * w
    normal /= np.linalg.norm(normal, axis=-1, keepdims=True)
    binormal /= np.linalg.norm(binormal, axis=-1, keepdims=True)
    return p, normal, binormal


def straight_to_native_points(centerline: Centerline, grid: StraightGrid) -> np.ndarray:
    """Native world position (mm) of every straight voxel, shape (*grid.shape, 3)."""
    nu, nv, ns = grid.shape
    du, dv, ds = grid.spacing_mm
    u = (np.arange(nu) - (nu - 1) / 2) * du
    v = (np.arange(nv) - (nv - 1) / 2) * dv
    p, normal, binormal = _frame_at(centerline, np.arange(ns) * ds)
    return (p[None, None, :, :] + u[:, None, None, None] * normal[None, None, :, :]
            + v[None, :, None, None] * binormal[None, None, :, :])


def native_to_straight_points(centerline: Centerline, grid: StraightGrid, native_shape, native_affine,
                              chunk: int = 2_000_000) -> np.ndarray:
    """Straight-space world position (mm) of every native voxel, shape (*native_shape, 3).

    Each voxel is projected on the centreline: nearest dense sample, then
    refined along the local tangent.
    """
    step = centerline.step_mm
    tree = cKDTree(centerline.points)
    n = len(centerline.points)
    out = np.empty(tuple(native_shape) + (3,), np.float32)
    flat = out.reshape(-1, 3)
    total = int(np.prod(native_shape))
    origin = grid.affine[:3, 3] + np.array([(grid.shape[0] - 1) / 2 * grid.spacing_mm[0],
                                            (grid.shape[1] - 1) / 2 * grid.spacing_mm[1], 0.0])
    for start in range(0, total, chunk):
        ids = np.arange(start, min(total, start + chunk))
        ijk = np.stack(np.unravel_index(ids, native_shape), axis=1).astype(float)
        x = ijk @ native_affine[:3, :3].T + native_affine[:3, 3]
        _, k = tree.query(x)
        s = k * step + np.einsum("ij,ij->i", x - centerline.points[k], centerline.tangents[k])
        # Two refinements: re-project on the frame at the updated arc length.
        for _ in range(2):
            p, _, _ = _frame_at(centerline, s)
            kk = np.clip(np.round(s / step).astype(int), 0, n - 1)
            s = s + np.einsum("ij,ij->i", x - p, centerline.tangents[kk])
        p, normal, binormal = _frame_at(centerline, s)
        rel = x - p
        u = np.einsum("ij,ij->i", rel, normal)
        v = np.einsum("ij,ij->i", rel, binormal)
        flat[ids] = origin + np.stack([u, v, s], axis=1)
    return out


def displacement_field_image(target_points: np.ndarray, grid_affine: np.ndarray) -> nib.Nifti1Image:
    """ITK-compatible displacement field: on the grid of ``grid_affine``, each voxel's
    displacement (mm) to ``target_points``, stored in LPS as ANTs expects."""
    shape = target_points.shape[:3]
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).astype(np.float32)
    world = ijk @ grid_affine[:3, :3].T.astype(np.float32) + grid_affine[:3, 3].astype(np.float32)
    disp = (target_points - world).astype(np.float32)
    disp[..., :2] *= -1  # RAS -> LPS
    img = nib.Nifti1Image(disp[:, :, :, None, :], grid_affine)
    img.header.set_intent("vector", (), "")
    img.set_qform(grid_affine, code=1)
    img.set_sform(grid_affine, code=1)
    img.header.set_xyzt_units("mm", "sec")
    return img


def apply_points(data: np.ndarray, affine: np.ndarray, points_mm: np.ndarray, order: int = 1,
                 cval: float = 0.0) -> np.ndarray:
    """Sample ``data`` (grid ``affine``) at world points (..., 3)."""
    inv = np.linalg.inv(affine)
    vox = points_mm @ inv[:3, :3].T + inv[:3, 3]
    coords = np.moveaxis(vox, -1, 0).reshape(3, -1)
    out = ndimage.map_coordinates(np.asarray(data, np.float32), coords, order=order, mode="constant", cval=cval,
                                  prefilter=order > 1)
    return out.reshape(points_mm.shape[:-1])
