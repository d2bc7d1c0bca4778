#!/usr/bin/env python
"""Stage 1's cord on held-out real images under other intensity windows: the whole image as the app scales it,
the image clipped at its 99th percentile, and the image cropped to a box around the first pass's cord.

Usage:
  python experiments/analyses/stage1_window.py REAL_DIR FOLD_MODEL [FOLD_MODEL ...] [--collection sct-t2w]

REAL_DIR is made by ``scripts/make_real_cord_dataset.py``; each FOLD_MODEL is a stage-1 fold model of
``crossval_real_cord.py`` that held ``--collection`` out (its ``fold-<collection>`` folder). Per labelled image of
that collection: the median stage-1 probability inside the manual cord, the cord Dice (probability >= 0.5 on the
image grid) and the predicted cord volume over the manual one. The clipped and boxed runs are tests of where the
model's doubt comes from, not what the app does (docs/morphometry.md).
"""
from __future__ import annotations

import argparse
import csv
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.core.image import load_image, resample_to_grid, to_canonical
from bids_sclesion.core.metrics import dice
from bids_sclesion.core.preprocess import bias_correct_image
from bids_sclesion.model.io import load_model
from bids_sclesion.model.segment import segment_image

#: Margin of the box around the first pass's cord, across the cord (mm); the box keeps every slice along it.
BOX_MARGIN_MM = 25.0


def clipped(image: nib.Nifti1Image, percentile: float = 99.0) -> nib.Nifti1Image:
    data = np.asarray(image.dataobj, np.float32)
    top = np.percentile(data[data > 0], percentile)
    return nib.Nifti1Image(np.minimum(data, top), image.affine, image.header)


def boxed_probability(image: nib.Nifti1Image, first: np.ndarray, model) -> np.ndarray:
    """The model run again on a box around its first cord (scaled from the box), put back on the image grid."""
    zooms = np.array(image.header.get_zooms()[:3], float)
    cord = np.argwhere(first >= 0.5)
    margin = np.ceil(np.array([BOX_MARGIN_MM, BOX_MARGIN_MM, 0.0]) / zooms).astype(int)
    lo = np.maximum(cord.min(axis=0) - margin, 0)
    hi = np.minimum(cord.max(axis=0) + margin + 1, image.shape[:3])
    lo[2], hi[2] = 0, image.shape[2]  # canonical grid: the third axis runs along the cord
    prob, _ = segment_image(image.slicer[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]], model, "cpu")
    full = np.zeros(image.shape[:3], np.float32)
    full[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = prob
    return full


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("real_dir", type=Path)
    ap.add_argument("models", nargs="+", type=Path)
    ap.add_argument("--collection", default="sct-t2w")
    args = ap.parse_args()
    with open(args.real_dir / "participants.tsv") as fh:
        held = {row["participant_id"] for row in csv.DictReader(fh, delimiter="\t") if row["source"] == args.collection}
    models = {str(m): load_model(str(m), "cpu") for m in args.models}
    print("| image | model | window | median probability in the manual cord | cord Dice | volume / manual |")
    print("|---|---|---|---|---|---|")
    for sub in sorted(held):
        for path in sorted((args.real_dir / sub / "anat").glob("*.nii.gz")):
            manual = args.real_dir / "derivatives" / "labels" / sub / "anat" / path.name.replace(".nii.gz", "_seg-manual.nii.gz")
            if not manual.exists():
                continue
            image = load_image(path)
            canonical = bias_correct_image(to_canonical(image))
            truth = np.asarray(nib.load(str(manual)).dataobj) > 0.5
            for name, model in models.items():
                whole, _ = segment_image(canonical, model, "cpu")
                runs = {"whole image": whole, "clipped at the 99th percentile": segment_image(clipped(canonical), model, "cpu")[0],
                        "box around the first pass": boxed_probability(canonical, whole, model)}
                for window, prob in runs.items():
                    native = resample_to_grid(prob, canonical.affine, image.shape[:3], image.affine, order=1)
                    print(f"| {path.name} | {name} | {window} | {np.median(native[truth]):.2f} | "
                          f"{dice(native >= 0.5, truth):.3f} | {(native >= 0.5).sum() / truth.sum():.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
