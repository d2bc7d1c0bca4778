"""Saving and loading models: safetensors weights + JSON metadata, no pickle.

A model is a directory holding ``model.safetensors`` and ``model.json``.
Loading never executes code from the file; weights whose names or shapes do
not match the architecture described by the metadata are refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..utils.io import atomic_path
from .metadata import METADATA, WEIGHTS, ModelError, model_version, read_metadata, write_metadata
from .network import NetworkConfig, build_network

__all__ = ["BUNDLED", "METADATA", "WEIGHTS", "LoadedModel", "ModelError", "bundled_model_dir", "interpolate_state",
           "load_model", "resolve_model", "save_model"]
#: Models shipped in bids_sclesion/data/models: the cascade's two stages (``stage1_2mm``,
#: on a 2 mm grid, and ``stage2``), the 1 mm stage 1 of 4.x (``--model stage1``), the
#: phantom-only single-stage model of release 0.1.0 (kept as a baseline) and the
#: previous stages 2 (v3, which the current one's recipe starts from and interpolates
#: back towards, and v2, which v3 was made from).
BUNDLED = ("stage1", "stage2", "default", "stage2_v2", "stage2_v3", "stage1_2mm")


@dataclass
class LoadedModel:
    network: torch.nn.Module
    metadata: dict[str, Any]
    path: Path

    @property
    def name(self) -> str:
        return str(self.metadata.get("name", self.path.name))

    @property
    def version(self) -> str:
        """The model's own version (``model_version``), else the version of the software that trained it."""
        return model_version(self.metadata)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return tuple(float(s) for s in self.metadata["spacing_mm"])

    @property
    def roi_size(self) -> tuple[int, ...]:
        """Sliding-window size: the training patch (instance norm sees windows of that size)."""
        return tuple(int(r) for r in self.metadata.get("inference", {}).get("roi_size", (64, 64, 64)))

    @property
    def overlap(self) -> float:
        """Overlap of neighbouring sliding windows (fraction of the window)."""
        return float(self.metadata.get("inference", {}).get("overlap", 0.25))

    @property
    def size_divisor(self) -> int:
        """Inputs are padded to a multiple of the network's total down-sampling."""
        return NetworkConfig.from_dict(self.metadata["network"]).size_divisor

    @property
    def voxel_average(self) -> bool:
        """Stage 2: its maps are averaged over each thick source voxel on the way back (trained on fine lesion maps)."""
        return bool(self.metadata.get("inference", {}).get("voxel_average", False))

    @property
    def uses_tissue_prior(self) -> bool:
        """Stage 2 takes the grey/white matter prior of its cord as input channels beside the image."""
        return NetworkConfig.from_dict(self.metadata["network"]).in_channels > 1

    @property
    def flip_axes(self) -> tuple[tuple[int, ...], ...]:
        """Test-time flips the model predicts with (empty: none)."""
        return tuple(tuple(int(a) for a in axes) for axes in self.metadata.get("inference", {}).get("flip_axes", []))


def bundled_model_dir(name: str = "default") -> Path:
    return Path(str(resources.files("bids_sclesion") / "data" / "models" / name))


def resolve_model(name_or_path: str | Path | None) -> Path:
    """A bundled model name ('default') or a path to a model directory."""
    if name_or_path is None or str(name_or_path) in BUNDLED:
        return bundled_model_dir(str(name_or_path or "default"))
    return Path(name_or_path)


#: How the weights may be stored; the network always computes in float32 (float16 halves the file).
WEIGHT_DTYPES = {"float32": torch.float32, "float16": torch.float16}


def save_model(network: torch.nn.Module, metadata: dict[str, Any], model_dir: str | Path,
               weights_dtype: str = "float32") -> Path:
    """Write ``model.safetensors`` (floating-point weights stored as ``weights_dtype``) and ``model.json``."""
    if weights_dtype not in WEIGHT_DTYPES:
        raise ValueError(f"weights_dtype must be one of {sorted(WEIGHT_DTYPES)}, got {weights_dtype!r}")
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    dtype = WEIGHT_DTYPES[weights_dtype]
    state = {k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
             for k, v in network.state_dict().items()}
    metadata = dict(metadata, weights_dtype=weights_dtype)
    with atomic_path(model_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_metadata(metadata, model_dir)
    return model_dir


def load_model(name_or_path: str | Path | None = None, device: str | torch.device = "cpu") -> LoadedModel:
    """Load a model directory (or bundled name) safely onto ``device``."""
    model_dir = resolve_model(name_or_path)
    meta_path, weights_path = model_dir / METADATA, model_dir / WEIGHTS
    if not meta_path.is_file() or not weights_path.is_file():
        raise ModelError(f"{model_dir}: not a model directory (needs {METADATA} and {WEIGHTS})")
    metadata = read_metadata(model_dir)
    try:
        config = NetworkConfig.from_dict(metadata["network"])
    except (TypeError, ValueError) as exc:
        raise ModelError(f"{meta_path}: invalid network description ({exc})") from exc
    network = build_network(config)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelError(f"{weights_path}: not a valid safetensors file ({exc})") from exc
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or wrong:
        raise ModelError(
            f"{weights_path}: weights do not match the architecture in {meta_path.name} "
            f"({len(missing)} missing, {len(unexpected)} unexpected, {len(wrong)} with wrong shape)"
        )
    stored = {str(state[k].dtype).removeprefix("torch.") for k in expected if expected[k].is_floating_point()}
    if not stored <= set(WEIGHT_DTYPES):
        raise ModelError(f"{weights_path}: weights stored as {', '.join(sorted(stored - set(WEIGHT_DTYPES)))}; "
                         f"expected {' or '.join(WEIGHT_DTYPES)}")
    # float16-stored weights are widened to the network's float32 as they are copied in.
    network.load_state_dict(state)
    network.eval().to(device)
    return LoadedModel(network=network, metadata=metadata, path=model_dir)


def interpolate_state(base: dict[str, torch.Tensor], tuned: dict[str, torch.Tensor],
                      alpha: float) -> dict[str, torch.Tensor]:
    """Weights ``(1 - alpha) * base + alpha * tuned`` of two networks of one architecture.

    Moving a fine-tuned network part of the way back to the weights it started from keeps much of what the
    fine-tuning gained while losing less of what the base did well (weight-space ensembles: Wortsman et al.
    2022, CVPR). Integer tensors (counters) are taken from ``tuned``.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if set(base) != set(tuned):
        raise ModelError("the two networks do not have the same weights")
    wrong = [k for k in tuned if tuple(base[k].shape) != tuple(tuned[k].shape)]
    if wrong:
        raise ModelError(f"the two networks differ in shape at {len(wrong)} weights, e.g. {wrong[0]}")
    return {k: torch.lerp(base[k].float(), tuned[k].float(), alpha) if tuned[k].is_floating_point() else tuned[k]
            for k in tuned}
