"""Where grey and white matter should be in a straightened cord: the PAM50 cross-section fitted to it.

On the straightened grid (axes u: left-right, v: posterior-anterior, s: along the cord) every slice
holds one cross-section of the cord, centred. Grey matter sits at a nearly fixed place relative to the
cord's outline, so the template's average cross-section, scaled to each slice's cord (centre and
semi-axes from the cord mask's second moments), says where grey matter is expected whatever the
image's contrast. Given to stage 2 as extra input channels, this lets it tell grey matter from lesions
by position as well as by intensity.

Pure numpy/scipy: no model, no Nipype.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
from scipy import ndimage

#: Smallest cord cross-section (mm2) taken as a cord slice; thinner slices are the cord's ends or noise.
MIN_SECTION_MM2 = 8.0
#: Centre and semi-axes are smoothed along the cord over this length (mm): stage 1's mask is noisy slice by slice.
SMOOTHING_MM = 6.0


@dataclass(frozen=True)
class CrossSectionTemplate:
    """Grey and white matter probabilities on a grid of normalised coordinates.

    ``grey[i, j]`` is the probability at (x, y) = (coords[i], coords[j]) in units of the cord's
    semi-axes from its centre, x towards the right, y towards anterior.
    """

    grey: np.ndarray
    white: np.ndarray
    extent: float  # coords run from -extent to +extent
    source: str = ""

    @property
    def coords(self) -> np.ndarray:
        return np.linspace(-self.extent, self.extent, self.grey.shape[0])

    def to_dict(self) -> dict:
        return {"extent": self.extent, "source": self.source,
                "grey": np.round(self.grey, 3).tolist(), "white": np.round(self.white, 3).tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "CrossSectionTemplate":
        grey, white = np.asarray(d["grey"], np.float32), np.asarray(d["white"], np.float32)
        if grey.ndim != 2 or grey.shape != white.shape or grey.shape[0] != grey.shape[1]:
            raise ValueError(f"cross-section template: grey {grey.shape} and white {white.shape} must be equal squares")
        return cls(grey, white, float(d["extent"]), str(d.get("source", "")))


def bundled_template_path() -> Path:
    return Path(str(resources.files("bids_sclesion") / "data" / "priors" / "pam50_cross_section.json"))


def load_template(path: str | Path | None = None) -> CrossSectionTemplate:
    """The bundled PAM50 cross-section (made by ``scripts/make_tissue_prior.py``), or the one at ``path``."""
    path = Path(path) if path else bundled_template_path()
    try:
        return CrossSectionTemplate.from_dict(json.loads(path.read_text()))
    except (OSError, KeyError, ValueError) as exc:
        raise ValueError(f"{path}: not a cross-section template ({exc})") from exc


def section_moments(mask: np.ndarray, spacing_uv: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per slice of ``mask`` (u, v, s): centre (s, 2) and semi-axes (s, 2) in mm, and area (s,) in mm2.

    Semi-axes from second moments: a filled ellipse of semi-axis a has variance a^2 / 4 along it.
    """
    m = np.asarray(mask, np.float64)
    du, dv = (float(x) for x in spacing_uv)
    u = np.arange(m.shape[0]) * du
    v = np.arange(m.shape[1]) * dv
    n = m.sum(axis=(0, 1))
    safe = np.maximum(n, 1e-9)
    mu_u = np.einsum("ijk,i->k", m, u) / safe
    mu_v = np.einsum("ijk,j->k", m, v) / safe
    var_u = np.einsum("ijk,i->k", m, u**2) / safe - mu_u**2
    var_v = np.einsum("ijk,j->k", m, v**2) / safe - mu_v**2
    semi = 2.0 * np.sqrt(np.maximum(np.stack([var_u, var_v], axis=1), 0.0))
    return np.stack([mu_u, mu_v], axis=1), semi, n * du * dv


