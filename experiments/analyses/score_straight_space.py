#!/usr/bin/env python
"""Score stage-2 models on the straightened cord of a labelled dataset (model choice without the test sets).

Usage:
  python experiments/analyses/score_straight_space.py BIDS_DIR CACHE_DIR MODEL [MODEL ...] [--mean]

Each image is straightened along the centreline of its *true* cord
(the training's preprocessing, cached in CACHE_DIR), segmented by every
MODEL (bundled name or model directory), thresholded with the app's rules
(threshold 0.5, lesions outside the cord and smaller than the app's smallest
lesion dropped) and scored by the code of ``bids_sclesion-eval``. Stage 1
and the way back to the native grid are left out, so models are compared on
what they alone change. ``--mean`` also scores the mean of the models'
probabilities (an ensemble). Prints one per-contrast table per model.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bids_sclesion.core.lesions import DEFAULT_MIN_LESION_MM3, threshold_masks
from bids_sclesion.evaluate import format_summary, score_arrays, summarise_by_contrast
from bids_sclesion.model.cascade import StraightSpace, segment_straightened
from bids_sclesion.model.io import load_model
from bids_sclesion.training import TrainingConfig, find_training_cases
from bids_sclesion.training.cache import preprocess_case

#: Voxel volume of the straight grid the training's preprocessing samples.
STRAIGHT_VOXEL_MM3 = float(np.prod(StraightSpace().spacing_mm))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", type=Path)
    p.add_argument("cache_dir", type=Path)
    p.add_argument("models", nargs="+")
    p.add_argument("--mean", action="store_true", help="also score the mean of the models' probabilities")
    p.add_argument("--nthreads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.nthreads)
    models = [load_model(m, "cpu") for m in args.models]
    names = [Path(m).name for m in args.models] + (["mean"] if args.mean else [])
    cases = find_training_cases(args.bids_dir, TrainingConfig.suffixes, require_lesion=False)
    if not cases:
        raise SystemExit(f"{args.bids_dir}: no labelled image")
    scores: dict[str, list] = {n: [] for n in names}
    for case in cases:
        image, labels = preprocess_case(case, TrainingConfig.spacing_mm, args.cache_dir, "straight")
        probs = [segment_straightened(image, m) for m in models]
        if args.mean:
            probs.append(np.mean(probs, axis=0))
        for name, prob in zip(names, probs):
            cord, lesion = threshold_masks(prob[0], prob[1], 0.5, DEFAULT_MIN_LESION_MM3, STRAIGHT_VOXEL_MM3)
            scores[name].append(score_arrays(case.image_path.name, case.suffix, cord, lesion, labels[0] > 0.5,
                                             labels[1] > 0.5, STRAIGHT_VOXEL_MM3))
    for name in names:
        print(f"## {name}\n{format_summary(summarise_by_contrast(scores[name]))}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
