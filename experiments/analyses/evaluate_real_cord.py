#!/usr/bin/env python
"""Cord Dice of the app's cord masks against manual masks on real datasets.

Usage: python experiments/analyses/evaluate_real_cord.py OUT_ROOT [DATASET_DIR ...]
Runs the participant level on each BIDS dataset (default: the datasets of
../shared/data with manual cord masks) and prints one row per image with a
manual mask ``derivatives/labels/.../*_seg-manual.nii.gz``.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.core.image import voxel_volume
from bids_sclesion.cli.run import main as app
from bids_sclesion.core.metrics import dice
from bids_sclesion.derivatives import SourceName

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DEFAULT = ["sct-t2w-bids", "gm-challenge-bids", "spine-mini-bids"]


def main(argv: list[str]) -> int:
    out_root = Path(argv[1])
    datasets = [Path(p) for p in argv[2:]] or [SHARED / d for d in DEFAULT]
    print("| dataset | image | cord Dice | manual cord (mm3) | predicted cord (mm3) | lesions found |")
    print("|---|---|---|---|---|---|")
    for ds in datasets:
        if not ds.is_dir():
            print(f"skipping {ds}: not found", file=sys.stderr)
            continue
        out = out_root / ds.name
        t0 = time.time()
        app([str(ds), str(out / "derivatives"), "participant", "-w", str(out / "work"), "--skip-bids-validation",
             "--nprocs", "2"])
        elapsed = time.time() - t0
        for manual in sorted((ds / "derivatives" / "labels").rglob("*_seg-manual.nii.gz")):
            rel = manual.parent.relative_to(ds / "derivatives" / "labels")
            source = ds / rel / manual.name.replace("_seg-manual", "")
            if not source.exists():
                continue
            outputs = SourceName(source, ds).outputs(out / "derivatives")
            if not outputs["cord_mask"].exists():
                print(f"| {ds.name} | {source.name} | failed | | | |")
                continue
            ref = nib.load(str(manual))
            truth = np.asarray(ref.dataobj) > 0.5
            pred_img = nib.load(str(outputs["cord_mask"]))
            pred = np.asarray(pred_img.dataobj) > 0
            n_les = max(0, len(outputs["lesion_table"].read_text().splitlines()) - 1)
            vox = voxel_volume(ref.affine)
            print(f"| {ds.name} | {source.name} | {dice(pred, truth):.3f} | {truth.sum() * vox:.0f} | "
                  f"{pred.sum() * vox:.0f} | {n_les} |")
        print(f"({ds.name}: participant level {elapsed:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
