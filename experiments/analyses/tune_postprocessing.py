#!/usr/bin/env python
"""Choose the lesion threshold and minimum lesion volume on a tuning dataset.

Usage: python experiments/analyses/tune_postprocessing.py BIDS_DIR OUT_DIR
Reads the app's probability maps and cord masks in OUT_DIR, re-thresholds them
with a grid of (threshold, minimum volume) and prints lesion Dice / F1 for each,
so that the defaults are chosen on data that is neither training nor test data.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.core.image import voxel_volume
from bids_sclesion.core.lesions import threshold_masks
from bids_sclesion.core.metrics import dice, f1_score, lesion_detection
from bids_sclesion.derivatives import SourceName


def main(argv: list[str]) -> int:
    bids, out = Path(argv[1]), Path(argv[2])
    cases = []
    for src in sorted(bids.glob("sub-*/**/anat/*.nii.gz")):
        name = SourceName(src, bids)
        o = name.outputs(out)
        if not o["lesion_prob"].exists():
            continue
        gt = bids / "derivatives/labels" / Path(name.relpath).parent / src.name.replace(".nii.gz", "_lesion-manual.nii.gz")
        img = nib.load(str(o["lesion_prob"]))
        cord = np.asarray(nib.load(str(o["cord_mask"])).dataobj) > 0
        cases.append((np.asarray(img.dataobj, np.float32), cord, np.asarray(nib.load(str(gt)).dataobj) > 0.5,
                      voxel_volume(img.affine)))
    print("| threshold | min volume (mm3) | lesion Dice | TPR | PPV | F1 |")
    print("|---|---|---|---|---|---|")
    for thr in (0.3, 0.4, 0.5, 0.6, 0.7):
        for min_vol in (0, 5, 10, 20, 30):
            dices, det, true, tp_pred, pred = [], 0, 0, 0, 0
            for prob, cord, truth, vox in cases:
                # The cord mask as written already contains the lesions kept at 0.5.
                _, lesion = threshold_masks(cord.astype(np.float32), prob, thr, min_vol, vox)
                if truth.any():
                    dices.append(dice(lesion, truth))
                d = lesion_detection(lesion, truth)
                det += d.detected
                true += d.true_lesions
                pred += d.predicted_lesions
                tp_pred += d.predicted_lesions - d.false_positives
            print(f"| {thr} | {min_vol} | {np.mean(dices):.3f} | {det / max(true, 1):.3f} | "
                  f"{tp_pred / max(pred, 1):.3f} | {f1_score(det, true, tp_pred, pred):.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
