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


def test_every_bundled_model_loads_has_a_card_and_all_fit_the_size_budget():
    from bids_sclesion.model.io import BUNDLED

    total = 0
    for name in BUNDLED:
        model = load_model(name)
        assert model.metadata["name"] == name, f"{name}: model.json names another model"
        assert "test_metrics" in model.metadata, f"{name}: no measured test metrics"
        assert (model.path / "MODEL_CARD.md").read_text().startswith(f"# Model card: `{name}`")
        total += (model.path / "model.safetensors").stat().st_size
    on_disk = {d.name for d in bundled_model_dir("default").parent.iterdir() if d.is_dir()}
    assert on_disk == set(BUNDLED), "every model directory shipped is one the app can name"
    assert total <= 30e6, f"bundled models take {total / 1e6:.1f} MB (budget 30 MB)"


class _OutOfMemoryAtFirst(torch.nn.Module):
    """Wraps a network; raises an out-of-memory error for the first ``failures`` calls."""

    def __init__(self, network, failures: int):
        super().__init__()
        self.network, self.failures, self.calls = network, failures, 0

    def forward(self, x):
        self.calls += 1
        if self.calls <= self.failures:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.network(x)


@pytest.mark.parametrize("failures", [1, 2])
def test_out_of_memory_falls_back_with_a_warning_and_the_same_result(failures, caplog):
    from bids_sclesion.model.inference import predict_probabilities

    model = load_model("stage2")
    rng = np.random.default_rng(0)
    volume = rng.normal(size=(40, 40, 48)).astype(np.float32)
    expected = predict_probabilities(model.network, volume, roi_size=model.roi_size, size_divisor=model.size_divisor)
    flaky = _OutOfMemoryAtFirst(model.network, failures)
    with caplog.at_level("WARNING", logger="bids_sclesion.inference"):
        got = predict_probabilities(flaky, volume, roi_size=model.roi_size, size_divisor=model.size_divisor)
    np.testing.assert_allclose(got, expected, atol=1e-5)
    warnings = [r.getMessage() for r in caplog.records if "out of memory" in r.getMessage()]
    assert len(warnings) == failures
    assert "one window at a time" in warnings[0]
    if failures == 2:
        assert "on the CPU" in warnings[1]


def test_errors_other_than_out_of_memory_are_not_hidden():
    from bids_sclesion.model.inference import predict_probabilities

    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("shape mismatch in layer 3")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        predict_probabilities(Broken(), np.zeros((16, 16, 16), np.float32), roi_size=(16, 16, 16))


