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
    RandHistogramShiftd,
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


def _as_keys(keys) -> tuple[str, ...]:
    return (keys,) if isinstance(keys, str) else tuple(keys)


def _invert(x):
    return 1.0 - x


class _OwnRandomStream:
    """A transform of this module drawing from a NumPy random stream of its own (``self.rng``), restarted by
    :meth:`set_random_state` (as MONAI's randomisable transforms are) and by :func:`seed_augmentation`."""

    def __init__(self, keys, prob: float, seed: int | None):
        self.keys, self.prob = _as_keys(keys), float(prob)
        self.rng = np.random.default_rng(seed)

    def set_random_state(self, seed: int):
        self.rng = np.random.default_rng(seed)
        return self

    def _skips(self) -> bool:
        """One draw: whether this call leaves the data as it is (probability 1 - ``prob``)."""
        return self.rng.random() >= self.prob


class RandAxisPermuted(_OwnRandomStream):
    """Randomly permute and flip the spatial axes of cubic patches.

    Headers of real scans do not always say which way the cord runs (some
    put it along the anterior-posterior axis): a cord model that must find
    it anyway sees every axis order during training.
    """

    def __init__(self, keys=("image", "label"), prob: float = 0.5, seed: int | None = None):
        super().__init__(keys, prob, seed)

    def __call__(self, data: dict) -> dict:
        if self._skips():
            return data
        order = self.rng.permutation(3)
        shape = np.asarray(data[self.keys[0]]).shape[1:]
        if len(set(shape)) != 1:  # only cubic patches keep their shape when permuted
            order = np.arange(3)
        flips = [ax for ax in range(3) if self.rng.random() < 0.5]
        out = dict(data)
        for key in self.keys:
            x = np.asarray(out[key])
            x = np.transpose(x, (0, *(order + 1)))
            if flips:
                x = np.flip(x, axis=tuple(a + 1 for a in flips))
            out[key] = np.ascontiguousarray(x)
        return out


class RandCoarseElasticd(_OwnRandomStream):
    """Smooth random deformation: displacements drawn on a coarse control grid,
    interpolated to every voxel (cords bend and vary in shape between people).

    Much cheaper than a Gaussian-smoothed dense field; labels use nearest
    neighbour so they stay binary.
    """

    def __init__(self, keys=("image", "label"), prob: float = 0.2, control_points: int = 5,
                 magnitude: float = 3.0, label_keys=("label",), seed: int | None = None):
        super().__init__(keys, prob, seed)
        self.label_keys = set(_as_keys(label_keys))
        self.control_points, self.magnitude = int(control_points), float(magnitude)

    def __call__(self, data: dict) -> dict:
        if self._skips():
            return data
        shape = tuple(np.asarray(data[self.keys[0]]).shape[1:])
        coarse = self.rng.normal(0.0, self.magnitude, size=(1, 3) + (self.control_points,) * 3)
        field = torch.nn.functional.interpolate(torch.as_tensor(coarse, dtype=torch.float32), size=shape,
                                                mode="trilinear", align_corners=True)[0]
        # grid_sample takes (x, y, z) = (last, middle, first) axis in [-1, 1].
        axes = [torch.linspace(-1.0, 1.0, n) for n in shape]
        base = torch.stack(torch.meshgrid(*axes, indexing="ij"))
        scale = torch.tensor([2.0 / max(n - 1, 1) for n in shape]).view(3, 1, 1, 1)
        grid = (base + field * scale).permute(1, 2, 3, 0).flip(-1)[None]
        out = dict(data)
        for key in self.keys:
            x = torch.as_tensor(np.asarray(out[key]), dtype=torch.float32)[None]
            mode = "nearest" if key in self.label_keys else "bilinear"
            out[key] = torch.nn.functional.grid_sample(x, grid, mode=mode, padding_mode="border",
                                                       align_corners=True)[0].numpy()
        return out


