"""Spinal cord centreline: extraction from a mask or probability map, smooth fit,
arc-length parametrisation and rotation-minimising frames (numpy/scipy only)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import interpolate, ndimage
from .image import voxel_volume
from .metrics import CONNECTIVITY


class CenterlineError(ValueError):
    """No usable cord in the map (the message says why)."""


#: Fewest cord slices a centreline is fitted to (SciPy's smoothing spline needs five points).
MIN_SAMPLES = 5


#: Below these, a "cord" found by the network is not a spinal cord (e.g. a patch of brain): the smallest adult
#: cords measure about 40 mm2 in cross-section (lower thoracic), and any clinical field of view shows centimetres.
MIN_CORD_AREA_MM2 = 20.0
MAX_CORD_AREA_MM2 = 250.0  # the largest cords measure ~120 mm2; thick slices blur the mask by a few mm
#: Short on purpose: a real axial acquisition of 16 slices of 1 mm (../shared/data, spine-mini) gives 15 mm of cord,
#: the shortest of the real cords there. What tells a brain from a cord is the cross-section (real cords here:
#: 66-134 mm2; brain-like images: 278-483). A blob wider than it is long is measured across its widest axis, so a
#: disk 9 mm wide (a cord's width) measures 8 mm whatever its thickness: the bound sits clear of that, at 10 mm.
MIN_CORD_LENGTH_MM = 10.0
#: Shortest wavelength of a bend the centreline fit keeps (half-power cut-off of the smoothing spline). A cord
#: bends over centimetres (its tightest curve, at the cervicomedullary junction, has a radius of 2-3 cm); left
#: to generalised cross-validation alone, a short or noisy cord map gets a fit that follows the slice-to-slice
#: jitter of the centroids (seen on a real 16 mm axial crop: tangents swinging 20 degrees between 1 mm slices,
#: which tilts the straightened slices and smears a lesion over a dozen of them).
MIN_BEND_WAVELENGTH_MM = 20.0


#: A spinal cord runs on beyond any clinical field of view on at least one side (above, the mask stops at the
#: brainstem; below, at the conus): a "cord" that comes within :data:`END_MARGIN_MM` of neither end of the image
#: along its own axis and covers less than :data:`MIN_FOV_SHARE` of it is an isolated blob (a patch of brain).
END_MARGIN_MM = 10.0
MIN_FOV_SHARE = 0.3


def check_cord_plausible(cord: np.ndarray, affine: np.ndarray, centerline: "Centerline") -> None:
    """Raise :class:`CenterlineError` when the cord mask cannot be a spinal cord (too thin, too thick, too short,
    or an isolated blob in the middle of the field of view)."""
    volume = float(np.count_nonzero(cord)) * voxel_volume(affine)
    length = max(centerline.length_mm, 1e-6)
    area = volume / length
    if length < MIN_CORD_LENGTH_MM or not MIN_CORD_AREA_MM2 <= area <= MAX_CORD_AREA_MM2:
        raise CenterlineError(
            f"no spinal cord in the field of view: the only cord-like structure found measures {volume:.0f} mm3 "
            f"over {length:.0f} mm (mean cross-section {area:.0f} mm2; a spinal cord has 40-100 mm2 over "
            f"at least {MIN_CORD_LENGTH_MM:.0f} mm). Is this a spinal cord image?")
    # On its largest connected part: a cord is one structure, and scattered fragments (which the masks drop
    # later) must not make a blob look long.
    share, reaches_an_end = field_of_view_cover(largest_component(cord, CONNECTIVITY), affine, centerline)
    if not reaches_an_end and share < MIN_FOV_SHARE:
        raise CenterlineError(
            f"no spinal cord in the field of view: the only cord-like structure found covers {100 * share:.0f} % "
            f"of the image along its own axis and reaches neither end of it (a spinal cord runs on beyond the field "
            f"of view on at least one side). Is this a spinal cord image?")


def largest_component(mask: np.ndarray, structure: np.ndarray | None = None) -> np.ndarray:
    """The largest connected part of ``mask`` (``structure``: scipy's connectivity, faces only by default)."""
    labels, n = ndimage.label(mask, structure)
    if n <= 1:
        return np.asarray(mask, bool)
    return labels == 1 + int(np.argmax(np.bincount(labels.ravel())[1:]))


def field_of_view_cover(cord: np.ndarray, affine: np.ndarray, centerline: "Centerline") -> tuple[float, bool]:
    """Along the image axis closest to the cord's direction: the share of the image the mask covers, and whether
    it comes within :data:`END_MARGIN_MM` of either end."""
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    direction = np.linalg.solve(affine[:3, :3], centerline.points[-1] - centerline.points[0]) * zooms
    axis = int(np.argmax(np.abs(direction)))
    present = np.flatnonzero(np.any(cord, axis=tuple(a for a in range(3) if a != axis)))
    n = cord.shape[axis]
    if present.size == 0:
        return 0.0, False
    margin = END_MARGIN_MM / zooms[axis]
    return (present[-1] - present[0] + 1) / n, bool(present[0] <= margin or present[-1] >= n - 1 - margin)


@dataclass
class Centerline:
    """A smooth cord centreline sampled every ``step_mm`` of arc length.

    ``points`` (N, 3) are scanner millimetres (RAS), ordered from inferior to
    superior; ``tangents``, ``normals`` and ``binormals`` (N, 3) form
    rotation-minimising orthonormal frames (no twist along the cord).
    """

    points: np.ndarray
    tangents: np.ndarray
    normals: np.ndarray
    binormals: np.ndarray
    step_mm: float

    @property
    def length_mm(self) -> float:
        return float((len(self.points) - 1) * self.step_mm)


def _slice_axis(affine: np.ndarray, coords_mm: np.ndarray) -> int:
    """The voxel axis closest to the cord's main direction (first principal component)."""
    centred = coords_mm - coords_mm.mean(axis=0)
    _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 20000)], full_matrices=False)
    main = vt[0]
    axes = affine[:3, :3] / np.linalg.norm(affine[:3, :3], axis=0)
    return int(np.argmax(np.abs(main @ axes)))


