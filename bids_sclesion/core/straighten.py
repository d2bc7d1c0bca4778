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
from typing import Sequence

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from .image import nifti_image
from .centerline import Centerline, plausible_centerline


@dataclass
class StraightGrid:
    shape: tuple[int, int, int]
    affine: np.ndarray
    radius_mm: float
    spacing_mm: tuple[float, float, float]
    margin_mm: float = 0.0  # extension beyond both ends of the centreline

    @property
    def centerline_origin(self) -> np.ndarray:
        """World position of the first centreline point (u = v = s = 0)."""
        du, dv, _ = self.spacing_mm
        return self.affine[:3, 3] + np.array([(self.shape[0] - 1) / 2 * du, (self.shape[1] - 1) / 2 * dv,
                                              self.margin_mm])


def straight_grid(centerline: Centerline, radius_mm: float = 20.0, spacing_mm=(0.5, 0.5, 1.0),
                  margin_mm: float = 5.0) -> StraightGrid:
    """A grid of half-width ``radius_mm`` around the cord, ``spacing_mm`` (u, v, s).

    It extends ``margin_mm`` beyond each end of the centreline (the frame is
    extrapolated linearly) so that the cord's first and last slices, often
    only partly covered by the centreline samples, are not cut.
    """
    du, dv, ds = (float(x) for x in spacing_mm)
    margin = float(np.ceil(margin_mm / ds) * ds)
    nu, nv = int(np.ceil(2 * radius_mm / du)) + 1, int(np.ceil(2 * radius_mm / dv)) + 1
    ns = int(np.floor((centerline.length_mm + 2 * margin) / ds)) + 1
    affine = np.diag([du, dv, ds, 1.0])
    affine[:3, 3] = centerline.points[0] + np.array([-(nu - 1) / 2 * du, -(nv - 1) / 2 * dv, -margin])
    return StraightGrid((nu, nv, ns), affine, float(radius_mm), (du, dv, ds), margin)


def _frame_at(centerline: Centerline, s: np.ndarray):
    """Centreline point and frame at arc lengths ``s``: linear between samples; past either end the
    centreline goes on straight along its end tangent, with the end frame.

    Extrapolating the frames linearly instead would multiply the last step's turn by the margin's length
    (a 17 degree turn over the last 1 mm becomes 85 degrees 5 mm out), tilting the margin's slices.
    """
    pos = np.asarray(s, float) / centerline.step_mm
    n = len(centerline.points)
    last = n - 1
    inside = np.clip(pos, 0.0, last)
    i0 = np.clip(np.floor(inside).astype(int), 0, n - 2)
    w = (inside - i0)[..., None]
    end = np.where(pos > last, last, 0)
    beyond = ((pos - inside) * centerline.step_mm)[..., None]
    p = (centerline.points[i0] * (1 - w) + centerline.points[i0 + 1] * w
         + beyond * centerline.tangents[end])
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
    p, normal, binormal = _frame_at(centerline, np.arange(ns) * ds - grid.margin_mm)
    return (p[None, None, :, :] + u[:, None, None, None] * normal[None, None, :, :]
            + v[None, :, None, None] * binormal[None, None, :, :])


