"""Training batches keyed by iteration (bids_sclesion.training.batches), on small arrays."""
import numpy as np
import pytest
import torch

from bids_sclesion.training.batches import PatchBatches, batch_loader
from bids_sclesion.training.transforms import seed_augmentation, training_augmentation


def _toy_data(n: int = 3, shape=(40, 40, 40)):
    rng = np.random.default_rng(0)
    data = []
    for k in range(n):
        image = rng.random(shape, dtype=np.float32)
        labels = np.zeros((2,) + shape, np.float32)
        labels[0, 10:30, 10:30, :] = 1  # cord
        labels[1, 15 + k:19 + k, 18:22, 20:26] = 1  # lesion
        data.append((image, labels))
    return data


def _batches(data, seed=1, rank=0, profile="standard"):
    return PatchBatches(data, [[0, 1], [2]], [0.5, 0.5], batch_size=2, patch_size=(24, 24, 24), out_channels=2,
                        base_channels=2, augmentation=profile, seed=seed, rank=rank)


@pytest.mark.parametrize("profile", ["standard", "domain"])
def test_a_batch_depends_on_its_iteration_only(profile):
    data = _toy_data()
    forward = [_batches(data, profile=profile)[i] for i in (1, 2, 3)]
    backward = _batches(data, profile=profile)
    late = [backward[i] for i in (3, 2, 1)][::-1]
    for a, b in zip(forward, late):
        assert torch.equal(a.image, b.image) and torch.equal(a.label, b.label)
    assert forward[0].image.shape == (2, 1, 24, 24, 24) and forward[0].label.shape == (2, 2, 24, 24, 24)
    assert not torch.equal(forward[0].image, forward[1].image), "iterations draw different batches"
    other_rank = _batches(data, rank=1, profile=profile)[1]
    assert not torch.equal(forward[0].image, other_rank.image), "each process of a torchrun has its own batches"


def test_loader_workers_give_the_batches_of_the_training_process():
    data = _toy_data()
    batches = _batches(data)
    here = [b.image for b in batch_loader(batches, 5, 8, workers=0)]
    pooled = [b.image for b in batch_loader(batches, 5, 8, workers=2)]
    assert len(here) == len(pooled) == 4
    assert all(torch.equal(a, b) for a, b in zip(here, pooled))
    assert torch.equal(here[0], batches[5].image), "the loader starts at the first iteration asked for"


def test_seeding_restarts_every_random_stream_of_the_augmentation():
    patch = {"image": np.random.default_rng(2).random((1, 24, 24, 24), dtype=np.float32),
             "label": np.zeros((2, 24, 24, 24), np.float32)}
    for profile in ("standard", "domain"):
        augment = training_augmentation(None, profile)
        runs = []
        for _ in range(2):
            seed_augmentation(augment, 7)
            runs.append([np.asarray(augment(dict(patch))["image"]) for _ in range(6)])
        assert all(np.array_equal(a, b) for a, b in zip(*runs)), profile
