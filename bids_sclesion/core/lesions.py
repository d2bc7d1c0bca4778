"""Post-processing of probabilities into masks, and per-lesion statistics."""
from __future__ import annotations

from dataclasses import dataclass, asdict

import numpy as np
from scipy import ndimage

from .image import voxel_volume
from .metrics import CONNECTIVITY

#: Smallest lesion the app reports by default (``--min-lesion-volume``); the training's validation uses it too.
DEFAULT_MIN_LESION_MM3 = 5.0
#: Probability above which a voxel is cord or lesion in the masks (``--threshold``).
DEFAULT_THRESHOLD = 0.5
#: Each lesion found at the threshold grows into the connected voxels down to this probability (``--grow-threshold``,
#: hysteresis): on real cords with inserted lesions the network's probability is often 0.3-0.5 around a core above
#: 0.5, so lesions came out at half their volume. The lowest value that stays within 0.02 lesion Dice of the phantom
#: test sets, where lower ones grow lesions past their true edge (docs/real_anatomy.md).
DEFAULT_GROW_THRESHOLD = 0.4


def threshold_masks(
    cord_prob: np.ndarray, lesion_prob: np.ndarray, threshold: float = DEFAULT_THRESHOLD, min_lesion_mm3: float = 0.0,
    voxel_mm3: float = 1.0, min_cord_fraction: float = 0.3, grow_threshold: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cord and lesion masks. Lesion components that do not touch the cord are
    removed (lesions are only reported inside the spinal cord), as are those
    smaller than ``min_lesion_mm3``; with ``grow_threshold`` (below ``threshold``) the
    kept lesions then grow by hysteresis (:func:`grow_lesions`). Kept lesions are added to the cord mask.
    Cord components smaller than ``min_cord_fraction`` of the largest are dropped."""
    cord = cord_prob >= threshold
    # Keep the largest cord components: blobs elsewhere (vessels, fat, other
    # tissue on real scans) are not cord; a cord broken by a gap keeps its big parts.
    lab, n = ndimage.label(cord, CONNECTIVITY)
    if n > 1:
        sizes = np.bincount(lab.ravel())[1:]
        keep = np.flatnonzero(sizes >= min_cord_fraction * sizes.max()) + 1
        cord = np.isin(lab, keep)
    lesion = lesion_prob >= threshold
    lab, n = ndimage.label(lesion, CONNECTIVITY)
    if n:
        in_cord = np.bincount(lab[cord].ravel(), minlength=n + 1)
        sizes = np.bincount(lab.ravel(), minlength=n + 1)
        # A component is kept when at least half of it lies in the cord.
        keep = np.flatnonzero((in_cord[1:] >= 0.5 * sizes[1:]) & (sizes[1:] * voxel_mm3 >= min_lesion_mm3)) + 1
        lesion = np.isin(lab, keep)
    if grow_threshold is not None and grow_threshold < threshold:
        lesion = grow_lesions(lesion, lesion_prob, grow_threshold)
    cord = cord | lesion
    return cord, lesion


def grow_lesions(lesion: np.ndarray, lesion_prob: np.ndarray, low: float) -> np.ndarray:
    """``lesion`` grown into the voxels connected to it whose probability reaches ``low`` (hysteresis).

    No lesion appears that ``lesion`` did not hold: a region above ``low`` without a lesion voxel stays out,
    so the count of lesions can fall (two grown into one) but never rise.
    """
    labels, _ = ndimage.label(lesion_prob >= low, CONNECTIVITY)
    touched = np.unique(labels[lesion])
    return np.isin(labels, touched[touched > 0]) | lesion


@dataclass
class LesionStats:
    lesion_id: int
    volume_mm3: float
    centroid_x_mm: float
    centroid_y_mm: float
    centroid_z_mm: float
    extent_along_cord_mm: float
    distance_from_top_mm: float | str  # along the centreline, from the highest cord point in the image
    cord_area_mm2: float | str  # cord cross-sectional area through the lesion's centroid
    vertebral_level: str  # level at the centroid, e.g. "C3" ("n/a" without a level there)
    vertebral_levels_spanned: str  # every level the lesion touches, superior first, e.g. "C3;C4" ("n/a": none)
    mean_probability: float
    max_probability: float
    confidence: float | str = "n/a"  # share of test-time copies that find the lesion ("n/a" without them)

    def as_row(self) -> dict:
        return asdict(self)


LESION_COLUMNS = tuple(LesionStats.__dataclass_fields__)


def lesion_table(lesion: np.ndarray, lesion_prob: np.ndarray, cord: np.ndarray, affine: np.ndarray,
                 copies: np.ndarray | None = None, threshold: float = DEFAULT_THRESHOLD,
                 levels: np.ndarray | None = None) -> list[LesionStats]:
    """One row per connected lesion, in scanner millimetres.

    The extent along the cord is measured along the local cord axis, the
    principal direction of the cord voxels within 20 mm of the lesion.
    ``copies`` (K, ...) are the lesion probabilities of K test-time
    augmented predictions: a lesion's confidence is the share of them in
    which at least one of its voxels reaches ``threshold``.
    """
    lab, n = ndimage.label(lesion, CONNECTIVITY)
    if n == 0:
        return []
    vox_mm3 = voxel_volume(affine)
    zooms = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    cord_idx = np.argwhere(cord)
    cord_mm = _to_mm(cord_idx, affine) if len(cord_idx) else np.zeros((0, 3))
    centerline = _centerline_or_none(cord, affine)
    slab_mm = 2.0 * float(zooms.max())
    rows = []
    objects = ndimage.find_objects(lab)
    for i, sl in enumerate(objects, start=1):
        local = lab[sl] == i
        idx = np.argwhere(local) + np.array([s.start for s in sl])
        pts = _to_mm(idx, affine)
        centroid = pts.mean(axis=0)
        axis = _local_cord_axis(cord_mm, centroid)
        proj = pts @ axis
        # Add one voxel's length along the axis so a one-voxel lesion has a size.
        voxel_len = float(np.abs(np.linalg.inv(affine[:3, :3]) @ axis).max() ** -1) if np.any(axis) else float(zooms.min())
        probs = lesion_prob[sl][local]
        position: float | str = "n/a"
        area: float | str = "n/a"
        if centerline is not None:
            k = int(np.argmin(np.linalg.norm(centerline.points - centroid, axis=1)))
            # Points run inferior -> superior: the top of the cord is the last one.
            position = round(float((len(centerline.points) - 1 - k) * centerline.step_mm), 2)
            along = (cord_mm - centerline.points[k]) @ centerline.tangents[k]
            area = round(float(np.count_nonzero(np.abs(along) < slab_mm / 2) * vox_mm3 / slab_mm), 2)
        level, spanned = lesion_levels(idx, centroid, affine, levels)
        confidence: float | str = "n/a"
        if copies is not None:
            found = [(c[sl][local] >= threshold).any() for c in copies]
            confidence = round(float(np.mean(found)), 4)
        rows.append(
            LesionStats(
                lesion_id=i,
                volume_mm3=round(len(idx) * vox_mm3, 2),
                centroid_x_mm=round(float(centroid[0]), 2),
                centroid_y_mm=round(float(centroid[1]), 2),
                centroid_z_mm=round(float(centroid[2]), 2),
                extent_along_cord_mm=round(float(proj.max() - proj.min() + voxel_len), 2),
                distance_from_top_mm=position,
                cord_area_mm2=area,
                vertebral_level=level,
                vertebral_levels_spanned=spanned,
                mean_probability=round(float(probs.mean()), 4),
                max_probability=round(float(probs.max()), 4),
                confidence=confidence,
            )
        )
    return rows


def lesion_levels(idx: np.ndarray, centroid_mm: np.ndarray, affine: np.ndarray,
                  levels: np.ndarray | None) -> tuple[str, str]:
    """(level at the centroid, levels spanned) of a lesion's voxels ``idx`` on a level map; n/a without one.

    The centroid's level is that of the nearest cord voxel with a level within 3 mm (a lesion centroid can
    fall just outside the cord mask, or on its edge).
    """
    from .morphometry import level_name

    if levels is None:
        return "n/a", "n/a"
    values = levels[tuple(np.asarray(idx).T)]
    touched = sorted({int(v) for v in values if v > 0})
    spanned = ";".join(level_name(v) for v in touched) if touched else "n/a"
    labelled = np.argwhere(levels > 0)
    if len(labelled) == 0:
        return "n/a", spanned
    mm = _to_mm(labelled, affine)
    distance = np.linalg.norm(mm - centroid_mm, axis=1)
    k = int(np.argmin(distance))
    level = level_name(int(levels[tuple(labelled[k])])) if distance[k] <= 3.0 else "n/a"
    return level, spanned


def annotate_levels(rows: list[dict], lesion: np.ndarray, affine: np.ndarray, levels: np.ndarray) -> list[dict]:
    """Lesion-table rows (dicts from its TSV) with their levels filled from a level map.

    Rows are matched to the lesion mask's components by ``lesion_id`` (the components are numbered as
    :func:`lesion_table` numbers them).
    """
    lab, n = ndimage.label(lesion, CONNECTIVITY)
    out = []
    for row in rows:
        i = int(row["lesion_id"])
        idx = np.argwhere(lab == i)
        if i > n or len(idx) == 0:
            raise ValueError(f"lesion {i} of the table is not in the lesion mask")
        level, spanned = lesion_levels(idx, _to_mm(idx, affine).mean(axis=0), affine, levels)
        out.append({**row, "vertebral_level": level, "vertebral_levels_spanned": spanned})
    return out


def voxel_uncertainty(copies: np.ndarray) -> np.ndarray:
    """Standard deviation of the lesion probability across test-time copies (0: they all agree)."""
    return np.asarray(copies, np.float32).std(axis=0)


def _centerline_or_none(cord: np.ndarray, affine: np.ndarray):
    """The cord's centreline, or None when the mask is too small to fit one."""
    from .centerline import CenterlineError, extract_centerline

    if np.count_nonzero(cord) < 20:
        return None
    try:
        return extract_centerline(cord.astype(np.float32), affine)
    except CenterlineError:
        return None


def _to_mm(idx: np.ndarray, affine: np.ndarray) -> np.ndarray:
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _local_cord_axis(cord_mm: np.ndarray, center: np.ndarray, radius: float = 20.0) -> np.ndarray:
    if len(cord_mm) >= 10:
        near = cord_mm[np.linalg.norm(cord_mm - center, axis=1) < radius]
        if len(near) >= 10:
            centered = near - near.mean(axis=0)
            _, _, vt = np.linalg.svd(centered, full_matrices=False)
            return vt[0] / np.linalg.norm(vt[0])
    return np.array([0.0, 0.0, 1.0])  # superior-inferior axis when the cord is not found


def table_to_tsv(rows: list[LesionStats]) -> str:
    lines = ["\t".join(LESION_COLUMNS)]
    for row in rows:
        d = row.as_row()
        lines.append("\t".join(str(d[c]) for c in LESION_COLUMNS))
    return "\n".join(lines) + "\n"