def native_to_straight_points(centerline: Centerline, grid: StraightGrid, native_shape, native_affine,
                              coarse_mm: float | None = 2.0) -> np.ndarray:
    """Straight-space world position (mm) of every native voxel, shape (*native_shape, 3).

    The projection is exact on a grid of about ``coarse_mm`` and trilinearly
    interpolated in between: the mapping is smooth wherever the cord's radius
    of curvature exceeds the distance to it, and this is ~20x faster.
    """
    native_shape = tuple(int(n) for n in native_shape)
    if not coarse_mm:
        return _project_voxels(centerline, grid, native_shape, native_affine)
    zooms = np.sqrt((native_affine[:3, :3] ** 2).sum(axis=0))
    axes = []
    for n, z in zip(native_shape, zooms):
        step = max(1, int(round(coarse_mm / z)))
        idx = np.arange(0, n, step)
        if idx[-1] != n - 1:
            idx = np.append(idx, n - 1)
        axes.append(idx)
    if all(len(a) == n for a, n in zip(axes, native_shape)):
        return _project_voxels(centerline, grid, native_shape, native_affine)
    ijk = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    coarse = _project_indices(centerline, grid, ijk.astype(float), native_affine).reshape(
        tuple(len(a) for a in axes) + (3,))
    out = np.empty(native_shape + (3,), np.float32)
    # Separable linear interpolation: fractional coarse index of every native index per axis.
    frac = [np.interp(np.arange(n), a, np.arange(len(a))) for n, a in zip(native_shape, axes)]
    coords = np.meshgrid(*frac, indexing="ij")
    for c in range(3):
        out[..., c] = ndimage.map_coordinates(coarse[..., c], coords, order=1, mode="nearest")
    return out


def _project_voxels(centerline, grid, native_shape, native_affine, chunk: int = 2_000_000) -> np.ndarray:
    out = np.empty(tuple(native_shape) + (3,), np.float32)
    flat = out.reshape(-1, 3)
    total = int(np.prod(native_shape))
    for start in range(0, total, chunk):
        ids = np.arange(start, min(total, start + chunk))
        ijk = np.stack(np.unravel_index(ids, native_shape), axis=1).astype(float)
        flat[ids] = _project_indices(centerline, grid, ijk, native_affine)
    return out


def _project_indices(centerline: Centerline, grid: StraightGrid, ijk: np.ndarray, native_affine) -> np.ndarray:
    """Project native voxel indices (N, 3) on the centreline: nearest sample, then
    refined along the local tangent; returns straight-space world positions."""
    step = centerline.step_mm
    tree = cKDTree(centerline.points)
    n = len(centerline.points)
    origin = grid.centerline_origin
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
    return (origin + np.stack([u, v, s], axis=1)).astype(np.float32)


def displacement_field_image(target_points: np.ndarray, grid_affine: np.ndarray) -> nib.Nifti1Image:
    """ITK-compatible displacement field: on the grid of ``grid_affine``, each voxel's
    displacement (mm) to ``target_points``, stored in LPS as ANTs expects."""
    disp = (target_points - grid_world_points(target_points.shape[:3], grid_affine)).astype(np.float32)
    disp[..., :2] *= -1  # RAS -> LPS
    img = nifti_image(disp[:, :, :, None, :], grid_affine)
    img.header.set_intent("vector", (), "")
    return img


def apply_points(data: np.ndarray, affine: np.ndarray, points_mm: np.ndarray, order: int = 1,
                 cval: float = 0.0) -> np.ndarray:
    """Sample ``data`` (grid ``affine``) at world points (..., 3).

    A voxel covers half a voxel on each side of its centre: points there take
    the edge voxel's value (SciPy's "constant" mode would return ``cval`` past
    the centre, losing half of the first and last slice of a thick-slice slab);
    points farther out get ``cval``.
    """
    return apply_points_to_maps([data], affine, points_mm, order, cval)[0]


