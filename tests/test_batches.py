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


@pytest.mark.parametrize("profile", ["standard", "domain", "domain-straight", "domain-range", "domain-window"])
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
    for profile in ("standard", "domain", "domain-straight", "domain-range", "domain-window"):
        augment = training_augmentation(None, profile)
        runs = []
        for _ in range(2):
            seed_augmentation(augment, 7)
            runs.append([np.asarray(augment(dict(patch))["image"]) for _ in range(6)])
        assert all(np.array_equal(a, b) for a, b in zip(*runs)), profile


def test_domain_straight_never_turns_the_cord_axis():
    """The straightened grid's last axis runs along the cord in every image: stage 2's domain randomisation
    keeps it there, while the whole-image profile may move it to any axis."""
    label = np.zeros((2, 24, 24, 24), np.float32)
    label[0, 10:14, 10:14, :] = 1  # a cord along the last axis
    patch = {"image": np.random.default_rng(3).random((1, 24, 24, 24), dtype=np.float32), "label": label}

    def longest_axes(profile: str) -> set[int]:
        augment = seed_augmentation(training_augmentation(None, profile), 11)
        axes = set()
        for _ in range(40):
            cord = np.asarray(augment(dict(patch))["label"])[0] > 0.5
            axes.add(int(np.argmax([np.ptp(np.nonzero(cord)[a]) for a in range(3)])))
        return axes

    assert longest_axes("domain-straight") == {2}
    assert len(longest_axes("domain")) > 1


def test_domain_range_compresses_intensities_towards_zero_in_some_patches():
    """As a few very bright voxels would, after the percentile scaling; "domain" alone never scales below x0.8."""
    patch = {"image": np.full((1, 16, 16, 16), 0.5, np.float32), "label": np.zeros((2, 16, 16, 16), np.float32)}
    compress = training_augmentation(3, "domain-range").transforms[-1]
    means = [float(np.asarray(compress(dict(patch))["image"]).mean()) for _ in range(60)]
    scaled = [m for m in means if m < 0.499]
    assert 5 <= len(scaled) <= 35, "about 30 % of the patches"
    assert all(0.15 - 1e-6 <= m for m in scaled), "by 0.3-1"
    assert min(scaled) < 0.4


def test_domain_window_scales_either_way_and_clips_as_the_intensity_scaling_does():
    from bids_sclesion.training.transforms import RandWindowd

    patch = {"image": np.linspace(-1, 2, 16 ** 3, dtype=np.float32).reshape(1, 16, 16, 16)}
    window = RandWindowd(prob=1.0, seed=5)
    factors = []
    for _ in range(40):
        out = np.asarray(window(dict(patch))["image"])
        assert out.min() >= -1.0 and out.max() <= 2.0
        middle = patch["image"][0, 8, 8, 8]
        factors.append(float(out[0, 8, 8, 8] / middle))
    assert min(factors) < 0.8 and max(factors) > 1.25, "darker and brighter windows"
    assert all(1 / 3 - 1e-4 <= f <= 3 + 1e-4 for f in factors)
    assert isinstance(training_augmentation(1, "domain-window").transforms[-1], RandWindowd)
