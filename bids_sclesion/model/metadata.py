"""A model's ``model.json``: read, written and summarised here and nowhere else.

It says what the network is (inputs, outputs, grid, architecture), how the app runs it (inference),
what it is (name, own version, the SHA-256 of its weights) and what it learnt from (training: datasets,
subjects, settings, and the model it was initialised from, by name, version and weights' SHA-256).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..utils.io import sha256_of, write_json

WEIGHTS = "model.safetensors"
METADATA = "model.json"
#: Keys every model.json has; the app cannot use a model without them.
REQUIRED = ("spacing_mm", "network")


class ModelError(ValueError):
    """A model that cannot be used: the message names the file and the problem."""


def read_metadata(model_dir: str | Path, required: tuple[str, ...] = REQUIRED) -> dict[str, Any]:
    """The ``model.json`` of ``model_dir``, checked for the ``required`` keys (by default those the app needs)."""
    path = Path(model_dir) / METADATA
    try:
        metadata = json.loads(path.read_text())
    except OSError as exc:
        raise ModelError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    except json.JSONDecodeError as exc:
        raise ModelError(f"{path}: invalid JSON ({exc})") from exc
    if not isinstance(metadata, dict):
        raise ModelError(f"{path}: expected a JSON object")
    for key in required:
        if key not in metadata:
            raise ModelError(f"{path}: missing key '{key}'")
    return metadata


def write_metadata(metadata: dict[str, Any], model_dir: str | Path) -> Path:
    """Write ``model.json`` (atomically) with the SHA-256 of the weights beside it, so the two cannot drift apart."""
    model_dir = Path(model_dir)
    weights = model_dir / WEIGHTS
    metadata = dict(metadata)
    if weights.is_file():
        metadata["weights_sha256"] = sha256_of(weights)
    return write_json(metadata, model_dir / METADATA)


def weights_sha256(model_dir: str | Path) -> str:
    return sha256_of(Path(model_dir) / WEIGHTS)


def model_version(metadata: dict[str, Any]) -> str:
    """The model's own version (``model_version``), else the version of the software that trained it."""
    return str(metadata.get("model_version", metadata.get("version", "unknown")))


def model_identity(model_dir: str | Path) -> dict[str, str]:
    """Name, own version and weights' SHA-256 of a model folder (what every output sidecar records)."""
    model_dir = Path(model_dir)
    metadata = read_metadata(model_dir)
    return {"Name": str(metadata.get("name", model_dir.name)), "Version": model_version(metadata),
            "SHA256": weights_sha256(model_dir), "TrainedWith": f"bids_sclesion {metadata.get('version', 'unknown')}"}
