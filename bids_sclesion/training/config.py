"""Settings of a training run, and the checks and derived values that depend on them alone."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field, fields
from typing import Callable, Sequence

import numpy as np


#: Validation metrics early stopping and model selection can follow.
MONITORED = ("lesion_f1", "lesion_dice", "cord_dice")


def option(help: str, flag: str | None = None, to_field: Callable | None = None, **argparse_kwargs) -> dict:
    """Field metadata that makes a setting a ``bids_sclesion-train`` option.

    ``flag`` defaults to the field's name (``--learning-rate``); ``to_field`` turns the parsed value into
    the field's (lists become tuples without it); other keywords go to ``ArgumentParser.add_argument``,
    whose default is the field's unless given.
    """
    return {"cli": {"help": help, "flag": flag, "to_field": to_field, "kwargs": argparse_kwargs}}


def _flips(on: bool) -> tuple[tuple[int, ...], ...]:
    from ..model.inference import TTA_FLIPS

    return TTA_FLIPS if on else ()


#: The profiles of ``--augmentation`` (``transforms.training_augmentation`` builds each).
AUGMENTATION_PROFILES = ("standard", "domain", "domain-straight", "domain-range", "domain-window")


@dataclass
class TrainingConfig:
    suffixes: tuple[str, ...] = field(default=("T2w", "T1w", "PSIR", "STIR", "T2starw"), metadata=option(
        "image suffixes to train on", "--contrast", nargs="+"))
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    patch_size: tuple[int, int, int] = field(default=(64, 64, 64), metadata=option(
        "patch size in voxels of the model grid", type=int, nargs=3, metavar="N"))
    batch_size: int = field(default=2, metadata=option("patches per step", type=int))
    iterations: int = field(default=2000, metadata=option("training steps (one batch each)", type=int))
    learning_rate: float = field(default=2e-3, metadata=option("AdamW learning rate at the start", type=float))
    weight_decay: float = 1e-4
    val_fraction: float = field(default=0.15, metadata=option(
        "share of the subjects that validate instead of training", type=float))
    val_every: int = field(default=250, metadata=option("steps between validations", type=int))
    val_max_images: int = field(default=6, metadata=option("validation images scored each time", type=int))
    max_minutes: float | None = field(default=None, metadata=option("stop after this wall time", type=float))
    seed: int = field(default=0, metadata=option("seed of the split, the initial weights and every batch", type=int))
    threads: int | None = field(default=None, metadata=option(
        "torch CPU threads (default: torch's own choice)", "--nthreads", type=int))
    space: str = field(default="native", metadata=option(
        "native: whole-image model (stage 1); straight: model on the straightened cord (stage 2)",
        choices=["native", "straight"]))
    augmentation: str = field(default="standard", metadata=option(
        "domain: axis order, contrast curve, inversion and blur randomised (for real scanners); domain-straight: "
        "the same without the axis order, for stage 2's straightened grid",
        choices=list(AUGMENTATION_PROFILES)))
    exclude_subjects: tuple[str, ...] = field(default=(), metadata=option(
        "subjects held out", nargs="+", metavar="sub-XX"))
    require_lesion: bool = field(default=True, metadata=option(
        "images with a cord label but no lesion label are used as lesion-free", "--allow-missing-lesion-labels",
        to_field=lambda allow: not allow, action="store_true"))
    init_from: str | None = field(default=None, metadata=option(
        "bundled model name or model directory to fine-tune (transfer learning)", metavar="MODEL"))
    tta_flip_axes: tuple[tuple[int, ...], ...] = field(default=(), metadata=option(
        "the model predicts by averaging flips along each axis (4x inference time)", "--tta-flips",
        to_field=_flips, action="store_true"))
    freeze: str = field(default="none", metadata=option(
        "with --init-from: keep the pretrained encoder fixed", choices=["none", "encoder"]))
    encoder_lr_scale: float = field(default=0.1, metadata=option(
        "with --init-from: learning-rate factor of the pretrained encoder", type=float))
    patience: int | None = field(default=None, metadata=option(
        "early stopping: validations without a better score before stopping", type=int))
    resume: bool = field(default=False, metadata=option(
        "continue from MODEL_DIR/checkpoint.pt (written at every validation)", action="store_true"))
    folds: int | None = field(default=None, metadata=option(
        "k-fold cross-validation by subject: K groups, --fold I validates (replaces --val-fraction)", type=int,
        metavar="K"))
    fold: int = field(default=0, metadata=option("which of the K folds validates (0-based)", type=int, metavar="I"))
    cord_label: str = field(default="seg-manual", metadata=option(
        "cord label files <stem>_<LABEL>.nii.gz in derivatives/labels (e.g. label-SC_seg)"))
    lesion_label: str = field(default="lesion-manual", metadata=option(
        "lesion label files <stem>_<LABEL>.nii.gz (e.g. label-lesion_mask)"))
    monitor: str = field(default="lesion_f1", metadata=option(
        "validation metric that picks the saved model and drives --patience", choices=list(MONITORED)))
    filters: dict | None = None  # pybids filters selecting the images (as the app's --bids-filter-file)
    participant_label: tuple[str, ...] = field(default=(), metadata=option(
        "train on these subjects only (labels with or without 'sub-')", nargs="+", metavar="LABEL",
        to_field=lambda labels: tuple(label.removeprefix("sub-") for label in labels)))
    tensorboard: bool = field(default=False, metadata=option(
        "also write TensorBoard scalars to MODEL_DIR/tensorboard (needs the tensorboard package)",
        action="store_true"))
    dataset_weights: tuple[float, ...] = field(default=(), metadata=option(
        "how often batches draw from each dataset, BIDS_DIR first then each --add-dataset in order (relative "
        "weights, e.g. 3 1 1: the first dataset in 3 of 5 draws)", type=float, nargs="+", default=None,
        metavar="W", to_field=lambda weights: tuple(weights) if weights else ()))
    grey_matter_label: str | None = field(default=None, metadata=option(
        "grey matter label files <stem>_<LABEL>.nii.gz (e.g. gmseg-manual): train grey matter as a third output "
        "where they exist, so that the network learns the tissue it most often takes for lesion; the app uses "
        "the cord and lesion outputs only", metavar="LABEL"))
    dice_weight: float = field(default=1.0, metadata=option(
        "weight of the Dice term of the loss (cross-entropy weighs 1)", type=float))
    fine_lesion_label: str | None = field(default=None, metadata=option(
        "with --space straight: lesion fraction maps <stem>_<LABEL>.nii.gz on a fine grid of their own (the "
        "phantoms' res-fine_lesion-manual) label the straightened cord where they exist, so that a lesion is "
        "labelled as wide as it is rather than as a whole number of thick slices; the model then averages its "
        "map over each thick voxel on the way back", metavar="LABEL"))
    workers: int = field(default=0, metadata=option(
        "processes that preprocess the images not yet cached, then prepare training batches (patches, "
        "augmentation) while the network trains; 0: the training process itself. Every batch is drawn from a "
        "random stream of its own, so the trained model is the same for any N (on a GPU, N of a few CPU cores "
        "keeps it busy)", type=int, metavar="N"))
    cpu_bf16: bool = field(default=False, metadata=option(
        "on a CPU, run the network in bfloat16 (weights, optimiser and loss stay float32): for a CPU with native "
        "bfloat16 (AVX512-BF16 or AMX; 1.6x faster on the one measured in docs/performance.md), refused on one "
        "without; a GPU always trains in mixed precision", action="store_true"))
    tissue_prior: bool = field(default=False, metadata=option(
        "stage 2 (--space straight): give the network, beside the image, the grey and white matter expected in "
        "the cord (the PAM50 cross-section fitted to each straightened slice); with --init-from a model without "
        "it, the new inputs start with zero weights", action="store_true"))


def _option_dest(f) -> str:
    return (f.metadata["cli"]["flag"] or "--" + f.name).lstrip("-").replace("-", "_")


def add_training_options(parser: argparse.ArgumentParser) -> None:
    """One command-line option per :class:`TrainingConfig` field that has :func:`option` metadata."""
    defaults = TrainingConfig()
    for f in fields(TrainingConfig):
        cli = f.metadata.get("cli")
        if cli is None:
            continue
        kwargs = dict(cli["kwargs"], help=cli["help"], dest=_option_dest(f))
        if kwargs.get("action") not in ("store_true", "store_false") and "default" not in kwargs:
            default = getattr(defaults, f.name)
            kwargs["default"] = list(default) if isinstance(default, tuple) else default
        parser.add_argument(cli["flag"] or "--" + f.name.replace("_", "-"), **kwargs)


def config_from_options(options: dict, **fields_not_options) -> TrainingConfig:
    """The :class:`TrainingConfig` of parsed options (``vars(args)``), plus fields that are not options."""
    values = {}
    for f in fields(TrainingConfig):
        cli = f.metadata.get("cli")
        if cli is None:
            continue
        value = options[_option_dest(f)]
        convert = cli["to_field"]
        values[f.name] = convert(value) if convert else (tuple(value) if isinstance(value, list) else value)
    return TrainingConfig(**values, **fields_not_options)




def check_cpu_bf16() -> None:
    """Refuse bfloat16 on a CPU without native support: emulated, it is slower than float32. The test is
    inference's (``cpu_has_native_bfloat16``), so that training and ``--precision auto`` agree on every CPU."""
    from ..model import inference  # here, not at import: the CLI's parser imports this module

    if not inference.cpu_has_native_bfloat16():
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
