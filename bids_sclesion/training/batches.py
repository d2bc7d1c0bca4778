"""Training batches drawn from random streams keyed by their iteration number.

Batch ``i`` of a run depends only on (seed, process rank, ``i``), never on the
batches before it. So the batches can be made by loader worker processes in
any number and order, a resumed run draws exactly the batches the
uninterrupted run would have drawn, and ``--workers`` changes speed, not
results.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..core.tissue_prior import CrossSectionTemplate, tissue_prior
from ..utils.environment import process_context
from .transforms import sample_patch, seed_augmentation, to_batch, training_augmentation

#: Where a patch is centred: on a lesion voxel, a cord voxel, or anywhere (the rest).
P_LESION, P_CORD = 0.6, 0.25
#: Spread of the tissue prior's fit in training (log-normal semi-axes, centre in mm): the prior is fitted
#: to the true cord here, to stage 1's imperfect cord in the app.
PRIOR_SCALE_SD, PRIOR_SHIFT_SD_MM = 0.08, 0.4


class Batch(NamedTuple):
    image: torch.Tensor  # (B, 1, *patch), or (B, 3, *patch) with the tissue prior
    label: torch.Tensor  # (B, out_channels, *patch)
    labelled_gm: torch.Tensor  # (B,) bool: the sample has a grey matter label


class PatchBatches(Dataset):
    """Item ``i`` is training batch ``i``: patches of images drawn by dataset weight, augmented.

    ``data`` holds (image, labels) pairs, labels first cord then lesion (and
    grey matter where labelled); ``groups`` lists the indices of ``data`` of
    each dataset, drawn with probabilities ``draw``. With ``prior`` (straight
    space, voxel size ``spacing_mm``) each augmented patch gets the grey and
    white matter expected in its cord label as two more input channels.
    """

    def __init__(self, data: Sequence[tuple[np.ndarray, np.ndarray]], groups: Sequence[Sequence[int]],
                 draw: Sequence[float], batch_size: int, patch_size: tuple[int, int, int], out_channels: int,
                 base_channels: int, augmentation: str = "standard", seed: int = 0, rank: int = 0,
                 prior: CrossSectionTemplate | None = None, spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)):
        self.data, self.groups, self.draw = data, [list(g) for g in groups], np.asarray(draw, float)
        self.batch_size, self.patch_size = int(batch_size), tuple(patch_size)
        self.out_channels, self.base_channels = int(out_channels), int(base_channels)
        self.seed, self.rank, self.profile = int(seed), int(rank), augmentation
        self.prior, self.spacing_mm = prior, tuple(float(x) for x in spacing_mm)
        # Where lesions and cord are, found once (not per patch).
        self.voxels = [(np.argwhere(lab[1] > 0.5), np.argwhere(lab[0] > 0.5)) for _, lab in data]
        self._augment = None  # made in the process that uses it (workers make their own)

    def __len__(self) -> int:
        return 2**31 - 1  # indexed by iteration number; the sampler says which

    def __getitem__(self, iteration: int) -> Batch:
        rng = np.random.default_rng([self.seed, self.rank, int(iteration)])
        if self._augment is None:
            self._augment = training_augmentation(None, self.profile)
        augment = seed_augmentation(self._augment, int(rng.integers(2**31 - 1)))
        samples, labelled_gm = [], []
        for _ in range(self.batch_size):
            group = self.groups[int(rng.choice(len(self.groups), p=self.draw))]
            k = group[int(rng.integers(len(group)))]
            image, labels = self.data[k]
            img_p, lab_p = sample_patch(rng, image, labels, self.patch_size, p_lesion=P_LESION, p_cord=P_CORD,
                                        lesion_voxels=self.voxels[k][0], cord_voxels=self.voxels[k][1])
            labelled_gm.append(lab_p.shape[0] > self.base_channels)
            if lab_p.shape[0] < self.out_channels:  # no grey matter label: that output is not trained
                lab_p = np.concatenate([lab_p, np.zeros((self.out_channels - lab_p.shape[0],) + lab_p.shape[1:],
                                                        lab_p.dtype)])
            sample = augment({"image": img_p[None], "label": lab_p})
            if self.prior is not None:
                sample = dict(sample, image=self._with_prior(rng, sample))
            samples.append(sample)
        x, y = to_batch(samples)
        return Batch(x, y, torch.tensor(labelled_gm))


    def _with_prior(self, rng: np.random.Generator, sample: dict) -> np.ndarray:
        cord = np.asarray(sample["label"][0]) > 0.5
        scale = tuple(np.exp(rng.normal(0.0, PRIOR_SCALE_SD, 2)))
        shift = tuple(rng.normal(0.0, PRIOR_SHIFT_SD_MM, 2))
        prior = tissue_prior(cord, self.spacing_mm, self.prior, scale=scale, shift_mm=shift)
        return np.concatenate([np.asarray(sample["image"], np.float32), prior])


def _collate(batch: Batch) -> Batch:
    return batch


def batch_loader(batches: PatchBatches, first: int, last: int, workers: int = 0,
                 pin_memory: bool = False) -> DataLoader:
    """Batches ``first`` to ``last`` (inclusive), in order, made by ``workers`` processes (0: this one)."""
    options = {}
    if workers > 0:
        options["prefetch_factor"] = 2  # each worker runs one torch thread (the DataLoader sets it)
        options["multiprocessing_context"] = process_context()
    return DataLoader(batches, batch_size=None, sampler=range(first, last + 1), num_workers=int(workers),
                      collate_fn=_collate, pin_memory=pin_memory, **options)
