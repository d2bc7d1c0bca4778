#!/usr/bin/env python
"""Why the inserted lesions' Dice is what it is: found too small, too large, or beside them.

Usage: python experiments/analyses/inserted_lesion_sizes.py LESION_BIDS_DIR OUT_DIR [--thresholds 0.3 0.4 0.5]

LESION_BIDS_DIR is a dataset of lesions inserted into real cords (``benchmarks/real_anatomy.py`` makes
``WORK/data/real_lesions_v*_seed*``), OUT_DIR the app's outputs on it (``WORK/runs/NAME/lesions``). Per true
lesion: its volume, the volume of the predicted lesions that touch it, their overlap, the lesion's own Dice,
the mean lesion probability inside it, in its one-voxel rim outside, and at its edge voxels, the share of it on the
manual cord's surface (its outer voxel in each slice) and the share inside the app's cord mask. Then, per image,
lesion Dice with the lesion probability thresholded at each of ``--thresholds`` (the app's mask uses 0.5 and
drops lesions under 5 mm3). A diagnosis only: a rule chosen from these figures would be chosen on the test set.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_sclesion.core.image import voxel_volume
from bids_sclesion.core.lesions import DEFAULT_MIN_LESION_MM3, threshold_masks
from bids_sclesion.core.metrics import CONNECTIVITY, dice
from bids_sclesion.core.morphometry import slicing
from bids_sclesion.derivatives import SourceName


def cases(bids: Path, out: Path):
    for src in sorted(bids.glob("sub-*/**/anat/*.nii.gz")):
        name = SourceName(src, bids)
        outputs = name.outputs(out)
        truth_path = (bids / "derivatives/labels" / Path(name.relpath).parent /
                      src.name.replace(".nii.gz", "_lesion-manual.nii.gz"))
        if not (outputs["lesion_prob"].exists() and truth_path.exists()):
            continue
        prob_img = nib.load(str(outputs["lesion_prob"]))
        cord_path = truth_path.with_name(truth_path.name.replace("_lesion-manual", "_seg-manual"))
        manual_cord = np.asarray(nib.load(str(cord_path)).dataobj) > 0.5 if cord_path.exists() else None
        yield (src.name, prob_img.affine, np.asarray(prob_img.dataobj, np.float32),
               np.asarray(nib.load(str(outputs["cord_mask"])).dataobj) > 0,
               np.asarray(nib.load(str(outputs["lesion_mask"])).dataobj) > 0,
               np.asarray(nib.load(str(truth_path)).dataobj) > 0.5, voxel_volume(prob_img.affine), manual_cord)


def cord_surface(cord: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """The outer voxels of a cord mask in each slice across the voxel axis closest to the cord's direction (the
    slicing of the CSA), so that a sagittal image's surface is the cord's cross-section edge, not its side."""
    axis = slicing(cord, affine)[0]
    moved = np.moveaxis(cord, axis, -1)
    inner = np.stack([ndimage.binary_erosion(moved[..., z]) for z in range(moved.shape[-1])], axis=-1)
    return cord & ~np.moveaxis(inner, -1, axis)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--thresholds", nargs="+", type=float, default=[0.2, 0.3, 0.4, 0.5, 0.6])
    args = p.parse_args()
    print("| image | lesion | true mm3 | predicted mm3 (touching) | overlap mm3 | lesion Dice | "
          "prob inside | prob rim | prob edge | on cord surface | in app cord |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    sweep: dict[float, list[float]] = {t: [] for t in args.thresholds}
    ratios, where = [], []
    for image, affine, prob, cord, predicted, truth, vox, manual_cord in cases(args.bids_dir, args.out_dir):
        true_lab, n_true = ndimage.label(truth, CONNECTIVITY)
        pred_lab, _ = ndimage.label(predicted, CONNECTIVITY)
        surface = cord_surface(manual_cord, affine) if manual_cord is not None else None
        for k in range(1, n_true + 1):
            lesion = true_lab == k
            touching = np.setdiff1d(np.unique(pred_lab[lesion]), [0])
            pred = np.isin(pred_lab, touching) if touching.size else np.zeros_like(lesion)
            rim = ndimage.binary_dilation(lesion, CONNECTIVITY) & ~lesion & cord
            edge = lesion & ~ndimage.binary_erosion(lesion, CONNECTIVITY)
            if pred.any():
                ratios.append(pred.sum() / lesion.sum())
            on_surface = float((lesion & surface).sum() / lesion.sum()) if surface is not None else float("nan")
            in_cord = float((lesion & cord).sum() / lesion.sum())
            where.append((on_surface, in_cord, float(prob[lesion].mean())))
            print(f"| {image} | {k} | {lesion.sum() * vox:.0f} | {pred.sum() * vox:.0f} | "
                  f"{(pred & lesion).sum() * vox:.0f} | {dice(pred, lesion):.3f} | {prob[lesion].mean():.2f} | "
                  f"{prob[rim].mean() if rim.any() else float('nan'):.2f} | {prob[edge].mean():.2f} | "
                  f"{on_surface:.2f} | {in_cord:.2f} |")
        for t in args.thresholds:
            _, mask = threshold_masks(cord.astype(np.float32), prob, t, DEFAULT_MIN_LESION_MM3, vox)
            sweep[t].append(dice(mask, truth))
    if ratios:
        print(f"\npredicted / true volume of the found lesions: median {np.median(ratios):.2f} "
              f"(range {min(ratios):.2f}-{max(ratios):.2f}, {len(ratios)} lesions)")
    known = np.array([w for w in where if np.isfinite(w[0])])
    if len(known) > 2:
        print(f"\ncorrelation with the lesion probability inside ({len(known)} lesions): share on the cord surface "
              f"{np.corrcoef(known[:, 0], known[:, 2])[0, 1]:+.2f}, share inside the app's cord "
              f"{np.corrcoef(known[:, 1], known[:, 2])[0, 1]:+.2f}")
    print("\n| threshold | mean lesion Dice per image |")
    print("|---|---|")
    for t, values in sweep.items():
        print(f"| {t} | {np.mean(values):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
