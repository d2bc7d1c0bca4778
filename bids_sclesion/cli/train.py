"""``bids_sclesion-train``: train the cord/lesion network on a BIDS dataset."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .. import __version__
from ..model.inference import TTA_FLIPS
from ..model.network import NetworkConfig
from .parser import DefaultsHelpFormatter
from ..training import TrainingConfig, train
from ..utils.io import write_text


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bids_sclesion-train",
        description="Train the spinal cord and lesion segmentation network on a BIDS dataset "
        "whose labels are in derivatives/labels (*_seg-manual, *_lesion-manual).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("bids_dir", help="BIDS dataset with derivatives/labels")
    p.add_argument("model_dir", help="output model directory (model.safetensors + model.json)")
    d = TrainingConfig()
    p.add_argument("--add-dataset", action="append", default=[], metavar="BIDS_DIR",
                   help="another BIDS dataset to train on (repeatable); batches draw from each dataset equally "
                        "unless --dataset-weights says otherwise")
    p.add_argument("--dataset-weights", type=float, nargs="+", default=None, metavar="W",
                   help="how often batches draw from each dataset, BIDS_DIR first then each --add-dataset in "
                        "order (relative weights, e.g. 3 1 1: the first dataset in 3 of 5 draws)")
    p.add_argument("--contrast", nargs="+", default=list(d.suffixes), help="image suffixes to train on")
    p.add_argument("--participant-label", nargs="+", default=[], metavar="LABEL",
                   help="train on these subjects only (labels with or without 'sub-')")
    p.add_argument("--bids-filter-file", type=Path, default=None, metavar="FILE",
                   help="JSON of pybids filters selecting the images, as for the app, e.g. "
                        "{\"acquisition\": \"sag\"} or {\"t2w\": {\"acquisition\": \"ax\"}}")
    p.add_argument("--iterations", type=int, default=d.iterations, help="training steps (one batch each)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="patches per step")
    p.add_argument("--patch-size", type=int, nargs=3, default=list(d.patch_size), metavar="N",
                   help="patch size in voxels of the model grid")
    p.add_argument("--learning-rate", type=float, default=d.learning_rate, help="AdamW learning rate at the start")
    p.add_argument("--val-fraction", type=float, default=d.val_fraction,
                   help="share of the subjects that validate instead of training")
    p.add_argument("--folds", type=int, default=None, metavar="K",
                   help="k-fold cross-validation by subject: K groups, --fold I validates (replaces --val-fraction)")
    p.add_argument("--fold", type=int, default=0, metavar="I", help="which of the K folds validates (0-based)")
    p.add_argument("--cord-label", default=d.cord_label,
                   help="cord label files <stem>_<LABEL>.nii.gz in derivatives/labels (e.g. label-SC_seg)")
    p.add_argument("--lesion-label", default=d.lesion_label,
                   help="lesion label files <stem>_<LABEL>.nii.gz (e.g. label-lesion_mask)")
    p.add_argument("--grey-matter-label", default=None, metavar="LABEL",
                   help="grey matter label files <stem>_<LABEL>.nii.gz (e.g. gmseg-manual): train grey matter as a "
                        "third output where they exist, so that the network learns the tissue it most often "
                        "takes for lesion; the app uses the cord and lesion outputs only")
    p.add_argument("--fine-lesion-label", default=None, metavar="LABEL",
                   help="with --space straight: lesion fraction maps <stem>_<LABEL>.nii.gz on a fine grid of their "
                        "own (the phantoms' res-fine_lesion-manual) label the straightened cord where they exist, "
                        "so that a lesion is labelled as wide as it is rather than as a whole number of thick "
                        "slices; the model then averages its map over each thick voxel on the way back")
    p.add_argument("--val-every", type=int, default=d.val_every, help="steps between validations")
    p.add_argument("--val-max-images", type=int, default=d.val_max_images, help="validation images scored each time")
    p.add_argument("--max-minutes", type=float, default=None, help="stop after this wall time")
    p.add_argument("--channels", type=int, nargs="+", default=None,
                   help=f"channels at each level of the U-Net (default {' '.join(map(str, NetworkConfig().channels))}; "
                        "with --init-from: the pretrained model's, or more at any level to fine-tune a wider network "
                        "that starts out computing exactly what the pretrained one does)")
    p.add_argument("--space", choices=["native", "straight"], default=d.space,
                   help="native: whole-image model (stage 1); straight: model on the straightened cord (stage 2)")
    p.add_argument("--augmentation", choices=["standard", "domain"], default=d.augmentation,
                   help="domain: axis order, contrast curve, inversion and blur randomised (for real scanners)")
    p.add_argument("--exclude-subjects", nargs="+", default=[], metavar="sub-XX", help="subjects held out")
    p.add_argument("--allow-missing-lesion-labels", action="store_true",
                   help="images with a cord label but no lesion label are used as lesion-free")
    p.add_argument("--init-from", default=None, metavar="MODEL",
                   help="bundled model name or model directory to fine-tune (transfer learning)")
    p.add_argument("--freeze", choices=["none", "encoder"], default=d.freeze,
                   help="with --init-from: keep the pretrained encoder fixed")
    p.add_argument("--encoder-lr-scale", type=float, default=d.encoder_lr_scale,
                   help="with --init-from: learning-rate factor of the pretrained encoder")
    p.add_argument("--dice-weight", type=float, default=d.dice_weight,
                   help="weight of the Dice term of the loss (cross-entropy weighs 1)")
    p.add_argument("--patience", type=int, default=None,
                   help="early stopping: validations without a better score before stopping")
    p.add_argument("--monitor", choices=["lesion_f1", "lesion_dice", "cord_dice"], default=d.monitor,
                   help="validation metric that picks the saved model and drives --patience")
    p.add_argument("--tensorboard", action="store_true",
                   help="also write TensorBoard scalars to MODEL_DIR/tensorboard (needs the tensorboard package)")
    p.add_argument("--resume", action="store_true",
                   help="continue from MODEL_DIR/checkpoint.pt (written at every validation)")
    p.add_argument("--tta-flips", action="store_true",
                   help="the model predicts by averaging flips along each axis (4x inference time)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the initial weights and every batch")
    p.add_argument("--nthreads", type=int, default=None, help="torch CPU threads (default: torch's own choice)")
    p.add_argument("--workers", type=int, default=d.workers, metavar="N",
                   help="processes that preprocess the images not yet cached, then prepare training batches "
                        "(patches, augmentation) while the network trains; 0: the training process itself. Every "
                        "batch is drawn from a random stream of its own, so the trained model is the same for any N "
                        "(on a GPU, N of a few CPU cores keeps it busy)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the network trains")
    p.add_argument("--tissue-prior", action="store_true",
                   help="stage 2 (--space straight): give the network, beside the image, the grey and white matter "
                        "expected in the cord (the PAM50 cross-section fitted to each straightened slice); with "
                        "--init-from a model without it, the new inputs start with zero weights")
    p.add_argument("--cpu-bf16", action="store_true",
                   help="on a CPU, run the network in bfloat16 (weights, optimiser and loss stay float32): "
                        "for a CPU with native bfloat16 (AVX512-BF16 or AMX; 1.6x faster on the one measured in "
                        "docs/performance.md), refused on one without; a GPU always trains in mixed precision")
    p.add_argument("-w", "--work-dir", default=None, help="cache of preprocessed images")
    p.add_argument("--config", type=Path, default=None, metavar="FILE",
                   help="YAML or JSON file of option values (keys as the long options: iterations, "
                        "learning-rate, ...); options given on the command line win. The resolved values are "
                        "saved as MODEL_DIR/training_config.json")
    p.add_argument("--version", action="version", version=f"bids_sclesion {__version__}")
    return p


_NOT_CONFIGURABLE = {"help", "version", "config", "bids_dir", "model_dir"}


class ConfigError(ValueError):
    """A configuration file that cannot be used (the message names the file and the key)."""


def read_config(path: Path, parser: argparse.ArgumentParser) -> dict:
    """Option values from a YAML/JSON file, checked against the parser's options."""
    import yaml

    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from exc
    try:
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'} ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of option names to values, got {type(data).__name__}")
    actions = {a.dest: a for a in parser._actions if a.dest not in _NOT_CONFIGURABLE}
    values = {}
    for key, value in data.items():
        dest = str(key).replace("-", "_")
        if dest not in actions:
            raise ConfigError(f"{path}: unknown option '{key}' (known: {', '.join(sorted(actions))})")
        values[dest] = _checked(path, key, value, actions[dest])
    return values