def apply_points_to_maps(maps: Sequence[np.ndarray], affine: np.ndarray, points_mm: np.ndarray, order: int = 1,
                         cval: float = 0.0) -> list[np.ndarray]:
    """:func:`apply_points` for several maps on one grid: the points' voxel coordinates are found once.

    With linear or nearest interpolation only the points within one voxel of the grid are interpolated;
    the others are ``cval`` without computing them (mapping a straightened cord back to a 3D volume, most
    native voxels lie outside the straight grid).
    """
    inv = np.linalg.inv(affine)
    points = points_mm.reshape(-1, 3)
    shape = np.asarray(maps[0].shape[:3])
    near = None
    if order <= 1:
        # A float32 pass with a margin finds the candidates (most of a native 3D grid lies far outside);
        # the candidates' coordinates are then computed in float64 as for every point before, so the set
        # and the values are those of the plain float64 computation.
        near = np.ones(len(points), bool)
        for axis in range(3):
            coord = points @ inv[axis, :3].astype(np.float32) + np.float32(inv[axis, 3])
            near &= (coord > -1.01) & (coord < shape[axis] + 0.01)
        near = np.flatnonzero(near)
        vox = (points[near] @ inv[:3, :3].T + inv[:3, 3]).T  # (3, candidates)
        exact = np.all((vox > -1) & (vox < shape[:, None]), axis=0)
        near, vox = near[exact], vox[:, exact]
    else:
        vox = (points @ inv[:3, :3].T + inv[:3, 3]).T  # (3, N)
    coords = clamp_to_voxel_extent(vox, shape)
    out = []
    for data in maps:
        values = ndimage.map_coordinates(np.asarray(data, np.float32), coords, order=order, mode="constant",
                                         cval=cval, prefilter=order > 1)
        if near is not None:
            values, sampled = np.full(len(points), cval, np.float32), values
            values[near] = sampled
        out.append(values.reshape(points_mm.shape[:-1]))
    return out


def clamp_to_voxel_extent(coords: np.ndarray, shape) -> np.ndarray:
    """Voxel coordinates (3, N) within half a voxel outside the grid moved onto its edge voxels."""
    upper = np.asarray(shape[:3], float)[:, None] - 1
    inside = (coords >= -0.5) & (coords <= upper + 0.5)
    return np.where(inside, np.clip(coords, 0.0, upper), coords)


def straightening_fields(cord_prob: np.ndarray, affine: np.ndarray, radius_mm: float = 20.0,
                         spacing_mm=(0.5, 0.5, 1.0), threshold: float = 0.5):
    """Centreline of a cord map and both displacement fields.

    Returns ``(to_straight, to_native, centerline)``: the field on the straight
    grid that resamples native images into straight space, and the field on
    the native grid that resamples straight-space maps back.
    """
    cl = plausible_centerline(cord_prob, affine, threshold=threshold)
    grid = straight_grid(cl, radius_mm, spacing_mm)
    to_straight = displacement_field_image(straight_to_native_points(cl, grid), grid.affine)
    to_native = displacement_field_image(native_to_straight_points(cl, grid, cord_prob.shape, affine), affine)
    return to_straight, to_native, cl


def field_target_points(field: nib.Nifti1Image) -> np.ndarray:
    """World positions (RAS mm) an ITK displacement field points to, shape (*grid, 3).

    The inverse of :func:`displacement_field_image`: lets a straightening
    field written to disk (or one from another tool) drive the resampling.
    """
    disp = np.asarray(field.dataobj, np.float32)
    if disp.ndim == 5:
        disp = disp[:, :, :, 0, :]
    if disp.ndim != 4 or disp.shape[-1] != 3:
        raise ValueError(f"not a 3D displacement field: shape {disp.shape}")
    points = disp * np.array([-1.0, -1.0, 1.0], np.float32)  # LPS -> RAS
    points += grid_world_points(disp.shape[:3], field.affine)
    return points


def grid_world_points(shape: Sequence[int], affine: np.ndarray) -> np.ndarray:
    """World positions (mm) of every voxel centre of a grid, shape (*shape, 3), in float32.

    Built as the sum of one broadcast term per axis: the same values as the matrix product of every
    voxel index with the affine, without the (*shape, 3) index array (a native 3D grid's is 50 MB).
    """
    linear = affine[:3, :3].astype(np.float32)
    points = np.broadcast_to(affine[:3, 3].astype(np.float32), (*shape[:3], 3)).copy()
    for axis, n in enumerate(shape[:3]):
        index_shape = [1, 1, 1, 1]
        index_shape[axis] = n
        points += np.arange(n, dtype=np.float32).reshape(index_shape) * linear[:, axis]
    return points
