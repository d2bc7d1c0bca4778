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

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..core.centerline import extract_centerline

#: Version of the rules below: a dataset of inserted lesions made by other rules is another dataset.
#: 1: ellipsoids anywhere in the cord, intensity scaled voxel by voxel; 2: the rules of this module.
INSERTION_VERSION = 2

#: Lesion intensity relative to the local white matter, (low, high) of ``lesion / WM - 1``, per image
#: suffix. Ordered as the literature ranks lesion conspicuity in the cord: PSIR highest, STIR above T2*w
#: gradient echo, T2w fast spin echo lowest of the bright ones, T1w (MPRAGE) faint; MT faint.
LESION_CONTRAST: dict[str, tuple[float, float]] = {
    "PSIR": (-0.6, -0.3),
    "STIR": (0.4, 1.0),
    "T2starw": (0.3, 0.8),
    "T2w": (0.25, 0.7),
    "T1w": (-0.35, -0.1),
    "MTS": (0.1, 0.3),
}

#: Share of lesions per white-matter column (lateral and dorsal columns hold most MS cord lesions).
COLUMN_WEIGHTS: dict[str, float] = {"lateral": 0.45, "dorsal": 0.40, "ventral": 0.15}
#: Direction of each column in the cord's cross-section (radians; 0 towards +x of the image, pi/2 anterior).
_COLUMN_ANGLES = {"lateral": (0.0, np.pi), "dorsal": (-np.pi / 2,), "ventral": (np.pi / 2,)}
#: Length along the cord, mm (drawn log-uniformly: short lesions are the most frequent).
LENGTH_RANGE_MM = (3.0, 30.0)
#: Share of the cord's cross-section a lesion's widest section covers.
AREA_FRACTION_RANGE = (0.08, 0.45)
#: Share of oval lesions that reach the cord surface (wedges always do).
TOUCHES_SURFACE = 0.6
#: Share of wedge-shaped lesions (the others are oval).
WEDGE_FRACTION = 0.35


@dataclass
class LesionGeometry:
    """One lesion in the cross-section frame of the cord at its centre.

    ``angle`` points from the cord's centre to the lesion (0: +x of the image, pi/2: anterior);
    ``centre_mm`` is the distance of the lesion's centre (oval) or apex (wedge) from the cord's centre;
    ``half_width_mm`` its half extent across that direction (for a wedge: at the surface),
    ``half_depth_mm`` along it (for a wedge: apex to surface); ``half_length_mm`` along the cord.
    """

    column: str
    shape: str
    angle: float
    centre_mm: float
    half_width_mm: float
    half_depth_mm: float
    half_length_mm: float
    touches_surface: bool
    contrast: float


def _boundary_radius(angle: float, r_lr: float, r_ap: float) -> float:
    """Distance from the centre of an elliptic cross-section to its edge in direction ``angle``."""
    return float(1.0 / np.sqrt((np.cos(angle) / r_lr) ** 2 + (np.sin(angle) / r_ap) ** 2))


def draw_lesion_geometry(rng: np.random.Generator, r_lr: float, r_ap: float, suffix: str) -> LesionGeometry:
    """Draw a lesion's column, shape, size and contrast for a cord of cross-section half axes
    ``r_lr`` x ``r_ap`` mm."""
    if suffix not in LESION_CONTRAST:
        raise ValueError(f"no lesion contrast defined for suffix {suffix!r}; known: {sorted(LESION_CONTRAST)}")
    columns = list(COLUMN_WEIGHTS)
    column = columns[int(rng.choice(len(columns), p=np.array([COLUMN_WEIGHTS[c] for c in columns])))]
    angle = float(rng.choice(_COLUMN_ANGLES[column]) + rng.normal(0.0, np.radians(18)))
    radius = _boundary_radius(angle, r_lr, r_ap)
    area = rng.uniform(*AREA_FRACTION_RANGE) * np.pi * r_lr * r_ap
    half_length = 0.5 * float(np.exp(rng.uniform(*np.log(LENGTH_RANGE_MM))))
    contrast = float(rng.uniform(*LESION_CONTRAST[suffix]))
    if rng.random() < WEDGE_FRACTION:
        # Apex inside, base on the surface: a triangle of area width x depth.
        depth = rng.uniform(0.45, 0.85) * radius
        # A wedge opens by at most about 70 degrees: a wider one would be a crescent along the surface.
        half_width = min(area / depth, 0.6 * radius)
        return LesionGeometry(column, "wedge", angle, radius - depth, half_width, depth, half_length, True, contrast)
    aspect = rng.uniform(0.6, 1.4)  # radial / tangential half axis
    half_width = float(np.sqrt(area / (np.pi * aspect)))
    half_depth = min(aspect * half_width, 0.8 * radius)
    touches = bool(rng.random() < TOUCHES_SURFACE)
    centre = radius - 0.7 * half_depth if touches else rng.uniform(0.25, 0.9) * max(radius - half_depth - 0.3, 0.0)
    return LesionGeometry(column, "oval", angle, float(centre), half_width, float(half_depth), half_length,
                          touches, contrast)


def lesion_level(along: np.ndarray, across: np.ndarray, radial: np.ndarray, geom: LesionGeometry) -> np.ndarray:
    """Level function of a lesion, <= 1 inside: ``along`` the cord from its centre, ``across`` and ``radial``
    in its cross-section (``radial`` from the cord's centre towards the lesion), all in mm."""
    taper = np.sqrt(np.clip(1.0 - (along / geom.half_length_mm) ** 2, 0.0, 1.0))  # narrower towards the ends
    ends = np.abs(along) / geom.half_length_mm
    if geom.shape == "oval":
        across_q = np.abs(across) / np.maximum(geom.half_width_mm * taper, 1e-3)
        radial_q = np.abs(radial - geom.centre_mm) / np.maximum(geom.half_depth_mm * taper, 1e-3)
        return np.maximum(np.sqrt(across_q**2 + radial_q**2), ends)
    surface = geom.centre_mm + geom.half_depth_mm
    apex = surface - geom.half_depth_mm * taper  # shallower towards the ends
    depth = np.maximum(surface - apex, 1e-3)
    u = np.clip((radial - apex) / depth, 0.0, None)  # 0 at the apex, 1 at the surface
    across_q = np.abs(across) / (geom.half_width_mm * taper * u + 0.3)
    radial_q = 1.0 + (apex - radial)  # rises by 1 per mm inside the apex
    return np.maximum(np.maximum(across_q, radial_q), ends)


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
    voxel_mm3 = float(abs(np.linalg.det(affine[:3, :3])))
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