def _checked(path: Path, key, value, action: argparse.Action):
    """One option value converted and checked as the command line would do it."""
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: '{key}' must be true or false, got {value!r}")
        return value
    many = action.nargs in ("+", "*") or isinstance(action.nargs, int) or isinstance(action, argparse._AppendAction)
    if value is None:
        if action.default is not None:
            raise ConfigError(f"{path}: '{key}' cannot be empty")
        return None
    if not many and isinstance(value, (list, dict)):
        raise ConfigError(f"{path}: '{key}' takes one value, got {value!r}")
    items = value if isinstance(value, list) else [value]
    if isinstance(action.nargs, int) and len(items) != action.nargs:
        raise ConfigError(f"{path}: '{key}' needs {action.nargs} values, got {len(items)}")
    out = []
    for item in items:
        if isinstance(item, (list, dict)):
            raise ConfigError(f"{path}: '{key}': {item!r} is not a single value")
        try:
            item = action.type(item) if action.type else str(item)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{path}: '{key}': {item!r} is not a valid value ({exc})") from exc
        if action.choices is not None and item not in action.choices:
            raise ConfigError(f"{path}: '{key}' must be one of {list(action.choices)}, got {item!r}")
        out.append(item)
    return out if many else out[0]


def _read_filters(path: Path | None) -> dict | None:
    from ..bids import read_filter_file

    if path is None:
        return None
    try:
        return read_filter_file(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if args.config is not None:
        try:
            parser.set_defaults(**read_config(args.config, parser))
        except ConfigError as exc:
            print(f"bids_sclesion-train: error: {exc}", file=sys.stderr)
            return 2
        args = parser.parse_args(argv)  # command-line options override the file
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        filters = _read_filters(args.bids_filter_file)
    except ConfigError as exc:
        print(f"bids_sclesion-train: error: {exc}", file=sys.stderr)
        return 2
    config = TrainingConfig(
        suffixes=tuple(args.contrast),
        patch_size=tuple(args.patch_size),
        batch_size=args.batch_size,
        iterations=args.iterations,
        learning_rate=args.learning_rate,
        val_fraction=args.val_fraction,
        val_every=args.val_every,
        val_max_images=args.val_max_images,
        max_minutes=args.max_minutes,
        seed=args.seed,
        threads=args.nthreads,
        space=args.space,
        augmentation=args.augmentation,
        exclude_subjects=tuple(args.exclude_subjects),
        require_lesion=not args.allow_missing_lesion_labels,
        init_from=args.init_from,
        tta_flip_axes=TTA_FLIPS if args.tta_flips else (),
        freeze=args.freeze,
        encoder_lr_scale=args.encoder_lr_scale,
        dice_weight=args.dice_weight,
        patience=args.patience,
        resume=args.resume,
        folds=args.folds,
        fold=args.fold,
        cord_label=args.cord_label,
        lesion_label=args.lesion_label,
        grey_matter_label=args.grey_matter_label,
        fine_lesion_label=args.fine_lesion_label,
        monitor=args.monitor,
        filters=filters,
        participant_label=tuple(label.removeprefix("sub-") for label in args.participant_label),
        tensorboard=args.tensorboard,
        dataset_weights=tuple(args.dataset_weights) if args.dataset_weights else (),
        workers=args.workers,
        cpu_bf16=args.cpu_bf16,
        tissue_prior=args.tissue_prior,
    )
    net = (NetworkConfig(channels=tuple(args.channels), strides=tuple([2] * (len(args.channels) - 1)))
           if args.channels else None)
    try:
        out = train([args.bids_dir, *args.add_dataset], args.model_dir, config, net, cache_dir=args.work_dir, device=args.device)
    except (ValueError, LookupError) as exc:
        print(f"bids_sclesion-train: error: {exc}", file=sys.stderr)
        return 1
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: process 0 writes the model and its configuration
        return 0
    resolved = {k: v for k, v in vars(args).items() if k not in _NOT_CONFIGURABLE}
    if resolved["channels"] is None:  # the saved configuration says which network was trained
        resolved["channels"] = json.loads((Path(args.model_dir) / "model.json").read_text())["network"]["channels"]
    write_text(json.dumps(resolved, indent=2, default=str) + "\n", Path(args.model_dir) / "training_config.json")
    print(f"model written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
