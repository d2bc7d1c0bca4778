"""Stage 2 of the cascade: segmentation on the straightened, cropped cord.

Stage 1 (a whole-image model) finds the cord; its centreline defines a
straight grid around the cord (:mod:`bids_sclesion.core.straighten`). Stage 2
segments cord and lesions on that grid at full resolution and its
probabilities are mapped back to the native grid.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import nibabel as nib
import numpy as np
import torch

from ..core.centerline import extract_centerline
from ..core.intensity import normalize_intensity
from ..core.straighten import apply_points, straight_grid, straight_to_native_points
from .inference import predict_probabilities
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
                      space: StraightSpace = StraightSpace(), extra: Sequence[np.ndarray] = ()) -> tuple[np.ndarray, np.ndarray]:
    """Straightened, normalised image and labels (2 + len(extra), ...) with the centreline of ``cord``."""
    cl = extract_centerline(cord.astype(np.float32), canonical.affine)
    grid = straight_grid(cl, space.radius_mm, space.spacing_mm, space.margin_mm)
    points = straight_to_native_points(cl, grid)
    image = sample_straight(canonical, points)
    labels = np.stack([apply_points(m.astype(np.float32), canonical.affine, points, order=1) >= 0.5
                       for m in (cord, lesion, *extra)])
    return image, labels


#: Test-time flips of the straightened cord: left-right, anterior-posterior, along the cord.
TTA_FLIPS = ((0,), (1,), (2,))


def segment_straightened(volume: np.ndarray, model: LoadedModel, device: torch.device | str = "cpu",
                         tta: bool = False) -> np.ndarray:
    """Stage-2 probabilities (2, *straight grid): cord, lesion, of a volume from :func:`sample_straight`.

    With ``tta`` the plain and three flipped predictions are returned, shape
    (4, 2, *straight grid): their spread is the uncertainty.
    """
    prob = predict_probabilities(model.network, volume, device, roi_size=model.roi_size,
                                 size_divisor=model.size_divisor, flip_axes=TTA_FLIPS if tta else (),
                                 return_copies=tta)
    n = len(OUTPUT_CHANNELS)  # a grey matter output, if any, is not used
    return prob[:, :n] if tta else prob[:n]


def unstraighten(prob: np.ndarray, straight_affine: np.ndarray, straight_points: np.ndarray) -> np.ndarray:
    """Map straight-grid maps (C, ...) to native voxels whose straight positions are ``straight_points``."""
    return np.stack([np.clip(apply_points(p, straight_affine, straight_points, order=1, cval=0.0), 0.0, 1.0)
                     for p in prob]).astype(np.float32)
