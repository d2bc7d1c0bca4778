"""Settings of a training run, and the checks and derived values that depend on them alone."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch


@dataclass
class TrainingConfig:
    suffixes: tuple[str, ...] = ("T2w", "T1w", "PSIR", "STIR", "T2starw")
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    patch_size: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 2
    iterations: int = 2000
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    val_every: int = 250
    val_max_images: int = 6
    max_minutes: float | None = None
    seed: int = 0
    threads: int | None = None
    space: str = "native"  # "straight": stage-2 model on the straightened cord
    augmentation: str = "standard"  # "domain": orientation and strong intensity randomisation
    exclude_subjects: tuple[str, ...] = ()  # held out (cross-validation)
    require_lesion: bool = True  # False: images with a cord label only are lesion-free cases
    init_from: str | None = None  # model name or directory to fine-tune
    tta_flip_axes: tuple[tuple[int, ...], ...] = ()  # test-time flips recorded for inference
    freeze: str = "none"  # "encoder": keep the pretrained encoder fixed (with init_from)
    encoder_lr_scale: float = 0.1  # with init_from: the pretrained encoder learns this much slower
    patience: int | None = None  # stop after this many validations without improvement
    resume: bool = False  # continue from MODEL_DIR/checkpoint.pt
    folds: int | None = None  # k-fold: validate on fold ``fold`` of ``folds`` subject groups
    fold: int = 0
    cord_label: str = "seg-manual"  # label files: <stem>_<label>.nii.gz in derivatives/labels
    lesion_label: str = "lesion-manual"
    monitor: str = "lesion_f1"  # validation metric that picks the saved model and drives --patience
    filters: dict | None = None  # pybids filters selecting the images (as the app's --bids-filter-file)
    participant_label: tuple[str, ...] = ()  # train on these subjects only (labels without "sub-")
    tensorboard: bool = False  # also write TensorBoard scalars to MODEL_DIR/tensorboard
    dataset_weights: tuple[float, ...] = ()  # relative sampling weight of each dataset (empty: equal)
    grey_matter_label: str | None = None  # <stem>_<label>.nii.gz: grey matter as a third output, where labelled
    dice_weight: float = 1.0  # weight of the Dice term against cross-entropy (1.0) in the loss
    fine_lesion_label: str | None = None  # <stem>_<label>.nii.gz: fine lesion fractions label the straight grid
    workers: int = 0  # processes preprocessing, then preparing batches (0: the training process); same results
    cpu_bf16: bool = False  # on a CPU, compute the network in bfloat16 (autocast); weights and loss stay float32
    tissue_prior: bool = False  # straight space: grey/white matter expected in the cord as two more input channels


#: Validation metrics early stopping and model selection can follow.
MONITORED = ("lesion_f1", "lesion_dice", "cord_dice")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, through oneDNN)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_cpu_bf16() -> None:
    """Refuse bfloat16 on a CPU without native support: emulated, it is slower than float32."""
    if not cpu_has_native_bf16():
        raise ValueError("--cpu-bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); train in float32")


def monitored_score(metrics: dict[str, float], monitor: str) -> float:
    """The number that selects the best model and drives early stopping (higher is better).

    Ties and undefined values fall back on the other metrics, so a cord-only
    validation set (no lesion anywhere) is judged by its cord Dice.
    """
    if monitor not in MONITORED:
        raise ValueError(f"monitor must be one of {MONITORED}, not {monitor!r}")
    order = [monitor] + [m for m in MONITORED if m != monitor]
    values = [metrics.get(f"val_{m}", float("nan")) for m in order]
    values = [v if np.isfinite(v) else 0.0 for v in values]
    # Lexicographic: the monitored metric first, the others break ties.
    return values[0] + 1e-3 * values[1] + 1e-6 * values[2]


def sampling_weights(config: TrainingConfig, n_datasets: int) -> np.ndarray:
    """Sampling weight of each dataset, checked against the number of datasets."""
    if not config.dataset_weights:
        return np.ones(n_datasets)
    weights = np.asarray(config.dataset_weights, float)
    if len(weights) != n_datasets:
        raise ValueError(f"--dataset-weights: {len(weights)} weights for {n_datasets} datasets "
                         "(one per dataset: BIDS_DIR, then each --add-dataset)")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"--dataset-weights: weights must be >= 0 and not all 0, got {list(config.dataset_weights)}")
    return weights


def draw_probabilities(weights: np.ndarray, training_images: Sequence[int]) -> np.ndarray:
    """Probability that a batch sample comes from each dataset.

    A dataset left without training images (all its subjects validate or are
    excluded) is never drawn; the others share its weight in proportion.
    """
    draw = np.array([w if n else 0.0 for w, n in zip(weights, training_images)], float)
    if draw.sum() <= 0:
        raise ValueError("no training image in any dataset with a weight above 0")
    return draw / draw.sum()


def voxel_mm3(config: TrainingConfig) -> float:
    """Voxel volume of the grid the network trains on."""
    if config.space == "straight":
        from ..model.cascade import StraightSpace

        return float(np.prod(StraightSpace().spacing_mm))
    return float(np.prod(config.spacing_mm))




def check_config(config: TrainingConfig, device: str) -> None:
    """Settings that cannot work together, refused before any preprocessing."""
    if not config.dice_weight >= 0:
        raise ValueError(f"--dice-weight must be >= 0, got {config.dice_weight}")
    if config.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {config.workers}")
    if config.fine_lesion_label and config.space != "straight":
        raise ValueError("--fine-lesion-label needs --space straight (the fine maps label the straightened cord)")
    if config.tissue_prior and config.space != "straight":
        raise ValueError("--tissue-prior is for stage 2 (--space straight): the prior is fitted to the "
                         "straightened cord")
    if config.cpu_bf16 and device == "cpu":
        check_cpu_bf16()
