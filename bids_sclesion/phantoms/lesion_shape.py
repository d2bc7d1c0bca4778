"""Shape rules of MS cord lesions, shared by the phantoms and the lesions inserted into real cords.

Drawn after what is published on MS cord lesions (docs/phantoms.md, "Lesions inserted into real cords"):
mostly in the lateral and dorsal white-matter columns, often reaching the cord surface, covering less than
half of the cross-section, 3 to 30 mm long, oval or wedge-shaped in axial view.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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


def wavy_field(seed: int, along: np.ndarray, across: np.ndarray, radial: np.ndarray,
               wavelength_mm: float = 4.0) -> np.ndarray:
    """Smooth random field of about unit standard deviation, a function of position only (the same lesion edge
    on every grid it is rendered on): a sum of plane waves of random directions and phases."""
    rng = np.random.default_rng(seed)
    field = np.zeros(np.broadcast(along, across, radial).shape)
    for _ in range(6):
        k = rng.normal(size=3)
        k *= 2 * np.pi / (wavelength_mm * rng.uniform(0.7, 1.4) * np.linalg.norm(k))
        field = field + np.cos(k[0] * along + k[1] * across + k[2] * radial + rng.uniform(0, 2 * np.pi))
    return field / np.sqrt(3.0)