def test_float16_stored_weights_load_as_float32_and_predict_alike(tmp_path):
    """Half the file; the network still computes in float32 and its maps barely move."""
    from safetensors.torch import load_file, save_file

    path, net = _tiny(tmp_path)
    half = save_model(net, load_model(path).metadata, tmp_path / "half", weights_dtype="float16")
    assert {t.dtype for t in load_file(str(half / "model.safetensors")).values() if t.is_floating_point()} == {torch.float16}
    assert (half / "model.safetensors").stat().st_size < 0.6 * (path / "model.safetensors").stat().st_size
    loaded = load_model(half)
    assert loaded.metadata["weights_dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.network.parameters())
    x = np.random.default_rng(1).random((20, 18, 16)).astype(np.float32)
    net.eval()
    # float32 compute, so that only the stored weights differ (auto would add bfloat16 on CPUs that have it)
    a = predict_probabilities(net, x, size_divisor=2, roi_size=(16, 16, 16), precision="float32")
    b = predict_probabilities(loaded.network, x, size_divisor=2, roi_size=(16, 16, 16), precision="float32")
    assert 0 < np.abs(a - b).max() < 1e-2
    # Integer or float64 weights are not a format this project writes: refused, the file named.
    state = {k: v.to(torch.float64) if v.is_floating_point() else v for k, v in net.state_dict().items()}
    save_file(state, str(half / "model.safetensors"))
    with pytest.raises(ModelError, match="model.safetensors: weights stored as float64"):
        load_model(half)
    with pytest.raises(ValueError, match="weights_dtype"):
        save_model(net, {}, tmp_path / "bad", weights_dtype="int8")


def test_bundled_models_record_the_hash_of_their_weights_and_of_their_parent():
    from bids_sclesion.model.io import BUNDLED, bundled_model_dir
    from bids_sclesion.model.metadata import read_metadata, weights_sha256

    for name in BUNDLED:
        meta = read_metadata(bundled_model_dir(name))
        assert meta["weights_sha256"] == weights_sha256(bundled_model_dir(name)), name
        parent = meta["training"].get("init_from")
        assert parent != name, f"{name} says it was initialised from itself"
        if parent in BUNDLED:
            assert meta["training"]["init_from_sha256"] == weights_sha256(bundled_model_dir(parent)), name


def test_metadata_reader_names_the_file(tmp_path):
    from bids_sclesion.model.metadata import ModelError, read_metadata

    (tmp_path / "model.json").write_text('{"network": {}}')
    with pytest.raises(ModelError, match=r"model.json: missing key 'spacing_mm'"):
        read_metadata(tmp_path)
    (tmp_path / "model.json").write_text("[1]")
    with pytest.raises(ModelError, match="expected a JSON object"):
        read_metadata(tmp_path)


def test_precision_auto_uses_half_precision_only_where_the_hardware_has_it(monkeypatch):
    from bids_sclesion.model import inference

    assert inference.inference_dtype("cuda", "auto") == torch.float16
    assert inference.inference_dtype("cuda", "float32") == torch.float32
    assert inference.inference_dtype("cpu", "float32") == torch.float32
    monkeypatch.setattr(inference, "cpu_has_native_bfloat16", lambda: True)
    assert inference.inference_dtype("cpu", "auto") == torch.bfloat16
    monkeypatch.setattr(inference, "cpu_has_native_bfloat16", lambda: False)  # emulated bfloat16 would be slower
    assert inference.inference_dtype("cpu", "auto") == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        inference.inference_dtype("cpu", "float8")


def test_bfloat16_inference_gives_the_float32_masks(monkeypatch, synth_two_subjects):
    """Stage 1 in bfloat16 against float32 on a phantom: probabilities within a few hundredths, the same cord."""
    import nibabel as nib

    from bids_sclesion.model import inference
    from bids_sclesion.model.segment import segment_image

    monkeypatch.setattr(inference, "cpu_has_native_bfloat16", lambda: True)  # emulated where it is not native
    img = nib.as_closest_canonical(nib.load(synth_two_subjects / "sub-01" / "anat" / "sub-01_T2w.nii.gz"))
    model = load_model("stage1")
    cord32, _ = segment_image(img, model, precision="float32")
    cord16, _ = segment_image(img, model, precision="auto")
    assert np.abs(cord16 - cord32).max() < 0.1
    a, b = cord32 >= 0.5, cord16 >= 0.5
    assert a.sum() > 1000 and 2 * (a & b).sum() / (a.sum() + b.sum()) > 0.99


def test_interpolated_weights_lie_between_the_two_networks():
    from bids_sclesion.model.io import interpolate_state

    cfg = NetworkConfig(channels=(4, 8), strides=(2,))
    torch.manual_seed(0)
    base, tuned = build_network(cfg).state_dict(), build_network(cfg).state_dict()
    for alpha in (0.0, 0.3, 1.0):
        mixed = interpolate_state(base, tuned, alpha)
        for name, value in mixed.items():
            if value.is_floating_point():
                torch.testing.assert_close(value, (1 - alpha) * base[name] + alpha * tuned[name])
            else:
                assert torch.equal(value, tuned[name])
    # The network takes the mixed weights as they are, and two different networks were mixed.
    build_network(cfg).load_state_dict(interpolate_state(base, tuned, 0.5))
    assert any(not torch.equal(base[k], tuned[k]) for k in base if base[k].is_floating_point())
    with pytest.raises(ValueError, match="alpha"):
        interpolate_state(base, tuned, 1.5)
    wider = build_network(NetworkConfig(channels=(4, 16), strides=(2,))).state_dict()
    with pytest.raises(ModelError, match="differ in shape"):
        interpolate_state(base, wider, 0.5)
