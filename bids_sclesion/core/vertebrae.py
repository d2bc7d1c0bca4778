"""Intervertebral discs along the cord and the vertebral level map of the cord.

Discs are found on a 1-D profile: the image intensity in a band in front of the cord (where vertebral
bodies and discs alternate), sampled along the cord's centreline and continued 60 mm above the cord's top
into the skull base. The profile, normalised by its local mean and spread, is matched against the same
profile of the PAM50 template (``data/vertebrae/pam50_anterior_profile.json``, made by
``scripts/make_disc_template.py``), stretched by 0.8-1.25 to fit each person's size; the template's discs
then fall on the image's. The match needs at least 100 mm of profile (a short axial slab gets no levels:
a wrong level is worse than none), a correlation of at least :data:`MIN_MATCH`, and the C2/C3 disc within
the cord's extent (below C2 one vertebra looks much like the next) and no further below the cord's top than the
skull base can be (:data:`MAX_CORD_ABOVE_ANCHOR_MM`).

Disc labels follow the Spinal Cord Toolbox: label n is the disc above vertebra n (C1/C2 = 2, C2/C3 = 3,
..., C7/T1 = 8, T1/T2 = 9); level n of the cord lies between disc n and disc n + 1 (C1 = 1, ..., T1 = 8).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

import numpy as np
from scipy import ndimage

from .centerline import Centerline

#: The band sampled in front of the cord's centre (mm anterior, and half-width left-right).
BAND_ANTERIOR_MM = (9.0, 22.0)
BAND_HALF_WIDTH_MM = 4.0
#: The profile continues this far above the top of the cord mask (skull base, C1, dens).
EXTENSION_MM = 60.0
#: Window of the local normalisation (mm).
NORMALISE_WINDOW_MM = 25.0
#: Stretch of the template to each person (ratio of their disc spacing to PAM50's).
SCALES = np.round(np.arange(0.80, 1.2501, 0.02), 2)
#: Least profile length matched (mm) and least correlation for the levels to be given.
MIN_OVERLAP_MM = 100.0
MIN_MATCH = 0.35
#: Least lead of the best fit over any fit that numbers the vertebrae differently (see :func:`match_margin`).
MIN_MARGIN = 0.05
TEMPLATE_FILE = "pam50_anterior_profile.json"
#: The disc a template match must include for its levels to be given (C2/C3).
ANCHOR_DISC = 3
#: Most cord (mm along it, at the template's size: scaled by the match) a match may leave above its C2/C3 disc.
#: From that disc to the foramen magnum is about two vertebrae (~40 mm) and cord masks stop at the medulla:
#: 23-41 mm on realistic phantoms numbered right and on the real 3D T2w (manual and app cords). A match that
#: leaves more has put C2/C3 whole vertebrae too low, as on phantoms whose skull base is out of view (74 and
#: 117 mm: numbered wrongly before this check, docs/morphometry.md).
MAX_CORD_ABOVE_ANCHOR_MM = 60.0


@dataclass
class Disc:
    label: int  # SCT numbering: 3 = C2/C3
    position_mm: float  # arc length along the centreline from its inferior end
    point_mm: tuple[float, float, float]  # on the centreline, scanner RAS mm


@dataclass
class DiscMatch:
    discs: list[Disc]
    correlation: float  # of the normalised profiles at the best fit
    scale: float  # this person's disc spacing / the template's
    method: str  # "template" or "user"
    margin: float = 0.0  # correlation of the best fit minus that of the best fit numbering differently


class NoDiscFound(ValueError):
    """No disc, or no reliable match of the discs, in the field of view."""


def band_samples(image: np.ndarray, affine: np.ndarray, centerline: Centerline, depths_mm: np.ndarray,
                 widths_mm: np.ndarray) -> np.ndarray:
    """Image values across the cord at each centreline point, at ``depths_mm`` (+ anterior) x ``widths_mm``
    (left-right) from its centre: (points, depths, widths), linear interpolation, NaN outside the image."""
    anterior = np.array([0.0, 1.0, 0.0])  # RAS: +y is anterior
    t = centerline.tangents
    a = anterior[None, :] - (t @ anterior)[:, None] * t
    a /= np.linalg.norm(a, axis=1, keepdims=True) + 1e-9
    lateral = np.cross(t, a)
    d, w = np.meshgrid(depths_mm, widths_mm, indexing="ij")
    pts = (centerline.points[:, None, :] + d.ravel()[None, :, None] * a[:, None, :]
           + w.ravel()[None, :, None] * lateral[:, None, :])
    inv = np.linalg.inv(affine)
    vox = pts.reshape(-1, 3) @ inv[:3, :3].T + inv[:3, 3]
    inside = np.all((vox > -0.5) & (vox < np.array(image.shape[:3]) - 0.5), axis=1)
    values = ndimage.map_coordinates(np.asarray(image, np.float32), vox.T, order=1, mode="nearest")
    return np.where(inside, values, np.nan).reshape(len(centerline.points), len(depths_mm), len(widths_mm))


def anterior_profile(image: np.ndarray, affine: np.ndarray, centerline: Centerline) -> np.ndarray:
    """Mean intensity of the band in front of the cord at each centreline point (NaN outside the image)."""
    depths = np.arange(BAND_ANTERIOR_MM[0], BAND_ANTERIOR_MM[1] + 1e-6, 1.0)
    widths = np.arange(-BAND_HALF_WIDTH_MM, BAND_HALF_WIDTH_MM + 1e-6, 1.0)
    values = band_samples(image, affine, centerline, depths, widths).reshape(len(centerline.points), -1)
    enough = np.mean(np.isfinite(values), axis=1) >= 0.5
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # points wholly outside the image: NaN, as meant
        profile = np.nanmean(values, axis=1)
    return np.where(enough, profile, np.nan)


def extend_centerline(centerline: Centerline, above_mm: float = EXTENSION_MM) -> Centerline:
    """The centreline continued straight above its superior end, along its last tangent."""
    n = int(round(above_mm / centerline.step_mm))
    t = centerline.tangents[-1]
    extra = centerline.points[-1] + np.arange(1, n + 1)[:, None] * centerline.step_mm * t
    rep = lambda v: np.vstack([v, np.repeat(v[-1][None], n, axis=0)])  # noqa: E731
    return Centerline(np.vstack([centerline.points, extra]), rep(centerline.tangents), rep(centerline.normals),
                      rep(centerline.binormals), centerline.step_mm)


def normalise_profile(profile: np.ndarray, step_mm: float = 1.0) -> np.ndarray:
    """Local z-score (running mean and spread over :data:`NORMALISE_WINDOW_MM`), lightly smoothed; NaN kept."""
    valid = np.isfinite(profile)
    if valid.sum() < 2:
        return np.full(len(profile), np.nan)
    filled = np.interp(np.arange(len(profile)), np.flatnonzero(valid), profile[valid])
    width = max(3, int(round(NORMALISE_WINDOW_MM / step_mm)))
    mean = ndimage.uniform_filter1d(filled, width)
    spread = np.sqrt(np.maximum(ndimage.uniform_filter1d((filled - mean) ** 2, width), 0.0)) + 1e-6
    out = ndimage.gaussian_filter1d((filled - mean) / spread, 1.0 / step_mm)
    out[~valid] = np.nan
    return out


@lru_cache(maxsize=1)
def disc_template() -> dict:
    """The bundled PAM50 profile: ``profile`` (normalised, 1 mm steps from its inferior end) and ``discs``."""
    text = (resources.files("bids_sclesion") / "data" / "vertebrae" / TEMPLATE_FILE).read_text()
    data = json.loads(text)
    data["profile"] = np.array([np.nan if v is None else v for v in data["profile"]], float)
    data["discs"] = {int(k): float(v) for k, v in data["discs"].items()}
    return data


def match_candidates(profile: np.ndarray, template: np.ndarray, step_mm: float = 1.0, sign: float = 1.0
                     ) -> np.ndarray:
    """Every fit tried, as rows (correlation, scale, offset_mm): image position s matches template position
    s / scale + offset.

    Both profiles are normalised and sampled every ``step_mm``; every stretch in :data:`SCALES` and every
    shift that overlaps at least :data:`MIN_OVERLAP_MM` is tried.
    """
    s = np.arange(len(profile)) * step_mm
    valid = np.isfinite(profile)
    t_axis = np.arange(len(template)) * step_mm
    t_filled = np.nan_to_num(template)
    t_valid = np.isfinite(template).astype(float)
    need = MIN_OVERLAP_MM / step_mm
    rows = []
    for scale in SCALES:
        u0 = s / scale
        for offset in np.arange(-u0[-1], t_axis[-1], step_mm):
            u = u0 + offset
            ok = valid & (u >= 0) & (u <= t_axis[-1])
            if ok.sum() < need:
                continue
            ok[ok] &= np.interp(u[ok], t_axis, t_valid) > 0.999
            if ok.sum() < need:
                continue
            x, y = profile[ok], sign * np.interp(u[ok], t_axis, t_filled)
            x, y = x - x.mean(), y - y.mean()
            rows.append((float((x @ y) / (np.sqrt((x @ x) * (y @ y)) + 1e-12)), float(scale), float(offset)))
    return np.array(rows) if rows else np.zeros((0, 3))


def match_template(profile: np.ndarray, template: np.ndarray, step_mm: float = 1.0, sign: float = 1.0
                   ) -> tuple[float, float, float]:
    """The best fit of :func:`match_candidates`: (correlation, scale, offset_mm)."""
    rows = match_candidates(profile, template, step_mm, sign)
    if len(rows) == 0:
        return (-np.inf, 1.0, 0.0)
    r, scale, offset = rows[int(np.argmax(rows[:, 0]))]
    return float(r), float(scale), float(offset)


def match_margin(rows: np.ndarray, anchor_u: float, min_shift_mm: float = 8.0) -> float:
    """How much better the best fit is than the best one that puts the anchor disc elsewhere.

    A fit maps template position ``anchor_u`` to image position (anchor_u - offset) * scale; fits that put it
    more than ``min_shift_mm`` away from the best fit's position would number the vertebrae differently.
    """
    best = rows[int(np.argmax(rows[:, 0]))]
    position = (anchor_u - rows[:, 2]) * rows[:, 1]
    other = np.abs(position - (anchor_u - best[2]) * best[1]) > min_shift_mm
    return float(best[0] - rows[other, 0].max()) if other.any() else float(best[0])


def find_discs(image: np.ndarray, affine: np.ndarray, centerline: Centerline) -> DiscMatch:
    """Discs along the cord from the PAM50 template's, matched on the band in front of the cord.

    Raises :class:`NoDiscFound` when the profile is too short or matches the template too poorly.
    """
    template = disc_template()
    step = centerline.step_mm
    extended = extend_centerline(centerline)
    profile = normalise_profile(anterior_profile(image, affine, extended), step)
    seen = float(np.isfinite(profile).sum() * step)
    if seen < MIN_OVERLAP_MM:
        raise NoDiscFound(f"only {seen:.0f} mm of the spine in front of the cord is in the field of view; at "
                          f"least {MIN_OVERLAP_MM:.0f} mm are needed to number the vertebrae")
    t_profile = np.interp(np.arange(0, len(template["profile"]) * template["step_mm"], step),
                          np.arange(len(template["profile"])) * template["step_mm"], template["profile"])
    # The template's sign on every contrast: in front of the cord a disc's posterior annulus is dark on all of
    # them, and real cervical discs are darker than the bodies there on T2w as on T1w. Reversing the sign for
    # T1-like contrasts put the discs of phantoms drawn after real anatomy half a vertebra off
    # (docs/morphometry.md), so the contrast does not enter the match.
    rows = match_candidates(profile, t_profile, step)
    if len(rows) == 0:
        raise NoDiscFound("the profile in front of the cord overlaps the template nowhere long enough")
    r, scale, offset = (float(v) for v in rows[int(np.argmax(rows[:, 0]))])
    margin = match_margin(rows, template["discs"][ANCHOR_DISC])
    if not r >= MIN_MATCH:
        raise NoDiscFound(f"the spine in front of the cord does not match the template well enough to number "
                          f"the vertebrae (correlation {r:.2f} < {MIN_MATCH})")
    if margin < MIN_MARGIN:
        raise NoDiscFound(f"the vertebrae could be numbered in more than one way (the best match, correlation "
                          f"{r:.2f}, beats one that shifts the levels by only {margin:.3f} < {MIN_MARGIN})")
    discs = []
    for label, u in sorted(template["discs"].items()):
        position = (u - offset) * scale
        if 0.0 <= position <= centerline.length_mm:
            discs.append(Disc(label, round(float(position), 2), _point(centerline, position)))
    if ANCHOR_DISC not in {d.label for d in discs}:
        # Below C2 one vertebra looks much like the next: a match there can be off by whole levels, so the
        # levels are only given when the match includes the craniocervical junction.
        raise NoDiscFound(f"the field of view does not show the C2/C3 disc with the cord (the match puts the "
                          f"cord's top near disc {max((d.label for d in discs), default='none')}); without it "
                          f"the levels could be off by whole vertebrae")
    above = centerline.length_mm - next(d.position_mm for d in discs if d.label == ANCHOR_DISC)
    if above > MAX_CORD_ABOVE_ANCHOR_MM * scale:
        raise NoDiscFound(f"the match leaves {above:.0f} mm of cord above its C2/C3 disc, more than the "
                          f"{MAX_CORD_ABOVE_ANCHOR_MM * scale:.0f} mm up to the skull base: the levels would be off by "
                          f"whole vertebrae (is the craniocervical junction in the field of view?)")
    return DiscMatch(discs, round(r, 3), scale, "template", round(margin, 3))


def discs_from_labels(labels: np.ndarray, affine: np.ndarray, centerline: Centerline) -> list[Disc]:
    """Discs from a label image (SCT style: one voxel per disc, value = disc label), put on the centreline."""
    discs = []
    for value in np.unique(labels[labels > 0]):
        ijk = np.argwhere(labels == value).mean(axis=0)
        point = affine[:3, :3] @ ijk + affine[:3, 3]
        k = int(np.argmin(np.linalg.norm(centerline.points - point, axis=1)))
        position = k * centerline.step_mm + float((point - centerline.points[k]) @ centerline.tangents[k])
        discs.append(Disc(int(value), round(position, 2), _point(centerline, position)))
    return sorted(discs, key=lambda d: d.label)


def _point(centerline: Centerline, position_mm: float) -> tuple[float, float, float]:
    k = int(np.clip(round(position_mm / centerline.step_mm), 0, len(centerline.points) - 1))
    return tuple(round(float(v), 2) for v in centerline.points[k])


def level_map(cord: np.ndarray, affine: np.ndarray, centerline: Centerline, discs: list[Disc],
              template_spacing: dict[int, float] | None = None) -> np.ndarray:
    """Vertebral level of every cord voxel (0 where no disc bounds it), from the discs' positions.

    A voxel between disc n (above) and disc n + 1 is level n. Above the highest disc n, level n - 1 for one
    segment; below the lowest disc m, level m for one segment (the segment lengths from the template's
    spacing scaled to this person, 16 mm by default); beyond that 0.
    """
    out = np.zeros(cord.shape, np.uint8)
    idx = np.argwhere(np.asarray(cord) > 0)
    if len(idx) == 0 or not discs:
        return out
    from scipy.spatial import cKDTree

    pts = idx @ affine[:3, :3].T + affine[:3, 3]
    # Position of each voxel along the cord: its projection on the nearest centreline point's tangent.
    _, k = cKDTree(centerline.points).query(pts)
    s = k * centerline.step_mm + np.einsum("ij,ij->i", pts - centerline.points[k], centerline.tangents[k])
    discs = sorted(discs, key=lambda d: -d.position_mm)  # superior first
    spacing = template_spacing or {}
    levels = np.zeros(len(s), np.uint8)
    top, low = discs[0], discs[-1]
    if top.label > 1:
        levels[(s > top.position_mm) & (s <= top.position_mm + spacing.get(top.label - 1, 16.0))] = top.label - 1
    for upper, lower in zip(discs, discs[1:]):
        levels[(s <= upper.position_mm) & (s > lower.position_mm)] = upper.label
    levels[(s <= low.position_mm) & (s > low.position_mm - spacing.get(low.label, 16.0))] = low.label
    out[tuple(idx.T)] = levels
    return out


def segment_lengths(match: DiscMatch) -> dict[int, float]:
    """Length (mm) of each vertebral segment n (disc n to n + 1) for this person, from the template."""
    discs = disc_template()["discs"]
    return {k: (discs[k] - discs[k + 1]) * match.scale for k in discs if k + 1 in discs}