class RandThickSliced(_OwnRandomStream):
    """Simulated thick slices: the image is averaged over blocks of ``k`` voxels
    along one random axis and stretched back (partial volume of 3-5 mm clinical
    slices, in any orientation). Labels are unchanged: the network must find
    the true extent of a lesion from a blurred acquisition."""

    def __init__(self, keys=("image",), prob: float = 0.15, factor_range: tuple[int, int] = (2, 5),
                 seed: int | None = None):
        super().__init__(keys, prob, seed)
        self.factor_range = factor_range

    def __call__(self, data: dict) -> dict:
        if self._skips():
            return data
        axis = int(self.rng.integers(3))
        k = int(self.rng.integers(self.factor_range[0], self.factor_range[1] + 1))
        out = dict(data)
        for key in self.keys:
            x = np.asarray(out[key], dtype=np.float32)
            n = x.shape[axis + 1]
            blocks = -(-n // k)
            pad = blocks * k - n
            padded = np.pad(x, [(0, 0)] + [(0, pad if a == axis else 0) for a in range(3)], mode="edge")
            shape = list(padded.shape)
            shape[axis + 1: axis + 2] = [blocks, k]
            means = padded.reshape(shape).mean(axis=axis + 2)
            # Linear interpolation between slice centres, back to the original grid.
            centres = (np.arange(blocks) + 0.5) * k - 0.5
            pos = np.clip(np.arange(n, dtype=np.float32), centres[0], centres[-1])
            hi = np.clip(np.searchsorted(centres, pos), 1, max(blocks - 1, 1))
            lo = hi - 1 if blocks > 1 else hi * 0
            hi = np.minimum(hi, blocks - 1)
            w = np.where(hi > lo, (pos - centres[lo]) / np.maximum(centres[hi] - centres[lo], 1e-6), 0.0)
            shape_w = [1] * 4
            shape_w[axis + 1] = n
            w = w.reshape(shape_w).astype(np.float32)
            out[key] = np.ascontiguousarray(np.take(means, lo, axis=axis + 1) * (1 - w)
                                            + np.take(means, hi, axis=axis + 1) * w)
        return out


class RandWindowd(_OwnRandomStream):
    """Another intensity window: the image multiplied by a factor drawn log-uniformly in ``factor_range`` and
    clipped to the range :func:`~bids_sclesion.core.intensity.normalize_intensity` leaves ([-1, 2]), as if the
    percentiles that scaled it had fallen elsewhere (bright fat in a wide field of view sets the upper one)."""

    def __init__(self, keys=("image",), prob: float = 0.3, factor_range: tuple[float, float] = (1 / 3, 3.0),
                 seed: int | None = None):
        super().__init__(keys, prob, seed)
        self.factor_range = factor_range

    def __call__(self, data: dict) -> dict:
        if self._skips():
            return data
        factor = float(np.exp(self.rng.uniform(*np.log(self.factor_range))))
        out = dict(data)
        for key in self.keys:
            out[key] = np.clip(np.asarray(out[key], dtype=np.float32) * factor, -1.0, 2.0)
        return out


def training_augmentation(seed: int | None = None, profile: str = "standard") -> Compose:
    """Augmentations for spinal cord MRI: affine and elastic geometry, bias, gamma, noise, blur,
    thick slices, inversion.

    ``profile="domain"`` randomises much more (axis order, contrast curve,
    inversion, slice thickness, bias): for a cord model meant to work on any
    real scanner and contrast. ``"domain-straight"`` is the same without the
    axis order, for the straightened grid, whose axes always mean the same.
    ``"domain-range"`` is ``"domain"`` with the intensities often compressed towards zero (x 0.3-1), as when
    a few very bright voxels (fat, vessels) set the upper percentile of the scaling; ``"domain-window"`` with
    them scaled either way (x 1/3-3) and clipped as the scaling clips (:class:`RandWindowd`).
    """
    if profile in ("domain", "domain-straight", "domain-range", "domain-window"):
        return _domain_randomisation(seed, permute_axes=profile != "domain-straight",
                                     window=profile.removeprefix("domain").lstrip("-"))
    if profile != "standard":
        raise ValueError(f"unknown augmentation profile {profile!r}")
    keys = ["image", "label"]
    # The phantoms already randomise anatomy, intensities, noise and bias, so each
    # augmentation is applied sparingly: strong augmentation slowed lesion learning.
    aug = Compose(
        [
            RandAffined(
                keys, prob=0.3, rotate_range=(0.15, 0.15, 0.15), scale_range=(0.1, 0.1, 0.1),
                mode=("bilinear", "nearest"), padding_mode="border",
            ),
            RandCoarseElasticd(keys, prob=0.15, magnitude=2.0, seed=seed),
            RandFlipd(keys, prob=0.5, spatial_axis=0),  # left-right symmetry
            RandBiasFieldd("image", prob=0.15, coeff_range=(0.0, 0.2)),
            RandAdjustContrastd("image", prob=0.15, gamma=(0.8, 1.25)),
            RandScaleIntensityd("image", prob=0.15, factors=0.1),
            RandShiftIntensityd("image", prob=0.15, offsets=0.05),
            RandGaussianSmoothd("image", prob=0.1, sigma_x=(0.0, 0.8), sigma_y=(0.0, 0.8), sigma_z=(0.0, 0.8)),
            RandThickSliced("image", prob=0.1, seed=None if seed is None else seed + 1),
            RandGaussianNoised("image", prob=0.15, std=0.03),
            RandLambdad("image", func=_invert, prob=0.05),
        ]
    )
    if seed is not None:
        aug.set_random_state(seed)
    return aug


def _domain_randomisation(seed: int | None, permute_axes: bool = True, window: str = "") -> Compose:
    keys = ["image", "label"]
    # A real 3D T2w whose fat is far brighter than the cord puts the cord near zero after the percentile scaling:
    # the 2 mm stage 1 lost half its cord there, and gained it back when the image was clipped at its 99th
    # percentile (docs/morphometry.md).
    compress = {"range": [RandScaleIntensityd("image", prob=0.3, factors=(-0.7, 0.0))],
                "window": [RandWindowd("image", prob=0.3, seed=None if seed is None else seed + 2)]}.get(window, [])
    aug = Compose(
        [
            *([RandAxisPermuted(keys, prob=0.3, seed=seed)] if permute_axes else []),
            RandAffined(
                keys, prob=0.5, rotate_range=(0.3, 0.3, 0.3), scale_range=(0.15, 0.15, 0.15),
                mode=("bilinear", "nearest"), padding_mode="border",
            ),
            RandCoarseElasticd(keys, prob=0.3, magnitude=3.0, seed=seed),
            RandFlipd(keys, prob=0.5, spatial_axis=0),
            RandBiasFieldd("image", prob=0.3, coeff_range=(0.0, 0.4)),
            RandHistogramShiftd("image", prob=0.3, num_control_points=(5, 10)),
            RandAdjustContrastd("image", prob=0.3, gamma=(0.5, 2.0)),
            RandScaleIntensityd("image", prob=0.2, factors=0.2),
            RandShiftIntensityd("image", prob=0.2, offsets=0.1),
            # Thick slices along any axis: anisotropic blur.
            RandGaussianSmoothd("image", prob=0.3, sigma_x=(0.0, 1.5), sigma_y=(0.0, 1.5), sigma_z=(0.0, 1.5)),
            RandThickSliced("image", prob=0.3, seed=None if seed is None else seed + 1),
            RandGaussianNoised("image", prob=0.2, std=0.05),
            RandLambdad("image", func=_invert, prob=0.15),
            *compress,
        ]
    )
    if seed is not None:
        aug.set_random_state(seed)
    return aug


def seed_augmentation(augment: Compose, seed: int) -> Compose:
    """Restart every random stream of ``augment`` from ``seed`` (MONAI's transforms and this module's)."""
    augment.set_random_state(seed)
    for index, transform in enumerate(augment.transforms):
        if isinstance(transform, _OwnRandomStream):
            transform.set_random_state(int(np.random.default_rng([seed, index]).integers(2**31 - 1)))
    return augment


def to_batch(samples: list[dict]) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.stack([torch.as_tensor(s["image"]) for s in samples]).float()
    labels = torch.stack([torch.as_tensor(s["label"]) for s in samples]).float()
    return images, labels
