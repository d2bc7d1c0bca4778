"""Stage 2 of the cascade: segmentation on the straightened, cropped cord.

Stage 1 (a whole-image model) finds the cord; its centreline defines a
straight grid around the cord (:mod:`bids_sclesion.core.straighten`). Stage 2
segments cord and lesions on that grid at full resolution and its
probabilities are mapped back to the native grid.
"""
from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass
from typing import Sequence

import nibabel as nib
import numpy as np
import torch

from ..core.centerline import extract_centerline
from ..core.intensity import normalize_intensity
from ..core.straighten import apply_points, apply_points_to_maps, straight_grid, straight_to_native_points
from .inference import TTA_FLIPS, predict_probabilities
from .io import LoadedModel
from .network import OUTPUT_CHANNELS


@dataclass(frozen=True)
class StraightSpace:
    """The straightened grid a stage-2 model works on."""

    radius_mm: float = 15.75  # 64 voxels of 0.5 mm across: one inference window in-plane
    spacing_mm: tuple[float, float, float] = (0.5, 0.5, 1.0)
    margin_mm: float = 5.0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["spacing_mm"] = list(self.spacing_mm)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "StraightSpace":
        return cls(float(d.get("radius_mm", cls.radius_mm)),
                   tuple(float(x) for x in d.get("spacing_mm", cls.spacing_mm)),
                   float(d.get("margin_mm", cls.margin_mm)))


def sample_straight(img: nib.Nifti1Image, native_points: np.ndarray) -> np.ndarray:
    """Image intensities at the straight grid's native positions, normalised to [0, 1].

    Straight voxels outside the native field of view (short axial slabs, a
    narrow in-plane field) are set to 0 after normalisation, which only uses
    the voxels inside it.
    """
    data = np.asarray(img.dataobj, np.float32)
    values = apply_points(data, img.affine, native_points, order=1, cval=np.nan)
    inside = np.isfinite(values)
    out = np.zeros(values.shape, np.float32)
    if inside.any():
        out[inside] = normalize_intensity(values[inside])
    return out


def straighten_labels(canonical: nib.Nifti1Image, cord: np.ndarray, lesion: np.ndarray,
                      space: StraightSpace = StraightSpace(), extra: Sequence[np.ndarray] = (),
                      lesion_fraction: nib.Nifti1Image | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Straightened, normalised image and labels (2 + len(extra), ...) with the centreline of ``cord``.

    ``lesion_fraction`` (a lesion fraction map on a fine grid of its own, e.g.
    the phantoms' ``res-fine_lesion-manual``) labels the lesions instead of
    ``lesion``: the straight grid then marks where lesions are, not which
    thick slices they half cover.
    """
    cl = extract_centerline(cord.astype(np.float32), canonical.affine)
    grid = straight_grid(cl, space.radius_mm, space.spacing_mm, space.margin_mm)
    points = straight_to_native_points(cl, grid)
    image = sample_straight(canonical, points)
    labels = [apply_points(m.astype(np.float32), canonical.affine, points, order=1) >= 0.5
              for m in (cord, lesion, *extra)]
    if lesion_fraction is not None:
        fraction = np.asarray(lesion_fraction.dataobj, np.float32)
        labels[1] = apply_points(fraction, lesion_fraction.affine, points, order=1, cval=0.0) >= 0.5
    return image, np.stack(labels)



def with_tissue_prior(volume: np.ndarray, cord: np.ndarray, space: StraightSpace) -> np.ndarray:
    """Stage-2 input channels (3, *grid): the straightened image, then the grey and white matter
    expected in the straightened ``cord`` mask (the bundled PAM50 cross-section fitted to it)."""
    from ..core.tissue_prior import load_template, tissue_prior

    prior = tissue_prior(cord, space.spacing_mm, load_template())
    return np.concatenate([volume[None].astype(np.float32), prior])


def segment_straightened(volume: np.ndarray, model: LoadedModel, device: torch.device | str = "cpu",
                         tta: bool = False, cord: np.ndarray | None = None, precision: str = "auto") -> np.ndarray:
    """Stage-2 probabilities (2, *straight grid): cord, lesion, of a volume from :func:`sample_straight`.

    A model that takes the tissue prior needs the straightened stage-1 ``cord`` mask. With ``tta``
    the plain and three flipped predictions are returned, shape (4, 2, *straight grid): their spread
    is the uncertainty.
    """
    if model.uses_tissue_prior:
        if cord is None:
            raise ValueError(f"{model.path}: this stage 2 takes a tissue prior, which needs the straightened cord mask")
        volume = with_tissue_prior(volume, cord, StraightSpace.from_dict(model.metadata.get("straight_space") or {}))
    prob = predict_probabilities(model.network, volume, device, roi_size=model.roi_size, overlap=model.overlap,
                                 size_divisor=model.size_divisor, flip_axes=TTA_FLIPS if tta else (),
                                 return_copies=tta, precision=precision)
    n = len(OUTPUT_CHANNELS)  # a grey matter output, if any, is not used
    return prob[:, :n] if tta else prob[:n]


def unstraighten(prob: np.ndarray, straight_affine: np.ndarray, straight_points: np.ndarray,
                 native_zooms: Sequence[float] | None = None) -> np.ndarray:
    """Map straight-grid maps (C, ...) to native voxels whose straight positions are ``straight_points``.

    With ``native_zooms`` (mm) each voxel takes the mean of the maps over its
    extent along every axis thicker than :data:`THICK_AXIS_MM` (sampled every
    half millimetre): a map of where lesions are becomes the fraction of the
    voxel they cover, which is what a thick-slice label thresholds.
    """
    samples = [straight_points] if native_zooms is None else voxel_extent_points(straight_points, native_zooms)
    sampled = [apply_points_to_maps(list(prob), straight_affine, pts, order=1, cval=0.0) for pts in samples]
    out = [np.clip(np.mean([maps[c] for maps in sampled], axis=0), 0.0, 1.0) for c in range(len(prob))]
    return np.stack(out).astype(np.float32)


#: Source-grid axes thicker than this (mm) are averaged over by :func:`unstraighten`.
THICK_AXIS_MM = 1.5


def voxel_extent_points(points: np.ndarray, zooms: Sequence[float], step_mm: float = 0.5) -> list[np.ndarray]:
    """Positions (*grid, 3) spread over each voxel's extent along its thick axes, from its centres' ``points``.

    The field is linear across a voxel to a good approximation (it bends on the
    scale of centimetres), so an offset of ``d`` voxels moves a point by ``d``
    times the field's gradient along that axis.
    """
    offsets = []
    for axis, zoom in enumerate(zooms[:3]):
        n = int(np.ceil(zoom / step_mm)) if zoom > THICK_AXIS_MM else 1
        offsets.append((np.arange(n) + 0.5) / n - 0.5)  # centres of n equal parts of the voxel
    if all(len(o) == 1 for o in offsets):
        return [points]
    gradients = [np.gradient(points, axis=a) if points.shape[a] > 1 else np.zeros_like(points) for a in range(3)]
    return [points + sum(d * g for d, g in zip(shift, gradients)) for shift in itertools.product(*offsets)]
