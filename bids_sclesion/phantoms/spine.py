"""Vertebrae drawn after real anatomy (``bids_sclesion-synth --realistic-spine``).

The default phantoms draw every vertebra as the same block: a bright disc of one thickness between dark
endplates, and one bone from the skull base down to the C2/C3 disc. Seen in front of the cord (where
:mod:`bids_sclesion.core.vertebrae` looks for discs) that is a regular comb that matches a real spine's profile
in several places at once. This module draws, per disc and per vertebra:

- each disc's own height (cervical 4.5-6.5 mm, upper thoracic 3.5-5.5 mm) with a fibrous annulus (dark on
  every contrast) around a nucleus whose size varies: small or absent in many adult cervical discs
  (degeneration), larger in the thoracic ones, so a disc is dark on T2w where its nucleus is small;
- thin cortical endplates (0.8 mm) on each body;
- C2 as a body with the dens rising from it (13-17 mm), its tip 4-10 mm below the foramen magnum (the
  basion-dens interval of healthy adults), and C1's anterior arch in front of the dens, behind a thin joint.

Published dimensions: cervical disc and body heights, Gilad & Nissan 1986 (Spine 11:154); dens height,
Doherty & Heggeness 1995 (Spine 20:513); basion-dens interval, Harris et al. 1994 (AJR 162:881). ``docs/phantoms.md`` ("A spine drawn after real anatomy") shows the profiles.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Key of the random stream that the morphometry benchmark, the spine figure and the tests draw a realistic spine
#: from, beside the phantom subject's own seed (``rng([seed, REALISTIC_SPINE_STREAM])``).
REALISTIC_SPINE_STREAM = 4
#: Discs C2/C3 ... C7/T1 are cervical (the first six of ``Anatomy.disc_z``).
CERVICAL_DISCS = 6
ENDPLATE_MM = 0.8


@dataclass
class RealSpine:
    """Per-subject parameters of a spine drawn after real anatomy."""

    disc_half_heights: list[float]  # per disc of ``Anatomy.disc_z`` (mm)
    nucleus_fractions: list[float]  # nucleus radius / the body's, per disc (0: no bright nucleus)
    dens_height: float  # dens base to tip (mm)
    dens_tip_below_foramen: float  # basion-dens interval (mm)
    atlas_below_tip: float  # centre of C1's anterior arch below the dens tip (mm)
    atlas_half_height: float  # mm


def random_real_spine(rng: np.random.Generator, n_discs: int) -> RealSpine:
    """Draw a :class:`RealSpine` for a subject with ``n_discs`` discs below C2."""
    cervical = np.arange(n_discs) < CERVICAL_DISCS
    half = np.where(cervical, rng.uniform(2.25, 3.25, n_discs), rng.uniform(1.75, 2.75, n_discs))
    nucleus = np.where(cervical, rng.uniform(0.0, 0.5, n_discs), rng.uniform(0.3, 0.7, n_discs))
    return RealSpine(
        disc_half_heights=[round(float(h), 3) for h in half],
        nucleus_fractions=[round(float(f), 3) for f in nucleus],
        dens_height=float(rng.uniform(13.0, 17.0)),
        dens_tip_below_foramen=float(rng.uniform(4.0, 10.0)),
        atlas_below_tip=float(rng.uniform(7.0, 10.0)),
        atlas_half_height=float(rng.uniform(4.0, 5.5)),
    )


def nearest_disc(zs: np.ndarray, disc_z: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Per height: the index of the nearest disc and the signed distance to its centre (mm)."""
    zs, disc_z = np.asarray(zs, np.float64), np.asarray(disc_z, np.float64)
    k = np.argmin(np.abs(zs[:, None] - disc_z[None, :]), axis=1)
    return k, zs - disc_z[k]


