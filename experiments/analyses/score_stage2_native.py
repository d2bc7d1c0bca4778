#!/usr/bin/env python
"""Stage-2 models scored on the source grid, through the warps of one cascade run.

Usage:
  python experiments/analyses/score_stage2_native.py BIDS_DIR WORK_DIR MODEL [MODEL ...] [--mean] [--lesion-label lesion-manual]

For every image the app processed in the cascade with work directory WORK_DIR,
each MODEL segments the straightened image of that run, its maps are brought
back to the source grid by the run's reverse warp as the app does (averaged
over each thick voxel when the model asks for it, ``inference.voxel_average``),
thresholded at 0.5 with the app's rules (lesions outside the model's own cord
and below the smallest lesion volume dropped) and scored against the true
masks of BIDS_DIR by the code of ``bids_sclesion-eval``. Every model sees the
same straightened images and warps, so the tables differ by the network and
its way back only. Prints one table per model and a summary line each.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from bids_sclesion.core.image import voxel_volume
from bids_sclesion.core.lesions import DEFAULT_MIN_LESION_MM3, threshold_masks
from bids_sclesion.core.straighten import field_target_points
from bids_sclesion.evaluate import format_summary, score_arrays, summarise_by_contrast
from bids_sclesion.model.cascade import segment_straightened, unstraighten
from bids_sclesion.model.io import load_model
from work_folders import straightened_work_folders, work_warp  # beside this script


def cascade_cases(bids_dir: Path, work_dir: Path, lesion_label: str, cord_label: str):
    """(source image, straight image, to_straight, to_orig, lesion label, cord label) of each processed image."""
    for sub, suffix, wf in straightened_work_folders(work_dir):
        straight = wf / "segment_straightened_cord/straight_image.nii.gz"
        sources = sorted(bids_dir.glob(f"{sub}/**/anat/{sub}_*{suffix}.nii.gz"))
        if len(sources) != 1:
            continue  # sessions or several runs of one suffix: the work folder name does not tell them apart
        source = sources[0]
        labels = bids_dir / "derivatives/labels" / source.parent.relative_to(bids_dir)
        stem = source.name[: -len(".nii.gz")]
        lesion, cord = labels / f"{stem}_{lesion_label}.nii.gz", labels / f"{stem}_{cord_label}.nii.gz"
        if lesion.exists() and cord.exists():
            yield (source, suffix, straight, work_warp(wf, "to_straight_xfm"), work_warp(wf, "to_orig_xfm"), lesion, cord)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", type=Path)
    p.add_argument("work_dir", type=Path, help="the app's work directory (-w) of a cascade run")
    p.add_argument("models", nargs="+")
    p.add_argument("--lesion-label", default="lesion-manual")
    p.add_argument("--cord-label", default="seg-manual")
    p.add_argument("--nthreads", type=int, default=1)
    p.add_argument("--mean", action="store_true",
                   help="also score the mean of the models' maps on the source grid (an ensemble)")
    args = p.parse_args()
    torch.set_num_threads(args.nthreads)
    models = [load_model(m) for m in args.models]
    names = list(args.models) + (["mean of " + " + ".join(args.models)] if args.mean else [])
    scores = {m: [] for m in names}
    cases = list(cascade_cases(args.bids_dir, args.work_dir, args.lesion_label, args.cord_label))
    if not cases:
        raise SystemExit(f"{args.work_dir}: no cascade work folder with true labels in {args.bids_dir}")
    for source, suffix, straight_path, to_straight_path, to_orig_path, lesion_path, cord_path in cases:
        truth_img = nib.load(str(lesion_path))
        truth = np.asarray(truth_img.dataobj) > 0.5
        truth_cord = np.asarray(nib.load(str(cord_path)).dataobj) > 0.5
        to_straight = nib.load(str(to_straight_path))
        straight_points = field_target_points(nib.load(str(to_orig_path)))
        if straight_points.shape[:3] != truth.shape:
            raise SystemExit(f"{to_orig_path}: grid {straight_points.shape[:3]} is not the grid {truth.shape} of {lesion_path}")
        volume = np.asarray(nib.load(str(straight_path)).dataobj, np.float32)
        zooms = truth_img.header.get_zooms()[:3]
        voxel_mm3 = voxel_volume(truth_img.affine)
        maps = []
        for model in models:
            prob = segment_straightened(volume, model)
            maps.append(unstraighten(prob, to_straight.affine, straight_points, zooms if model.voxel_average else None))
        if args.mean:
            maps.append(np.mean(maps, axis=0))
        for name, native in zip(names, maps):
            cord, lesion = threshold_masks(native[0], native[1], 0.5, DEFAULT_MIN_LESION_MM3, voxel_mm3)
            scores[name].append(score_arrays(source.name, suffix, cord, lesion, truth_cord, truth, voxel_mm3))
    for name in names:
        summary = summarise_by_contrast(scores[name])
        print(f"\n## {name}\n")
        print(format_summary(summary))
    print("\n| model | images | lesion Dice | lesion F1 | false positives | relative volume difference |")
    print("|---|---|---|---|---|---|")
    for name in names:
        row = summarise_by_contrast(scores[name])["all"]
        print(f"| {name} | {row['images']} | {row['lesion_dice']:.3f} | {row['lesion_f1']:.3f} | "
              f"{row['false_positives']} | {row['rel_volume_diff']:+.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
