#!/usr/bin/env python
"""Does stage 2 learn the inserted lesions of its own real cords, and does that carry to real cords it never saw?

Usage:
  python experiments/analyses/fit_and_transfer.py TRAIN_CACHE MODEL [MODEL ...]
      --held-out BIDS_DIR:WORK_DIR [BIDS_DIR:WORK_DIR ...]

TRAIN_CACHE is a training's work directory (``-w``: its ``*_straight_*.npz``, each a straightened image and its
labels). Its real images with lesions (the subjects the first MODEL trained on, by its ``model.json``, that are
not phantom subjects ``sub-<digits>``) are the "fit" set. Each BIDS_DIR:WORK_DIR pair is a dataset of lesions
inserted into real cords and the work directory of an app run on it (``benchmarks/real_anatomy.py`` makes
both); its images, whose subjects no MODEL saw, are the "transfer" set. For every MODEL the script runs stage 2
on the straightened images as they are and prints, per image and per set, the straight-grid lesion Dice and
the predicted over true lesion volume (threshold 0.5). Nothing is mapped back to the source grid, so the
figures are the network's alone. A model that fits much better than it transfers has learnt those few cords,
not lesions.
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from bids_sclesion.core.straighten import apply_points, field_target_points
from bids_sclesion.model.cascade import segment_straightened
from bids_sclesion.model.io import load_model, resolve_model
from bids_sclesion.model.metadata import read_metadata
from work_folders import lesion_label_file, straightened_work_folders, work_warp  # beside this script

PHANTOM_SUBJECT = re.compile(r"^sub-\d+$")


def trained_subjects(model: str) -> set[str]:
    training = read_metadata(resolve_model(model), required=()).get("training", {})
    return set(training.get("subjects", []))


def fit_cases(cache: Path, subjects: set[str]):
    """(name, straight image, lesion labels) of the cached real training images that hold lesions."""
    for path in sorted(cache.glob("sub-*_straight_*.npz")):
        subject = path.name.split("_")[0]
        if subject not in subjects or PHANTOM_SUBJECT.match(subject):
            continue
        with np.load(path) as data:
            lesion = data["labels"][1] > 0.5
            if lesion.any():
                yield path.name.rsplit("_", 2)[0], data["image"].astype(np.float32), lesion


def transfer_cases(bids: Path, work: Path):
    """(name, straight image, lesion labels on the straight grid) of an app run on inserted lesions."""
    for subject, suffix, folder in straightened_work_folders(work):
        label = lesion_label_file(bids, subject, suffix)
        if label is None:
            continue
        truth_img = nib.load(str(label))
        to_straight = nib.load(str(work_warp(folder, "to_straight_xfm")))
        truth = apply_points(np.asarray(truth_img.dataobj, np.float32), truth_img.affine,
                             field_target_points(to_straight), cval=0.0) >= 0.5
        image = np.asarray(nib.load(str(folder / "segment_straightened_cord/straight_image.nii.gz")).dataobj, np.float32)
        if truth.any():
            yield f"{bids.name}/{subject}_{suffix}", image, truth


def scores(prob: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    pred = prob >= 0.5
    return 2.0 * float((pred & truth).sum()) / float(pred.sum() + truth.sum()), float(pred.sum() / truth.sum())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("train_cache", type=Path)
    p.add_argument("models", nargs="+")
    p.add_argument("--held-out", nargs="+", required=True, metavar="BIDS_DIR:WORK_DIR")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    models = {m: load_model(m) for m in args.models}
    sets = {"fit": list(fit_cases(args.train_cache, trained_subjects(args.models[0])))}
    sets["transfer"] = [case for pair in args.held_out for case in transfer_cases(*map(Path, pair.split(":", 1)))]
    if not sets["fit"] or not sets["transfer"]:
        raise SystemExit(f"no image with lesions in the {'fit' if not sets['fit'] else 'transfer'} set")
    names = [Path(m).name for m in args.models]
    print("| set | image | " + " | ".join(f"{n} Dice | {n} pred/true" for n in names) + " |")
    print("|---|---|" + "---|---|" * len(names))
    means = {}
    for set_name, cases in sets.items():
        per_model = {m: [] for m in models}
        for case, image, truth in cases:
            row = []
            for m, model in models.items():
                dice, ratio = scores(segment_straightened(image, model)[1], truth)
                per_model[m].append((dice, ratio))
                row += [f"{dice:.2f}", f"{ratio:.2f}"]
            print(f"| {set_name} | {case} | " + " | ".join(row) + " |", flush=True)
        means[set_name] = {m: np.mean(v, axis=0) for m, v in per_model.items()}
    print("\n| model | fit Dice (images) | transfer Dice (images) | fit pred/true | transfer pred/true |")
    print("|---|---|---|---|---|")
    for m, name in zip(models, names):
        fit, transfer = means["fit"][m], means["transfer"][m]
        print(f"| {name} | {fit[0]:.3f} ({len(sets['fit'])}) | {transfer[0]:.3f} ({len(sets['transfer'])}) "
              f"| {fit[1]:.2f} | {transfer[1]:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