def draw_real_vertebrae(labels: np.ndarray, spine: RealSpine, foramen_z: float, disc_z: list[float],
                        body_r: tuple[float, float], u: np.ndarray, v: np.ndarray, Z: np.ndarray, zs: np.ndarray,
                        body_v0: float | np.ndarray, tissue) -> np.ndarray:
    """Label the vertebral bodies, discs, dens and C1's anterior arch in ``labels`` (in place).

    ``u``, ``v`` are the cross-section coordinates around the cord (mm, v anterior), ``Z`` the heights
    broadcast against them and ``zs`` the 1-D heights; ``body_v0`` is the bodies' centre in v. Returns, per
    height, whether it lies within a disc's height or its endplate (the posterior arches are drawn between).
    """
    r_lr, r_ap = body_r
    k, signed = nearest_disc(zs, disc_z)
    dz = np.abs(signed)[None, None, :]
    half = np.asarray(spine.disc_half_heights, np.float64)[k][None, None, :]
    tip = foramen_z - spine.dens_tip_below_foramen
    dens_base = tip - spine.dens_height

    body_d = np.abs(u / r_lr) ** 2.5 + np.abs((v - body_v0) / r_ap) ** 2.5
    vert = (Z < dens_base) & (body_d <= 1.0)
    in_disc = vert & (dz < half)
    labels[in_disc] = tissue.LIGAMENT  # the annulus
    fraction = np.asarray(spine.nucleus_fractions, np.float64)[k][None, None, :]
    nucleus_v = body_v0 - 0.1 * r_ap  # the nucleus sits a little behind the disc's centre
    with np.errstate(divide="ignore", invalid="ignore"):
        q = ((u / (0.8 * r_lr * fraction)) ** 2 + ((v - nucleus_v) / (0.8 * r_ap * fraction)) ** 2
             + (signed[None, None, :] / (0.8 * half)) ** 2)
    labels[in_disc & (fraction > 0) & (q <= 1.0)] = tissue.DISC
    bone = vert & ~in_disc
    labels[bone] = tissue.MARROW
    labels[bone & ((body_d > 0.72) | (dz < half + ENDPLATE_MM))] = tissue.CORTICAL

    # The dens: a peg behind the bodies' centre, tapering to a rounded tip. Behind it and above its tip lie
    # thick ligaments (transverse and apical ligaments, tectorial membrane), dark on every contrast.
    dens_v = body_v0 - 0.35 * r_ap
    canal_front = body_v0 - r_ap - 2.0
    ligaments = ((np.abs(u) < 0.6 * r_lr) & (v > canal_front) & (v < dens_v + 0.5 * r_ap)
                 & (Z > dens_base + 2.0) & (Z < foramen_z - 1.0))
    labels[ligaments] = tissue.LIGAMENT
    taper = np.sqrt(np.clip(1.0 - ((Z - (tip - 4.0)) / 4.0) ** 2, 0.0, 1.0))
    taper = np.where(Z < tip - 4.0, 1.0, taper)
    dens_q = (u / (0.45 * r_lr)) ** 2 + ((v - dens_v) / (0.5 * r_ap)) ** 2
    dens = (Z >= dens_base) & (Z <= tip) & (dens_q <= taper**2)
    labels[dens] = tissue.MARROW
    labels[dens & (dens_q > 0.55 * taper**2)] = tissue.CORTICAL
    # C1's anterior arch in front of the dens, behind a 1.5 mm joint.
    front = dens_v + 0.5 * r_ap + 1.5
    atlas = ((np.abs(u) < 0.8 * r_lr) & (v > front) & (v < front + 7.0)
             & (np.abs(Z - (tip - spine.atlas_below_tip)) < spine.atlas_half_height))
    labels[atlas] = tissue.MARROW
    core = ((np.abs(u) < 0.8 * r_lr - 1.0) & (v > front + 1.0) & (v < front + 6.0)
            & (np.abs(Z - (tip - spine.atlas_below_tip)) < spine.atlas_half_height - 1.0))
    labels[atlas & ~core] = tissue.CORTICAL
    return (dz < half + ENDPLATE_MM)[0, 0]