def _smooth_along(values: np.ndarray, present: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of (s, k) values over the present slices; absent ones take the nearest present value."""
    idx = np.arange(len(values))
    filled = np.stack([np.interp(idx, idx[present], values[present, k]) for k in range(values.shape[1])], axis=1)
    weights = ndimage.gaussian_filter1d(present.astype(float), sigma, mode="nearest")
    smoothed = ndimage.gaussian_filter1d(filled * present[:, None], sigma, axis=0, mode="nearest")
    return np.where(weights[:, None] > 1e-6, smoothed / np.maximum(weights[:, None], 1e-6), filled)


def fitted_sections(mask: np.ndarray, spacing_mm: tuple[float, float, float]
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centre (s, 2) and semi-axes (s, 2) in mm of the cord in each slice, smoothed along it, and
    which slices hold cord (between its first and last slice of at least :data:`MIN_SECTION_MM2`)."""
    centre, semi, area = section_moments(mask, spacing_mm[:2])
    present = area >= MIN_SECTION_MM2
    inside = np.zeros_like(present)
    if not present.any():
        return centre, semi, inside
    first, last = np.flatnonzero(present)[[0, -1]]
    inside[first:last + 1] = True
    sigma = SMOOTHING_MM / float(spacing_mm[2]) / 2.0
    return _smooth_along(centre, present, sigma), _smooth_along(semi, present, sigma), inside


def tissue_prior(mask: np.ndarray, spacing_mm: tuple[float, float, float], template: CrossSectionTemplate,
                 scale: tuple[float, float] = (1.0, 1.0), shift_mm: tuple[float, float] = (0.0, 0.0)) -> np.ndarray:
    """Grey and white matter probabilities (2, u, v, s) of the template fitted to the cord ``mask`` (u, v, s).

    ``scale`` and ``shift_mm`` perturb the fitted semi-axes and centre (training: stage 1's cord is
    never exact). Slices without cord get zero.
    """
    shape = np.asarray(mask).shape
    out = np.zeros((2,) + shape, np.float32)
    centre, semi, inside = fitted_sections(mask, spacing_mm)
    if not inside.any():
        return out
    du, dv = float(spacing_mm[0]), float(spacing_mm[1])
    u = np.arange(shape[0]) * du
    v = np.arange(shape[1]) * dv
    ks = np.flatnonzero(inside)
    a = np.maximum(semi[ks, 0] * scale[0], 1.0)
    b = np.maximum(semi[ks, 1] * scale[1], 1.0)
    x = (u[:, None] - centre[ks, 0][None] - shift_mm[0]) / a[None]  # (u, k)
    y = (v[:, None] - centre[ks, 1][None] - shift_mm[1]) / b[None]  # (v, k)
    n = template.grey.shape[0]
    to_index = (n - 1) / (2.0 * template.extent)
    xi = np.broadcast_to(((x + template.extent) * to_index)[:, None, :], (shape[0], shape[1], len(ks)))
    yi = np.broadcast_to(((y + template.extent) * to_index)[None, :, :], (shape[0], shape[1], len(ks)))
    for c, probs in enumerate((template.grey, template.white)):
        out[c][:, :, ks] = ndimage.map_coordinates(probs, [xi.ravel(), yi.ravel()], order=1, cval=0.0,
                                                   mode="constant").reshape(xi.shape)
    return out


def template_from_maps(grey: np.ndarray, white: np.ndarray, cord: np.ndarray, affine: np.ndarray,
                       slices: np.ndarray, size: int = 49, extent: float = 1.5, source: str = "") -> CrossSectionTemplate:
    """The mean cross-section of straight template maps (x, y, z; the cord along z) over ``slices``.

    Each slice is resampled onto normalised coordinates (its cord's centre and semi-axes), in world
    directions: x towards the right, y towards anterior, whatever the maps' voxel order.
    """
    zooms = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    signs = np.sign(np.diag(np.asarray(affine)[:3, :3]))
    coords = np.linspace(-extent, extent, size)
    sums = np.zeros((2, size, size))
    centre, semi, area = section_moments(cord[:, :, slices] > 0.5, (float(zooms[0]), float(zooms[1])))
    used = 0
    for k, z in enumerate(slices):
        if area[k] < MIN_SECTION_MM2:
            continue
        # Voxel index of world-normalised (x, y): flip the index axis where the voxel axis runs leftwards/posterior.
        iu = (centre[k, 0] + signs[0] * coords * semi[k, 0]) / zooms[0]
        iv = (centre[k, 1] + signs[1] * coords * semi[k, 1]) / zooms[1]
        gu, gv = np.meshgrid(iu, iv, indexing="ij")
        for c, maps in enumerate((grey, white)):
            sums[c] += ndimage.map_coordinates(np.asarray(maps[:, :, z], np.float64), [gu, gv], order=1, cval=0.0)
        used += 1
    if not used:
        raise ValueError("template_from_maps: no slice holds cord")
    return CrossSectionTemplate((sums[0] / used).astype(np.float32), (sums[1] / used).astype(np.float32),
                                float(extent), source)
