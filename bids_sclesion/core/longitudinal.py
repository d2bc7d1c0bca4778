"""Lesion change between two sessions of one subject, in straightened-cord space (numpy/scipy only).

Each session's image and lesion mask are resampled along its own cord
centreline (the cord becomes a straight column: u left-right, v
posterior-anterior, s along the cord from its inferior end). The two
straightened images are then registered by the shift along the cord that
maximises their normalised cross-correlation (fields of view and patient
position differ between sessions; the straightening has already removed the
cord's curvature), and lesions are matched by overlap in that common space.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from .centerline import extract_centerline
from .straighten import apply_points, straight_grid, straight_to_native_points

#: Volume ratios (later / earlier) beyond which a matched lesion is enlarging or shrinking:
#: a 50 % volume increase, as in the MS trial definitions of an enlarging lesion, and its inverse.
ENLARGING_RATIO = 1.5
SHRINKING_RATIO = 1 / 1.5
STATUSES = ("new", "enlarging", "stable", "shrinking", "disappeared")


@dataclass
class StraightSession:
    image: np.ndarray  # (nu, nv, ns) intensities, NaN outside the field of view
    lesion: np.ndarray  # (nu, nv, ns) bool
    cord: np.ndarray  # (nu, nv, ns) bool
    spacing_mm: tuple[float, float, float]

    @property
    def voxel_mm3(self) -> float:
        return float(np.prod(self.spacing_mm))


@dataclass
class LesionChange:
    status: str  # one of STATUSES
    earlier_volume_mm3: float
    later_volume_mm3: float
    position_mm: float  # along the cord, from the top of the later session's cord (earlier for disappeared)
    earlier_components: int  # connected lesions involved (a lesion may split or merge)
    later_components: int

    def as_row(self) -> dict:
        return asdict(self)


def straighten_session(image: np.ndarray, cord: np.ndarray, lesion: np.ndarray, affine: np.ndarray,
                       radius_mm: float = 12.0, spacing_mm=(0.5, 0.5, 1.0)) -> StraightSession:
    """Image and lesion mask resampled on the straightened grid of the cord mask."""
    centerline = extract_centerline(cord.astype(np.float32), affine)
    grid = straight_grid(centerline, radius_mm, spacing_mm)
    points = straight_to_native_points(centerline, grid)
    straight_image = apply_points(np.asarray(image, np.float32), affine, points, order=1, cval=np.nan)
    straight_lesion = apply_points(lesion.astype(np.float32), affine, points, order=0) > 0.5
    straight_cord = apply_points(cord.astype(np.float32), affine, points, order=1) > 0.5
    return StraightSession(straight_image, straight_lesion, straight_cord, tuple(float(s) for s in grid.spacing_mm))


def _standardise(profile: np.ndarray) -> np.ndarray:
    finite = np.isfinite(profile)
    out = np.zeros_like(profile, dtype=np.float32)
    if finite.any():
        values = profile[finite]
        out[finite] = (values - values.mean()) / (values.std() + 1e-6)
    return out


def register_along_cord(earlier: StraightSession, later: StraightSession, min_overlap: float = 0.5) -> int:
    """Shift ``d`` (slices) such that the later session's slice ``k`` lies at the earlier session's ``k + d``.

    Chosen by normalised cross-correlation of the straightened images over
    every shift that leaves at least ``min_overlap`` of the shorter cord in
    common. Vertebrae repeat along the cord, so a short overlap can correlate
    by chance one or more levels away: the score is weighted towards larger
    overlaps (follow-up scans cover mostly the same segment).
    """
    a = _standardise(earlier.image[::2, ::2])
    b = _standardise(later.image[::2, ::2])
    va, vb = np.isfinite(earlier.image[::2, ::2]), np.isfinite(later.image[::2, ::2])
    n1, n2 = a.shape[2], b.shape[2]
    need = max(5, int(min_overlap * min(n1, n2)))
    best, best_shift = -np.inf, 0
    for d in range(-(n2 - need), n1 - need + 1):
        k0, k1 = max(0, -d), min(n2, n1 - d)
        if k1 - k0 < need:
            continue
        both = va[:, :, k0 + d:k1 + d] & vb[:, :, k0:k1]
        if both.sum() < 100:
            continue
        x, y = a[:, :, k0 + d:k1 + d][both], b[:, :, k0:k1][both]
        x, y = x - x.mean(), y - y.mean()
        score = float((x * y).sum() / (np.sqrt((x * x).sum() * (y * y).sum()) + 1e-9))
        score *= ((k1 - k0) / min(n1, n2)) ** 0.25
        if score > best:
            best, best_shift = score, d
    return best_shift


def match_lesions(earlier: StraightSession, later: StraightSession, shift: int,
                  tolerance_voxels: int = 2) -> list[LesionChange]:
    """Lesion changes once the later session is shifted by ``shift`` slices.

    Lesions whose dilated masks overlap are one group (splits and merges
    stay together); a group with lesions on both sides is enlarging,
    shrinking or stable by its volume ratio; lesions without a partner are
    new or disappeared. Lesions outside the slices both sessions cover are
    not compared.
    """
    n1, n2 = earlier.lesion.shape[2], later.lesion.shape[2]
    lo, hi = max(0, shift), min(n1, n2 + shift)  # common slices, earlier coordinates
    if hi <= lo:
        return []
    # Both masks on the common slices of the earlier session's grid.
    e = earlier.lesion[:, :, lo:hi]
    l_ = later.lesion[:, :, lo - shift:hi - shift]
    e_lab, ne = ndimage.label(e, np.ones((3, 3, 3)))
    l_lab, nl = ndimage.label(l_, np.ones((3, 3, 3)))
    # Overlap graph between components (after a small dilation: re-segmentation jitter).
    pairs = set()
    if ne and nl:
        grown = ndimage.grey_dilation(e_lab, size=(2 * tolerance_voxels + 1,) * 3)
        both = (grown > 0) & (l_lab > 0)
        pairs = set(zip(grown[both].tolist(), l_lab[both].tolist()))
        grown_l = ndimage.grey_dilation(l_lab, size=(2 * tolerance_voxels + 1,) * 3)
        both = (grown_l > 0) & (e_lab > 0)
        pairs |= set(zip(e_lab[both].tolist(), grown_l[both].tolist()))
    parent = {("e", i): ("e", i) for i in range(1, ne + 1)}
    parent.update({("l", j): ("l", j) for j in range(1, nl + 1)})

    def find(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        parent[find(("e", i))] = find(("l", j))
    groups: dict = {}
    for node in parent:
        groups.setdefault(find(node), []).append(node)
    e_vol = np.bincount(e_lab.ravel(), minlength=ne + 1) * earlier.voxel_mm3
    l_vol = np.bincount(l_lab.ravel(), minlength=nl + 1) * later.voxel_mm3
    e_pos = ndimage.center_of_mass(e, e_lab, range(1, ne + 1)) if ne else []
    l_pos = ndimage.center_of_mass(l_, l_lab, range(1, nl + 1)) if nl else []
    ds_e, ds_l = earlier.spacing_mm[2], later.spacing_mm[2]
    changes = []
    for members in groups.values():
        es = [i for side, i in members if side == "e"]
        ls = [j for side, j in members if side == "l"]
        v1, v2 = float(sum(e_vol[i] for i in es)), float(sum(l_vol[j] for j in ls))
        if ls:
            k = float(np.mean([l_pos[j - 1][2] for j in ls])) + lo - shift
            position = (n2 - 1 - k) * ds_l
        else:
            k = float(np.mean([e_pos[i - 1][2] for i in es])) + lo
            position = (n1 - 1 - k) * ds_e
        if not es:
            status = "new"
        elif not ls:
            status = "disappeared"
        elif v2 >= ENLARGING_RATIO * v1:
            status = "enlarging"
        elif v2 <= SHRINKING_RATIO * v1:
            status = "shrinking"
        else:
            status = "stable"
        changes.append(LesionChange(status, round(v1, 2), round(v2, 2), round(position, 1), len(es), len(ls)))
    return sorted(changes, key=lambda c: c.position_mm)


def compare_sessions(earlier: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
                     later: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> tuple[list[LesionChange], int]:
    """Lesion changes between two sessions given as (image, cord mask, lesion mask, affine).

    Returns the changes and the shift (mm along the cord) found by the registration.
    """
    a = straighten_session(*earlier)
    b = straighten_session(*later)
    shift = register_along_cord(a, b)
    return match_lesions(a, b, shift), shift * a.spacing_mm[2]


def count_changes(changes: list[LesionChange]) -> dict[str, int]:
    counts = {status: 0 for status in STATUSES}
    for change in changes:
        counts[change.status] += 1
    return counts
