#!/usr/bin/env python
"""The tissue intensities each phantom image was drawn with, beside its scores.

Usage:
  python experiments/analyses/phantom_contrasts.py SYNTH_DIR EVAL_TSV [--contrast T1w]

SYNTH_DIR is a dataset of ``bids_sclesion-synth`` (one session); EVAL_TSV the
per-image table of ``bids_sclesion-eval OUT SYNTH_DIR --tsv EVAL_TSV``. Each
image's random stream is replayed up to its tissue intensities (the generator
draws them from the image's own stream, so nothing is rendered), and white
matter, grey matter and lesion are printed with the grey matter's place
between lesion (0) and white matter (1), then the image's false positives,
lesion Dice and detected / true lesions. A place near 0 or below means the
grey matter was drawn as dark (T1w, PSIR) or as bright (T2-weighted) as the
lesions: only shape tells them apart there.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
from pathlib import Path

import numpy as np

from bids_sclesion.phantoms.acquisition import CONTRASTS, random_acquisition, tissue_intensities
from bids_sclesion.phantoms.anatomy import Tissue, random_anatomy, random_lesions

FOV_TOP = 110.0  # as generate_dataset


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("synth_dir", type=Path)
    p.add_argument("eval_tsv", type=Path)
    p.add_argument("--contrast", default="T1w", choices=list(CONTRASTS))
    args = p.parse_args()
    description = json.loads((args.synth_dir / "dataset_description.json").read_text())
    match = re.fullmatch(r"seed (\d+)", description.get("GeneratedBy", [{}])[0].get("Description", ""))
    if not match:
        raise SystemExit(f"{args.synth_dir}: not a bids_sclesion-synth dataset (no 'seed N' in GeneratedBy)")
    seed = int(match.group(1))
    with open(args.eval_tsv) as fh:
        scores = {row["image"]: row for row in csv.DictReader(fh, delimiter="\t")}
    with open(args.synth_dir / "participants.tsv") as fh:
        subjects = [row["participant_id"] for row in csv.DictReader(fh, delimiter="\t")]
    print("| image | WM | GM | lesion | GM place (lesion 0, WM 1) | false positives | lesion Dice | detected / true |")
    print("|---|---|---|---|---|---|---|---|")
    for subject in subjects:
        index = int(subject.removeprefix("sub-"))
        rng = np.random.default_rng([seed, index])
        anatomy = random_anatomy(rng, fov_top=FOV_TOP)
        anatomy.lesions = random_lesions(rng, anatomy, (FOV_TOP - 200.0 + 20, FOV_TOP - 10))
        img_rng = np.random.default_rng([seed, index, 1, CONTRASTS.index(args.contrast)])
        random_acquisition(img_rng, args.contrast, anatomy, FOV_TOP)  # advances the stream as the generator does
        values, lesion = tissue_intensities(img_rng, args.contrast)
        wm, gm = float(values[Tissue.WM]), float(values[Tissue.GM])
        image = f"{subject}_{args.contrast}.nii.gz"
        row = scores.get(image)
        if row is None:
            continue
        print(f"| {image} | {wm:.2f} | {gm:.2f} | {lesion:.2f} | {(gm - lesion) / (wm - lesion):+.2f} | "
              f"{row['false_positives']} | {row['lesion_dice']} | {row['detected']} / {row['true_lesions']} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
