"""Segment one (canonical, bias-corrected) image with a loaded model."""
from __future__ import annotations

import nibabel as nib
import numpy as np
import torch

from ..core.image import resample_to_grid
from ..core.preprocess import to_model_grid
from .inference import predict_probabilities
from .io import LoadedModel
from .network import OUTPUT_CHANNELS


#: Test-time flips are computed only on a box around the cord that the plain pass finds: voxels whose cord
#: probability reaches this value, widened by :data:`FLIP_MARGIN_MM` on every side.
FLIP_BOX_PROBABILITY = 0.1
FLIP_MARGIN_MM = 16.0


def segment_image(
    img: nib.Nifti1Image, model: LoadedModel, device: torch.device | str = "cpu", flips_near_cord: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Cord and lesion probabilities on ``img``'s own grid.

    A model that predicts with test-time flips averages them only where the cord is (``flips_near_cord``):
    the plain pass covers the whole volume, the flipped ones a box around its cord. Far from the cord the
    flips change nothing the app keeps (the cord mask is one component, lesions outside it are dropped),
    and on a long 3D field of view the box is a fraction of the volume.
    """
    model_input = to_model_grid(img, model.spacing)
    prob = _probabilities(model_input.data, model, device, flips_near_cord)
    out = [
        np.clip(resample_to_grid(p, model_input.affine, img.shape[:3], img.affine, order=1), 0.0, 1.0)
        for p in prob[: len(OUTPUT_CHANNELS)]  # a grey matter output, if any, is not used
    ]
    return out[0], out[1]


def _probabilities(volume: np.ndarray, model: LoadedModel, device, flips_near_cord: bool) -> np.ndarray:
    def predict(data: np.ndarray, flips) -> np.ndarray:
        return predict_probabilities(model.network, data, device, roi_size=model.roi_size, overlap=model.overlap,
                                     size_divisor=model.size_divisor, flip_axes=flips)

    if not model.flip_axes or not flips_near_cord:
        return predict(volume, model.flip_axes)
    prob = predict(volume, ())
    box = cord_box(prob[0], model.spacing)
    if box is None:
        return prob
    # The box's own plain pass and its flips, averaged: every voxel of the box is predicted in the same context.
    prob[(slice(None),) + box] = predict(volume[box], model.flip_axes)
    return prob


def cord_box(cord_prob: np.ndarray, spacing_mm) -> tuple[slice, ...] | None:
    """The box around the voxels of ``cord_prob`` >= :data:`FLIP_BOX_PROBABILITY`, widened by
    :data:`FLIP_MARGIN_MM`; None when there is none."""
    found = np.argwhere(cord_prob >= FLIP_BOX_PROBABILITY)
    if not len(found):
        return None
    margin = np.ceil(FLIP_MARGIN_MM / np.asarray(spacing_mm, float)).astype(int)
    lo = np.maximum(found.min(axis=0) - margin, 0)
    hi = np.minimum(found.max(axis=0) + margin + 1, cord_prob.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
