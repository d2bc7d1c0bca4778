#!/usr/bin/env python
"""Copy a model with its weights stored in float16: half the file, computed in float32 as before.

Usage: python scripts/store_weights_float16.py MODEL OUT_DIR [--check IMAGE]

MODEL is a bundled model name or a model directory. OUT_DIR receives
``model.safetensors`` (float16) and ``model.json`` (``weights_dtype`` recorded);
the other files of the model directory (card, training log) are copied. Loading
widens the weights back to float32, so only their rounding changes. Prints the
largest change of any weight and, with ``--check`` (a straightened cord written by a
cascade run: WORK/.../segment_straightened_cord/straight_image.nii.gz), the
largest change of the model's output probabilities on it. Measure the stored
model itself: its figures are the ones a card may state.
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import torch

from bids_sclesion.model.io import METADATA, WEIGHTS, load_model, save_model


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--check", type=Path, default=None, metavar="IMAGE")
    args = p.parse_args()
    source = load_model(args.model)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for extra in source.path.iterdir():
        if extra.is_file() and extra.name not in (WEIGHTS, METADATA, "checkpoint.pt"):
            shutil.copy2(extra, args.out_dir / extra.name)
    save_model(source.network, source.metadata, args.out_dir, weights_dtype="float16")
    halved = load_model(args.out_dir)
    before, after = source.network.state_dict(), halved.network.state_dict()
    worst = max(float((before[k].float() - after[k].float()).abs().max()) for k in before)
    size = lambda d: (d / WEIGHTS).stat().st_size / 1e6  # noqa: E731
    print(f"{args.out_dir}: {size(source.path):.1f} MB -> {size(args.out_dir):.1f} MB; largest weight change {worst:.2e}")
    if args.check is not None:
        import nibabel as nib
        import numpy as np

        from bids_sclesion.model.cascade import segment_straightened

        volume = np.asarray(nib.load(str(args.check)).dataobj, np.float32)
        p_before = segment_straightened(volume, source)
        p_after = segment_straightened(volume, halved)
        print(f"{args.check.name}: largest probability change {float(abs(p_before - p_after).max()):.2e}")
    return 0


if __name__ == "__main__":
    torch.set_num_threads(1)
    raise SystemExit(main())
