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


def segment_image(
    img: nib.Nifti1Image, model: LoadedModel, device: torch.device | str = "cpu", precision: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Cord and lesion probabilities on ``img``'s own grid (``precision``: ``config.PRECISIONS``)."""
    model_input = to_model_grid(img, model.spacing)
    prob = predict_probabilities(model.network, model_input.data, device, roi_size=model.roi_size,
                                 overlap=model.overlap,
                                 size_divisor=model.size_divisor, flip_axes=model.flip_axes,
                                 precision=precision)
    out = [
        np.clip(resample_to_grid(p, model_input.affine, img.shape[:3], img.affine, order=1), 0.0, 1.0)
        for p in prob[: len(OUTPUT_CHANNELS)]  # a grey matter output, if any, is not used
    ]
    return out[0], out[1]
