"""``bids_sclesion-train``: train the cord/lesion network on a BIDS dataset."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from .. import __version__
from ..model.network import NetworkConfig
from .parser import DefaultsHelpFormatter
from ..training import train
from ..training.config import add_training_options, config_from_options
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
    p.add_argument("--add-dataset", action="append", default=[], metavar="BIDS_DIR",
                   help="another BIDS dataset to train on (repeatable); batches draw from each dataset equally "
                        "unless --dataset-weights says otherwise")
    p.add_argument("--bids-filter-file", type=Path, default=None, metavar="FILE",
                   help="JSON of pybids filters selecting the images, as for the app, e.g. "
                        "{\"acquisition\": \"sag\"} or {\"t2w\": {\"acquisition\": \"ax\"}}")
    p.add_argument("--channels", type=int, nargs="+", default=None,
                   help=f"channels at each level of the U-Net (default {' '.join(map(str, NetworkConfig().channels))}; "
                        "with --init-from: the pretrained model's, or more at any level to fine-tune a wider network "
                        "that starts out computing exactly what the pretrained one does)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where the network trains")
    add_training_options(p)  # one option per setting of TrainingConfig
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
    config = config_from_options(vars(args), filters=filters)
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
