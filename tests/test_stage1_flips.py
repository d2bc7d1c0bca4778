"""Stage 1's test-time flips only where its plain pass is unsure (``--stage1-flips unsure``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from bids_sclesion.config import SegmentationSettings
from bids_sclesion.model.inference import predict_probabilities
from bids_sclesion.model.io import resolve_model
from bids_sclesion.model.metadata import model_identity
from bids_sclesion.model.network import NetworkConfig, build_network
from bids_sclesion.provenance import citation_text, run_provenance

FLIPS = ((0,), (1,), (2,))
ROI = (16, 16, 16)


class CountingNetwork(torch.nn.Module):
    """A small U-Net (not flip-invariant) plus ``rod_weight`` times the input less ``level``, so that with a
    weight the bright rod alone is sure; counts the windows it is given."""

    def __init__(self, rod_weight: float = 0.0, level: float = 2.0):
        super().__init__()
        torch.manual_seed(3)
        self.net = build_network(NetworkConfig(channels=(4, 8), strides=(2,))).eval()
        self.rod_weight, self.level, self.windows = rod_weight, level, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.windows += x.shape[0]
        return self.net(x) + self.rod_weight * (x - self.level)


def volume(shape=(40, 30, 20)) -> np.ndarray:
    """Noise with a bright rod: the grid of 16-voxel windows is not symmetric along the first two axes."""
    data = np.random.default_rng(0).random(shape).astype(np.float32)
    data[18:24, 12:18, :] += 3.0
    return data


def run(network, data, **kw) -> np.ndarray:
    return predict_probabilities(network, data, roi_size=ROI, size_divisor=2, flip_axes=FLIPS,
                                 precision="float32", **kw)


def test_flipping_every_window_gives_the_mean_of_the_flipped_volumes():
    """With a threshold that every window reaches, the result is the four-copy mean, window grid included."""
    network, data = CountingNetwork(), volume()
    expected = run(network, data, return_copies=True).mean(axis=0)
    got = run(network, data, flip_above=0.0)
    np.testing.assert_allclose(got, expected, atol=1e-5)


def test_a_threshold_no_window_reaches_leaves_the_plain_pass_and_runs_no_flipped_window():
    network, data = CountingNetwork(), volume()
    plain = run(network, data, return_copies=True)[0]
    network.windows = 0
    got = run(network, data, flip_above=1.5)
    np.testing.assert_allclose(got, plain, atol=1e-6)
    assert network.windows == network_windows_per_pass(data.shape)


def network_windows_per_pass(shape) -> int:
    """Windows of one sliding-window pass: 16-voxel windows, 12-voxel steps over the grid padded to even sizes."""
    counts = [1 if n <= 16 else int(np.ceil((n + n % 2 - 16) / 12)) + 1 for n in shape]
    return int(np.prod(counts))


def test_flips_run_only_near_what_the_plain_pass_found_and_average_there():
    """Probabilities reach the threshold only on the rod: windows far from it are not flipped, voxels
    whose every window was flipped get the full mean, voxels with none the plain pass."""
    network, data = CountingNetwork(rod_weight=10.0), volume((64, 64, 16))
    copies = run(network, data, return_copies=True)
    plain, mean = copies[0], copies.mean(axis=0)
    level = 0.5
    network.windows = 0
    got = run(network, data, flip_above=level)
    per_pass = network_windows_per_pass(data.shape)
    assert per_pass < network.windows < 4 * per_pass
    strong = plain.max(axis=0) >= level
    assert strong.any() and not strong[:16].any() and not strong[:, 30:].any(), "the rod alone is sure"
    window_free = np.ones(data.shape, bool)  # voxels no window holding a strong voxel reaches
    for i, j in np.argwhere(strong.any(axis=2)):
        window_free[max(0, i - 16): i + 17, max(0, j - 16): j + 17] = False
    assert window_free.any()
    np.testing.assert_allclose(got[:, window_free], plain[:, window_free], atol=1e-6)
    i, j, k = np.argwhere(strong)[0]
    np.testing.assert_allclose(got[:, i, j, k], mean[:, i, j, k], atol=1e-5)
    assert np.abs(got - plain)[:, ~window_free].max() > 1e-3, "near the rod the flips count"


def test_the_setting_is_checked_recorded_and_cited():
    with pytest.raises(ValueError, match="stage1_flips"):
        SegmentationSettings(stage1_flips="some")
    stage1 = model_identity(resolve_model("stage1"))
    unsure = citation_text(run_provenance(stage1, None, {"Stage1Flips": "unsure"}))
    assert "only in the sliding windows where the plain pass reached a probability of 0.1" in unsure
    assert "sliding windows" not in citation_text(run_provenance(stage1, None, {"Stage1Flips": "all"}))


def test_segment_image_runs_the_flips_the_setting_names():
    import nibabel as nib
    from pathlib import Path

    from bids_sclesion.model.io import LoadedModel
    from bids_sclesion.model.segment import segment_image

    network = CountingNetwork(rod_weight=20.0, level=0.7)  # the model's input is normalised to [0, 1]
    metadata = {"name": "counting", "spacing_mm": [1.0] * 3, "network": {"channels": [4, 8], "strides": [2]},
                "inference": {"roi_size": list(ROI), "overlap": 0.25, "flip_axes": [list(a) for a in FLIPS]}}
    model = LoadedModel(network, metadata, Path("counting"))
    img = nib.Nifti1Image(volume((64, 64, 16)), np.eye(4))
    windows = {}
    for flips in ("none", "unsure", "all"):
        network.windows = 0
        segment_image(img, model, flips=flips)
        windows[flips] = network.windows
    assert windows["none"] < windows["unsure"] < windows["all"] == 4 * windows["none"]
    with pytest.raises(ValueError, match="flips must be one of"):
        segment_image(img, model, flips="some")


def test_out_of_memory_in_a_flipped_window_retries_it_with_a_warning(caplog):
    class OutOfMemoryOnce(torch.nn.Module):
        """Raises an out-of-memory error the first time it gets a flipped batch (its second call)."""

        def __init__(self, network):
            super().__init__()
            self.network, self.calls = network, 0

        def forward(self, x):
            self.calls += 1
            if self.calls == -(-network_windows_per_pass(data.shape) // 2) + 1:  # the plain pass: batches of 2
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            return self.network(x)

    network, data = CountingNetwork(rod_weight=10.0), volume((64, 64, 16))
    expected = run(network, data, flip_above=0.5)
    with caplog.at_level("WARNING", logger="bids_sclesion.inference"):
        got = run(OutOfMemoryOnce(network), data, flip_above=0.5)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert any("flipped windows" in r.getMessage() for r in caplog.records)
