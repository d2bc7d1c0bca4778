"""Cord cross-sectional area (CSA) per slice and per vertebral level, from a binary cord mask.

The area of the cord in each slice across the cord's main axis is corrected for the cord's angle to that
slice: a slice cut obliquely through a tilted cord is larger than the cord's true cross-section by
1 / cos(angle), where the angle is between the centreline's tangent and the slice normal.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Iterable

import numpy as np

from .image import voxel_volume
from .centerline import Centerline, CenterlineError, _slice_axis, extract_centerline

#: Vertebral level names by label (C1 = 1 ... C7 = 7, T1 = 8 ... T12 = 19, L1 = 20 ... L5 = 24).
LEVEL_NAMES = {**{k: f"C{k}" for k in range(1, 8)}, **{k: f"T{k - 7}" for k in range(8, 20)},
               **{k: f"L{k - 19}" for k in range(20, 25)}}


def level_name(label: int) -> str:
    return LEVEL_NAMES.get(int(label), str(label))


@dataclass
class CsaSlice:
    slice_index: int  # index along the voxel axis closest to the cord's direction
    centroid_x_mm: float
    centroid_y_mm: float
    centroid_z_mm: float
    distance_from_top_mm: float | str  # along the centreline from the highest cord point ("n/a" without one)
    csa_mm2: float  # angle-corrected cross-sectional area
    slice_area_mm2: float  # cord area in the slice, uncorrected
    angle_deg: float  # between the cord's tangent and the slice normal
    vertebral_level: str  # level name at the slice's centroid ("n/a" without a level map)

    def as_row(self) -> dict:
        return asdict(self)


CSA_COLUMNS = tuple(CsaSlice.__dataclass_fields__)
LEVEL_COLUMNS = ("vertebral_level", "n_slices", "length_mm", "csa_mean_mm2", "csa_sd_mm2", "angle_mean_deg",
                 "cord_volume_mm3")


def slicing(cord: np.ndarray, affine: np.ndarray) -> tuple[int, np.ndarray, float, float]:
    """(voxel axis across which the cord is sliced, slice normal, voxel face area mm2, slice spacing mm)."""
    idx = np.argwhere(np.asarray(cord) > 0)
    axis = _slice_axis(affine, idx @ affine[:3, :3].T + affine[:3, 3])
    others = [a for a in range(3) if a != axis]
    face = np.cross(affine[:3, others[0]], affine[:3, others[1]])
    face_area = float(np.linalg.norm(face))
    spacing = voxel_volume(affine) / face_area
    return axis, face / face_area, face_area, spacing


def cord_csa(cord: np.ndarray, affine: np.ndarray, centerline: Centerline | None = None,
             levels: np.ndarray | None = None, weights: np.ndarray | None = None) -> list[CsaSlice]:
    """Angle-corrected CSA of every slice that holds cord, inferior to superior order of the voxel axis.

    ``cord`` is a binary mask on the grid of ``affine``; ``levels`` an integer level map on the same grid
    (0 outside). Without a ``centerline`` one is fitted to the mask; if none can be, the angle is taken as
    zero and ``distance_from_top_mm`` is ``n/a``. ``weights`` (same grid, 0-1), when given, is the share of
    each mask voxel that is cord (e.g. a cord probability): a slice's area is then their sum, not the count.
    """
    cord = np.asarray(cord) > 0
    idx = np.argwhere(cord)
    if len(idx) == 0:
        return []
    coords = idx @ affine[:3, :3].T + affine[:3, 3]
    axis, normal, face_area, _ = slicing(cord, affine)
    if centerline is None:
        try:
            centerline = extract_centerline(cord.astype(np.float32), affine)
        except CenterlineError:
            centerline = None
    rows = []
    for k in np.unique(idx[:, axis]):
        sel = idx[:, axis] == k
        centroid = coords[sel].mean(axis=0)
        area = (float(sel.sum()) if weights is None else float(weights[tuple(idx[sel].T)].sum())) * face_area
        cos, position = 1.0, "n/a"
        if centerline is not None:
            j = int(np.argmin(np.linalg.norm(centerline.points - centroid, axis=1)))
            cos = float(abs(centerline.tangents[j] @ normal))
            position = round(float((len(centerline.points) - 1 - j) * centerline.step_mm), 2)
        level = "n/a"
        if levels is not None:
            values = levels[tuple(idx[sel].T)]
            values = values[values > 0]
            if len(values):
                level = level_name(int(np.bincount(values.astype(int)).argmax()))
        rows.append(CsaSlice(int(k), *(round(float(c), 2) for c in centroid), position, round(area * cos, 2),
                             round(area, 2), round(float(np.degrees(np.arccos(min(cos, 1.0)))), 2), level))
    return rows


def csa_by_level(rows: list[CsaSlice], spacing_mm: float) -> list[dict]:
    """Mean CSA, length and cord volume per vertebral level, superior level first.

    ``spacing_mm`` is the distance between slices along their normal (:func:`slicing`).
    """
    by_level: dict[str, list[CsaSlice]] = {}
    for row in rows:
        if row.vertebral_level != "n/a":
            by_level.setdefault(row.vertebral_level, []).append(row)
    order = {name: label for label, name in LEVEL_NAMES.items()}
    out = []
    for name in sorted(by_level, key=lambda n: order.get(n, 99)):
        sel = by_level[name]
        csa = np.array([r.csa_mm2 for r in sel])
        # A slab of thickness d across a cord tilted by a covers d / cos(a) of the cord's length.
        length = float(sum(spacing_mm / max(np.cos(np.radians(r.angle_deg)), 0.2) for r in sel))
        out.append({"vertebral_level": name, "n_slices": len(sel), "length_mm": round(length, 2),
                    "csa_mean_mm2": round(float(csa.mean()), 2),
                    "csa_sd_mm2": round(float(csa.std(ddof=1)) if len(csa) > 1 else 0.0, 2),
                    "angle_mean_deg": round(float(np.mean([r.angle_deg for r in sel])), 2),
                    "cord_volume_mm3": round(float(sum(r.slice_area_mm2 for r in sel) * spacing_mm), 2)})
    return out


def mean_csa(slices: Iterable[tuple[str, float]], level_names: tuple[str, ...] = ("C2", "C3")) -> float | str:
    """Mean CSA over the slices, given as (level, CSA) pairs, of the given levels (default C2-C3, the usual
    atrophy measure); n/a if none."""
    values = [csa for level, csa in slices if level in level_names]
    return round(float(np.mean(values)), 2) if values else "n/a"