def centerline_samples(prob: np.ndarray, affine: np.ndarray, threshold: float = 0.5,
                       min_voxels: int = 3) -> np.ndarray:
    """Weighted cord centroid of every slice across the cord's main axis, in mm.

    Only the largest connected component is used, so specks elsewhere do not
    pull the centreline; slices without cord (gaps) are skipped.
    """
    mask = np.asarray(prob) >= threshold
    if not mask.any():
        raise CenterlineError("no voxel above threshold: no spinal cord in the field of view")
    mask = largest_component(mask)
    idx = np.argwhere(mask)
    coords = idx @ affine[:3, :3].T + affine[:3, 3]
    axis = _slice_axis(affine, coords)
    weights = np.where(mask, np.asarray(prob, dtype=float), 0.0)
    samples = []
    for k in np.unique(idx[:, axis]):
        sel = idx[:, axis] == k
        if sel.sum() < min_voxels:
            continue
        pts = idx[sel]
        w = weights[tuple(pts.T)]
        centre_vox = (pts * w[:, None]).sum(axis=0) / max(w.sum(), 1e-9)
        samples.append(affine[:3, :3] @ centre_vox + affine[:3, 3])
    if len(samples) < MIN_SAMPLES:
        raise CenterlineError(f"the cord spans only {len(samples)} slices; at least {MIN_SAMPLES} are needed")
    return np.asarray(samples)


def _reject_outliers(points: np.ndarray, t: np.ndarray, smooth: float) -> np.ndarray:
    """Drop samples far from a heavily smoothed fit (e.g. brainstem widening, mis-segmentation)."""
    keep = np.ones(len(points), bool)
    for _ in range(2):
        fit = np.stack([_smooth(t[keep], points[keep, d], smooth * 4)(t) for d in range(3)], axis=1)
        resid = np.linalg.norm(points - fit, axis=1)
        mad = np.median(np.abs(resid[keep] - np.median(resid[keep]))) + 1e-6
        keep = resid <= np.median(resid[keep]) + 5 * 1.4826 * mad + 1.0
    return keep


def _smooth(t: np.ndarray, y: np.ndarray, lam: float | None):
    """Cubic smoothing spline; ``lam=None`` picks the smoothness by generalised cross-validation."""
    return interpolate.make_smoothing_spline(t, y, lam=lam)


def min_smoothing(t: np.ndarray, wavelength_mm: float = MIN_BEND_WAVELENGTH_MM) -> float:
    """Smoothing parameter whose cut-off wavelength is ``wavelength_mm`` for samples at ``t`` (mm).

    The spline minimises sum (y_i - f(t_i))^2 + lam * integral f''^2; with ``rho``
    samples per mm a sine of angular frequency w is damped by 1 / (1 + lam w^4 / rho),
    which is one half at ``lam = rho / w^4``.
    """
    length = float(t[-1] - t[0])
    rho = (len(t) - 1) / max(length, 1e-6)
    return rho * (wavelength_mm / (2 * np.pi)) ** 4


def _roughness(spline, t: np.ndarray) -> float:
    """Integral of the squared second derivative (a cubic spline's f'' is piecewise linear)."""
    dense = np.linspace(t[0], t[-1], max(64, 8 * len(t)))
    return float(np.trapezoid(spline.derivative(2)(dense) ** 2, dense))


