"""Stage 1's test-time flips computed near the cord only (model.segment)."""
import numpy as np
import torch

from bids_sclesion.model.inference import TTA_FLIPS, predict_probabilities
from bids_sclesion.model.io import LoadedModel
from bids_sclesion.model.network import NetworkConfig, build_network
from bids_sclesion.model.segment import FLIP_MARGIN_MM, _probabilities, cord_box


def _model(flips) -> LoadedModel:
    torch.manual_seed(0)
    cfg = NetworkConfig(channels=(4, 8, 16), strides=(2, 2))
    meta = {"spacing_mm": [1.0, 1.0, 1.0], "network": cfg.to_dict(),
            "inference": {"roi_size": [32, 32, 32], "flip_axes": [list(a) for a in flips]}}
    return LoadedModel(build_network(cfg).eval(), meta, None)


def test_cord_box_widens_the_found_cord_by_the_margin_and_stops_at_the_edges():
    prob = np.zeros((40, 60, 80), np.float32)
    prob[20:24, 30:34, 5:70] = 0.9
    box = cord_box(prob, (1.0, 1.0, 2.0))
    m = int(FLIP_MARGIN_MM)
    assert box == (slice(20 - m, 24 + m), slice(30 - m, 34 + m), slice(0, 70 + m // 2))
    assert cord_box(np.zeros((8, 8, 8)), (1, 1, 1)) is None


class _Pointwise(torch.nn.Module):
    """Cord where the input is bright, and a record of the window sizes it is run on."""

    def __init__(self):
        super().__init__()
        self.windows = []

    def forward(self, x):
        self.windows.append(tuple(x.shape[2:]))
        return torch.cat([20 * (x - 0.5), x - 2.0], dim=1)


def test_flipped_passes_run_on_the_box_around_the_cord_only():
    volume = np.zeros((64, 96, 96), np.float32)
    volume[30:36, 40:46, :] = 1.0  # a bright cord along the last axis
    network = _Pointwise()
    model = _model(TTA_FLIPS)
    model.network = network
    near = _probabilities(volume, model, "cpu", True)
    windows_near = len(network.windows)
    network.windows.clear()
    everywhere = _probabilities(volume, model, "cpu", False)
    assert np.allclose(near, everywhere, atol=1e-6), "a flip-symmetric network gives the same maps"
    assert windows_near < 0.6 * len(network.windows), "the flips cover the box, not the volume"
    assert (near[0] > 0.5).sum() == 6 * 6 * 96


def test_flips_are_averaged_in_the_box_only_and_models_without_flips_are_unchanged():
    rng = np.random.default_rng(0)
    volume = rng.random((48, 64, 64)).astype(np.float32)
    plain_model, flip_model = _model(()), _model(TTA_FLIPS)
    plain = predict_probabilities(plain_model.network, volume, roi_size=(32, 32, 32), size_divisor=4)
    assert np.array_equal(_probabilities(volume, plain_model, "cpu", True), plain)
    near = _probabilities(volume, flip_model, "cpu", True)
    everywhere = _probabilities(volume, flip_model, "cpu", False)
    box = cord_box(plain[0], (1.0, 1.0, 1.0))
    if box is None:  # a random network may find no cord: then nothing is flipped
        assert np.array_equal(near, plain)
        return
    outside = np.ones(volume.shape, bool)
    outside[box] = False
    assert np.array_equal(near[:, outside], plain[:, outside])
    expected = predict_probabilities(flip_model.network, volume[box], roi_size=(32, 32, 32), size_divisor=4,
                                     flip_axes=TTA_FLIPS)
    assert np.allclose(near[(slice(None),) + box], expected, atol=1e-6)
    assert everywhere.shape == near.shape
