"""Patch sampling and augmentation for training (MONAI transforms)."""
from __future__ import annotations

import numpy as np
import torch
from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandLambdad,
    RandScaleIntensityd,
    RandShiftIntensityd,
)


def sample_patch(
    rng: np.random.Generator,
    image: np.ndarray,
    labels: np.ndarray,
    patch_size: tuple[int, int, int],
    p_lesion: float = 0.5,
    p_cord: float = 0.3,
    lesion_voxels: np.ndarray | None = None,
    cord_voxels: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Crop a patch centred on a lesion, the cord or anywhere (padded as needed).

    ``labels`` has shape (2, *image.shape): cord, lesion.
    """
    u = rng.random()
    if lesion_voxels is not None and len(lesion_voxels) and u < p_lesion:
        center = lesion_voxels[rng.integers(len(lesion_voxels))]
    elif cord_voxels is not None and len(cord_voxels) and u < p_lesion + p_cord:
        center = cord_voxels[rng.integers(len(cord_voxels))]
    else:
        center = np.array([rng.integers(s) for s in image.shape])
    center = center + rng.integers(-8, 9, size=3)
    size = np.asarray(patch_size)
    start = center - size // 2
    img_patch = np.full(tuple(size), float(np.min(image)), np.float32)
    lab_patch = np.zeros((labels.shape[0],) + tuple(size), np.float32)
    src_lo = np.maximum(start, 0)
    src_hi = np.minimum(start + size, image.shape)
    if np.any(src_hi <= src_lo):
        return img_patch, lab_patch
    dst_lo = src_lo - start
    dst_hi = dst_lo + (src_hi - src_lo)
    src = tuple(slice(a, b) for a, b in zip(src_lo, src_hi))
    dst = tuple(slice(a, b) for a, b in zip(dst_lo, dst_hi))
    img_patch[dst] = image[src]
    lab_patch[(slice(None),) + dst] = labels[(slice(None),) + src]
    return img_patch, lab_patch


def _invert(x):
    return 1.0 - x


def training_augmentation(seed: int | None = None) -> Compose:
    """Augmentations for spinal cord MRI: geometry, bias, gamma, noise, blur, inversion."""
    keys = ["image", "label"]
    # The phantoms already randomise anatomy, intensities, noise and bias, so each
    # augmentation is applied sparingly: strong augmentation slowed lesion learning.
    aug = Compose(
        [
            RandAffined(
                keys, prob=0.3, rotate_range=(0.15, 0.15, 0.15), scale_range=(0.1, 0.1, 0.1),
                mode=("bilinear", "nearest"), padding_mode="border",
            ),
            RandFlipd(keys, prob=0.5, spatial_axis=0),  # left-right symmetry
            RandBiasFieldd("image", prob=0.15, coeff_range=(0.0, 0.2)),
            RandAdjustContrastd("image", prob=0.15, gamma=(0.8, 1.25)),
            RandScaleIntensityd("image", prob=0.15, factors=0.1),
            RandShiftIntensityd("image", prob=0.15, offsets=0.05),
            RandGaussianSmoothd("image", prob=0.1, sigma_x=(0.0, 0.8), sigma_y=(0.0, 0.8), sigma_z=(0.0, 0.8)),
            RandGaussianNoised("image", prob=0.15, std=0.03),
            RandLambdad("image", func=_invert, prob=0.05),
        ]
    )
    if seed is not None:
        aug.set_random_state(seed)
    return aug


def to_batch(samples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([torch.as_tensor(s["image"]) for s in samples]).float()
    labels = torch.stack([torch.as_tensor(s["label"]) for s in samples]).float()
    return images, labels
