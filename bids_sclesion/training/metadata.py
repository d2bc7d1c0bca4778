"""The ``model.json`` a training run writes beside its weights."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .. import __version__
from ..model.metadata import weights_sha256
from ..model.network import GREY_MATTER, IMAGE_INPUT, OUTPUT_CHANNELS, TISSUE_PRIOR_INPUTS, NetworkConfig
from .cases import TrainingCase
from .config import TrainingConfig

def straight_space_dict() -> dict:
    from ..model.cascade import StraightSpace

    return StraightSpace().to_dict()


def voxel_average(config: TrainingConfig, train_cases: Sequence[TrainingCase], init) -> bool:
    """Whether the app should average a stage-2 map over each source voxel's extent on the way back.

    A model taught lesions' physical extent (fine lesion maps) predicts it;
    the mean over a thick voxel is then its covered fraction, which is what
    the source grid's labels threshold. A fine-tuning without fine maps keeps
    the pretrained model's choice.
    """
    if config.space != "straight":
        return False
    if any(c.fine_lesion_path for c in train_cases):
        return True
    return bool(init is not None and init.metadata.get("inference", {}).get("voxel_average", False))


def training_metadata(model_dir: Path, config: TrainingConfig, network_config: NetworkConfig,
                      bids_dirs: Sequence[Path], cases: Sequence[TrainingCase], train_cases: Sequence[TrainingCase],
                      val_cases: Sequence[TrainingCase], init, *, world_size: int, iterations_done: int,
                      minutes: float, best_validation: dict) -> dict:
    """Everything the app and the benchmarks read of a trained model: inputs, outputs, grids, inference
    settings, and what it trained and validated on (subjects, datasets, settings, the model it started from)."""
    tissue_prior = network_config.in_channels > 1
    return {
        "name": model_dir.name,
        "version": __version__,
        "inputs": [IMAGE_INPUT] + (list(TISSUE_PRIOR_INPUTS) if tissue_prior else []),
        "outputs": list(OUTPUT_CHANNELS) + [GREY_MATTER] * (network_config.out_channels - len(OUTPUT_CHANNELS)),
        "spacing_mm": list(config.spacing_mm),
        "space": config.space,
        "contrasts": sorted({c.suffix for c in cases}),
        "straight_space": straight_space_dict() if config.space == "straight" else None,
        "network": network_config.to_dict(),
        # Instance normalisation sees windows of the training patch size.
        "inference": {"roi_size": list(config.patch_size), "overlap": 0.25,
                      "flip_axes": [list(a) for a in config.tta_flip_axes],
                      "voxel_average": voxel_average(config, train_cases, init)},
        "training": {
            "bids_dir": [str(b) for b in bids_dirs],
            # The starting model by name, own version and weights (a bundled name points at different weights
            # from one release to the next).
            "init_from": init.name if init is not None else None,
            "init_from_version": init.version if init is not None else None,
            "init_from_sha256": weights_sha256(init.path) if init is not None else None,
            "images": len(train_cases),
            "grey_matter_images": sum(c.grey_matter_path is not None for c in train_cases),
            "fine_lesion_images": sum(c.fine_lesion_path is not None for c in train_cases),
            "subjects": sorted({c.subject for c in train_cases}),
            "validation_subjects": sorted({c.subject for c in val_cases}),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
            "processes": world_size,
            "iterations_done": iterations_done,
            "minutes": minutes,
            "best_validation": best_validation,
        },
    }
