"""Intensity operations: bias-field correction and normalisation."""
from __future__ import annotations

import numpy as np


def n4_bias_correction(
    data: np.ndarray, spacing: tuple[float, float, float], shrink_factor: int = 4, iterations=(25, 25, 10)
) -> np.ndarray:
    """N4 bias-field correction (ANTs) of a magnitude or signed image.

    Signed images (PSIR) are corrected through their magnitude; the field is
    then applied to the signed data so the sign is kept.
    """
    import ants

    data = np.asarray(data, np.float32)
    magnitude = np.abs(data)
    offset = float(magnitude[magnitude > 0].min()) if np.any(magnitude > 0) else 1.0
    img = ants.from_numpy(magnitude + offset, spacing=tuple(float(s) for s in spacing))
    mask_threshold = float(np.percentile(magnitude, 40))
    mask = ants.from_numpy((magnitude > mask_threshold).astype(np.float32), spacing=tuple(float(s) for s in spacing))
    # The shrink factor is limited by the smallest dimension.
    shrink = int(max(1, min(shrink_factor, min(data.shape) // 4)))
    field = ants.n4_bias_field_correction(
        img, mask=mask, shrink_factor=shrink, convergence={"iters": list(iterations), "tol": 1e-4}, return_bias_field=True
    ).numpy()
    field = np.where(field > 1e-3, field, 1.0)
    return (data / field).astype(np.float32)


def normalize_intensity(data: np.ndarray, lower: float = 0.5, upper: float = 99.5) -> np.ndarray:
    """Map the [lower, upper] percentiles of the non-background voxels to [0, 1]."""
    data = np.asarray(data, np.float32)
    foreground = data[np.abs(data) > np.percentile(np.abs(data), 10)]
    if foreground.size < 100:
        foreground = data.ravel()
    lo, hi = np.percentile(foreground, [lower, upper])
    if hi - lo < 1e-6:
        hi = lo + 1.0
    return np.clip((data - lo) / (hi - lo), -1.0, 2.0).astype(np.float32)
