#!/usr/bin/env python
"""Lesion scores a perfect stage 2 would get: the true lesions taken to straight space and back.

Usage:
  python experiments/analyses/straight_round_trip.py BIDS_DIR OUT_DIR [--lesion-label lesion-manual] [--cord-label seg-manual]

For every image of BIDS_DIR with a true lesion mask in derivatives/labels
and straightening warps in the app's OUT_DIR, the mask is resampled onto the
straight grid as the training labels are (linear, >= 0.5), brought back by
the app's reverse warp as stage 2's probabilities are, then thresholded with
the app's rules (0.5, lesions outside the true cord and below the smallest
lesion volume dropped) and scored by the code of ``bids_sclesion-eval``.
What is lost here is the cascade's resampling, not the network: the gap
between this table and the app's is what a better stage-2 network can win.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.core.image import voxel_volume
from bids_sclesion.core.lesions import DEFAULT_MIN_LESION_MM3, threshold_masks
from bids_sclesion.core.straighten import apply_points, field_target_points
from bids_sclesion.derivatives import SourceName
from bids_sclesion.evaluate import format_summary, score_arrays, summarise_by_contrast
from bids_sclesion.model.cascade import unstraighten


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", type=Path)
    p.add_argument("out_dir", type=Path, help="the app's output folder (with its straightening warps)")
    p.add_argument("--lesion-label", default="lesion-manual")
    p.add_argument("--cord-label", default="seg-manual")
    args = p.parse_args()
    scores = []
    for src in sorted(args.bids_dir.glob("sub-*/**/anat/*.nii.gz")):
        name = SourceName(src, args.bids_dir)
        labels = args.bids_dir / "derivatives/labels" / Path(name.relpath).parent
        stem = src.name[: -len(".nii.gz")]
        lesion_path, cord_path = (labels / f"{stem}_{args.lesion_label}.nii.gz", labels / f"{stem}_{args.cord_label}.nii.gz")
        warps = name.warps(args.out_dir)
        if not (lesion_path.exists() and cord_path.exists() and warps["to_orig_xfm"].exists()):
            continue
        truth_img = nib.load(str(lesion_path))
        truth = np.asarray(truth_img.dataobj) > 0.5
        cord = np.asarray(nib.load(str(cord_path)).dataobj) > 0.5
        to_straight, to_orig = nib.load(str(warps["to_straight_xfm"])), nib.load(str(warps["to_orig_xfm"]))
        # World points: the native image's orientation does not matter.
        straight = apply_points(truth.astype(np.float32), truth_img.affine, field_target_points(to_straight)) >= 0.5
        back = unstraighten(straight[None].astype(np.float32), to_straight.affine, field_target_points(to_orig))[0]
        if back.shape != truth.shape:
            raise SystemExit(f"{warps['to_orig_xfm']}: grid {back.shape} is not the grid {truth.shape} of {lesion_path}")
        voxel_mm3 = voxel_volume(truth_img.affine)
        cord_mask, lesion_mask = threshold_masks(cord.astype(np.float32), back, 0.5, DEFAULT_MIN_LESION_MM3, voxel_mm3)
        scores.append(score_arrays(src.name, name.suffix, cord_mask, lesion_mask, cord, truth, voxel_mm3))
    if not scores:
        raise SystemExit(f"{args.out_dir}: no image of {args.bids_dir} with true labels and straightening warps")
    print(format_summary(summarise_by_contrast(scores)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
