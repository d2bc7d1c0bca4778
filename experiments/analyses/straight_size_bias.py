#!/usr/bin/env python
"""Size of stage 2's lesions on the straightened cord against the true lesions there.

Usage:
  python experiments/analyses/straight_size_bias.py BIDS_DIR WORK_DIR [--stage2 MODEL] [--lesion-label lesion-manual]
                                       [--fine-lesion-label res-fine_lesion-manual]

For every image the app processed in the cascade with work directory WORK_DIR
(its ``straight_image`` and warps are reused: nothing is preprocessed again),
stage 2 is run on the straightened image and its lesion map is compared, on
the straight grid, with the true lesion mask of BIDS_DIR resampled there as
the training labels are (linear, >= 0.5). Prints, per contrast, the predicted
volume over the true volume at several thresholds, the straight-grid Dice, and
the mean extent of predicted and true lesions along each straight axis
(u: left-right, v: posterior-anterior, s: along the cord), matched lesion by
lesion. A ratio that stays above 1 at every threshold is a bias of the network,
not of the threshold or of the way back to the source grid.
"""
from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage

from bids_sclesion.core.straighten import apply_points, field_target_points
from bids_sclesion.model.cascade import segment_straightened
from bids_sclesion.model.io import load_model
from work_folders import lesion_label_file, straightened_work_folders, work_warp  # beside this script

THRESHOLDS = (0.3, 0.5, 0.7, 0.9)


def extent_mm(mask: np.ndarray, spacing) -> np.ndarray:
    """Extent (mm) of a mask along each axis."""
    idx = np.argwhere(mask)
    return (np.ptp(idx, axis=0) + 1) * np.asarray(spacing, float)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", type=Path)
    p.add_argument("work_dir", type=Path, help="the app's work directory (-w) of a cascade run")
    p.add_argument("--stage2", default="stage2")
    p.add_argument("--lesion-label", default="lesion-manual")
    p.add_argument("--fine-lesion-label", default=None, metavar="LABEL",
                   help="true lesions from the fine lesion maps <stem>_<LABEL>.nii.gz (e.g. res-fine_lesion-manual): "
                        "their physical extent instead of the source grid's half-covered slices")
    args = p.parse_args()
    torch.set_num_threads(1)
    model = load_model(args.stage2)
    volumes = defaultdict(lambda: np.zeros(1 + len(THRESHOLDS)))
    true_mm3 = defaultdict(float)
    overlap = defaultdict(float)
    extents = defaultdict(list)
    for sub, suffix, wf in straightened_work_folders(args.work_dir):
        straight_path = wf / "segment_straightened_cord/straight_image.nii.gz"
        label = lesion_label_file(args.bids_dir, sub, suffix, args.lesion_label)
        if label is None:
            continue
        truth_img = nib.load(str(label))
        to_straight = nib.load(str(work_warp(wf, "to_straight_xfm")))
        if args.fine_lesion_label:
            fine_path = label.with_name(label.name.replace(args.lesion_label, args.fine_lesion_label))
            if not fine_path.exists():
                continue
            truth_img = nib.load(str(fine_path))
        truth = apply_points(np.asarray(truth_img.dataobj, np.float32), truth_img.affine,
                             field_target_points(to_straight), cval=0.0) >= 0.5
        if not truth.any():
            continue
        prob = segment_straightened(np.asarray(nib.load(str(straight_path)).dataobj, np.float32), model)[1]
        vol = volumes[suffix]
        vol[0] += truth.sum()
        for i, th in enumerate(THRESHOLDS, start=1):
            vol[i] += (prob >= th).sum()
        pred = prob >= 0.5
        overlap[suffix] += (pred & truth).sum()
        spacing = to_straight.header.get_zooms()[:3]
        true_mm3[suffix] += truth.sum() * float(np.prod(spacing))
        true_lab, n = ndimage.label(truth)
        pred_lab, _ = ndimage.label(pred)
        for i in range(1, n + 1):
            lesion = true_lab == i
            hit = np.unique(pred_lab[lesion & pred])
            if hit.size:
                extents[suffix].append((extent_mm(lesion, spacing), extent_mm(np.isin(pred_lab, hit), spacing)))
    if not volumes:
        raise SystemExit(f"{args.work_dir}: no cascade work folder with a true lesion in {args.bids_dir}")
    ratios = " | ".join(f"pred/true @{th}" for th in THRESHOLDS)
    print(f"| contrast | true mm3 | {ratios} | Dice @0.5 | found | true u / v / s mm | predicted u / v / s mm |")
    print("|---" * (6 + len(THRESHOLDS)) + "|")
    for suffix, vol in sorted(volumes.items()):
        dice = 2 * overlap[suffix] / (vol[0] + vol[2])
        ext = np.asarray(extents[suffix]) if extents[suffix] else np.zeros((0, 2, 3))
        true_ext = " / ".join(f"{x:.1f}" for x in ext[:, 0].mean(axis=0)) if len(ext) else "-"
        pred_ext = " / ".join(f"{x:.1f}" for x in ext[:, 1].mean(axis=0)) if len(ext) else "-"
        print(f"| {suffix} | {true_mm3[suffix]:.0f} | " + " | ".join(f"{v / vol[0]:.2f}" for v in vol[1:])
              + f" | {dice:.3f} | {len(ext)} | {true_ext} | {pred_ext} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
