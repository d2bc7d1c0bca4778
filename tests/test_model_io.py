import json

import numpy as np
import pytest
import torch

from bids_sclesion.model.inference import predict_probabilities
from bids_sclesion.model.io import ModelError, bundled_model_dir, load_model, save_model
from bids_sclesion.model.network import NetworkConfig, build_network


def _tiny(tmp_path):
    cfg = NetworkConfig(channels=(4, 8), strides=(2,))
    net = build_network(cfg)
    meta = {"name": "tiny", "version": "0", "spacing_mm": [1, 1, 1], "network": cfg.to_dict()}
    return save_model(net, meta, tmp_path / "tiny"), net


def test_roundtrip_gives_identical_predictions(tmp_path):
    path, net = _tiny(tmp_path)
    loaded = load_model(path)
    x = np.random.default_rng(0).random((20, 18, 16)).astype(np.float32)
    net.eval()
    a = predict_probabilities(net, x, size_divisor=2, roi_size=(16, 16, 16))
    b = predict_probabilities(loaded.network, x, size_divisor=2, roi_size=(16, 16, 16))
    assert a.shape == (2, 20, 18, 16)
    assert np.allclose(a, b)


def test_tampered_or_mismatched_weights_are_refused(tmp_path):
    path, _ = _tiny(tmp_path)
    weights = path / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    weights.write_bytes(bytes(blob[: len(blob) // 2]))
    with pytest.raises(ModelError, match="model.safetensors"):
        load_model(path)
    # A pickle is never loaded: a file that is not safetensors is refused.
    torch.save({"x": torch.zeros(1)}, weights)
    with pytest.raises(ModelError, match="safetensors"):
        load_model(path)
    # Weights of another architecture are refused before use.
    path2, _ = _tiny(tmp_path / "b")
    meta = json.loads((path2 / "model.json").read_text())
    meta["network"]["channels"] = [8, 16]
    (path2 / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="do not match"):
        load_model(path2)


def test_missing_model_directory(tmp_path):
    with pytest.raises(ModelError, match="not a model directory"):
        load_model(tmp_path)


def test_bundled_model_loads_and_has_a_card():
    path = bundled_model_dir("default")
    model = load_model("default")
    meta = model.metadata
    assert set(meta["contrasts"]) >= {"T2w", "PSIR", "STIR", "T1w", "T2starw"}
    assert meta["spacing_mm"] == [1.0, 1.0, 1.0]
    assert "test_metrics" in meta, "the bundled model records its measured test metrics"
    assert (path / "MODEL_CARD.md").is_file()
    assert (path / "model.safetensors").stat().st_size < 30 * 1024 * 1024