def _smooth_at_least(t: np.ndarray, y: np.ndarray, lam: float | None):
    """:func:`_smooth`, but never rougher than the fit at :func:`min_smoothing` (the smoother of the two
    is the one with the larger smoothing parameter)."""
    if lam is not None:
        return _smooth(t, y, lam)
    floor = _smooth(t, y, min_smoothing(t))
    adaptive = _smooth(t, y, None)
    return adaptive if _roughness(adaptive, t) < _roughness(floor, t) else floor


def fit_centerline(samples: np.ndarray, step_mm: float = 1.0, lam: float | None = None) -> Centerline:
    """Smooth the samples, resample by arc length and build rotation-minimising frames."""
    samples = np.asarray(samples, float)
    if samples.ndim != 2 or samples.shape[1] != 3 or len(samples) < MIN_SAMPLES:
        raise CenterlineError(f"{len(samples)} centreline samples; at least {MIN_SAMPLES} are needed")
    # Order from inferior to superior along the main direction.
    main = samples[-1] - samples[0]
    if main[2] < 0:
        samples = samples[::-1]
    d = np.linalg.norm(np.diff(samples, axis=0), axis=1)
    t = np.concatenate([[0.0], np.cumsum(d)])
    keep = np.concatenate([[True], d > 1e-6])
    samples, t = samples[keep], t[keep]
    if len(samples) < MIN_SAMPLES:
        raise CenterlineError(f"{len(samples)} distinct centreline samples; at least {MIN_SAMPLES} are needed")
    if len(samples) >= 8:
        ok = _reject_outliers(samples, t, lam if lam is not None else 1.0)
        samples, t = samples[ok], t[ok]
        if len(samples) < MIN_SAMPLES:
            raise CenterlineError(f"only {len(samples)} centreline samples left after outliers were dropped; "
                                  f"at least {MIN_SAMPLES} are needed")
    splines = [_smooth_at_least(t, samples[:, k], lam) for k in range(3)]
    dense_t = np.linspace(t[0], t[-1], max(200, int((t[-1] - t[0]) / 0.1)))
    dense = np.stack([s(dense_t) for s in splines], axis=1)
    arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(dense, axis=0), axis=1))])
    n = max(2, int(np.floor(arc[-1] / step_mm)) + 1)
    targets = np.arange(n) * step_mm
    t_at = np.interp(targets, arc, dense_t)
    points = np.stack([s(t_at) for s in splines], axis=1)
    deriv = np.stack([s.derivative()(t_at) for s in splines], axis=1)
    tangents = deriv / np.linalg.norm(deriv, axis=1, keepdims=True)
    normals, binormals = rotation_minimizing_frames(points, tangents)
    return Centerline(points, tangents, normals, binormals, step_mm)


def rotation_minimizing_frames(points: np.ndarray, tangents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Double-reflection rotation-minimising frames along a sampled curve.

    The first normal points right (+x) as far as the tangent allows, so for a
    cord running upwards the binormal points anterior: in the straightened
    image 'u' is left-right and 'v' posterior-anterior.
    """
    n = len(points)
    normals = np.zeros_like(points)
    t0 = tangents[0]
    ref = np.array([1.0, 0.0, 0.0])  # right: straightened x stays left-right
    r0 = ref - (ref @ t0) * t0
    if np.linalg.norm(r0) < 1e-6:
        ref = np.array([0.0, 1.0, 0.0])
        r0 = ref - (ref @ t0) * t0
    normals[0] = r0 / np.linalg.norm(r0)
    for i in range(n - 1):
        v1 = points[i + 1] - points[i]
        c1 = v1 @ v1
        if c1 < 1e-12:
            normals[i + 1] = normals[i]
            continue
        r_l = normals[i] - (2 / c1) * (v1 @ normals[i]) * v1
        t_l = tangents[i] - (2 / c1) * (v1 @ tangents[i]) * v1
        v2 = tangents[i + 1] - t_l
        c2 = v2 @ v2
        r_next = r_l - (2 / c2) * (v2 @ r_l) * v2 if c2 > 1e-12 else r_l
        r_next -= (r_next @ tangents[i + 1]) * tangents[i + 1]
        normals[i + 1] = r_next / np.linalg.norm(r_next)
    binormals = np.cross(tangents, normals)
    return normals, binormals


def extract_centerline(prob: np.ndarray, affine: np.ndarray, step_mm: float = 1.0, threshold: float = 0.5,
                       lam: float | None = None) -> Centerline:
    """Centreline of a cord mask or probability map in any orientation and voxel size."""
    return fit_centerline(centerline_samples(prob, affine, threshold), step_mm=step_mm, lam=lam)


def plausible_centerline(prob: np.ndarray, affine: np.ndarray, threshold: float = 0.5) -> Centerline:
    """:func:`extract_centerline`, raising :class:`CenterlineError` when the cord cannot be a spinal cord."""
    centerline = extract_centerline(prob, affine, threshold=threshold)
    check_cord_plausible(prob >= threshold, affine, centerline)
    return centerline
