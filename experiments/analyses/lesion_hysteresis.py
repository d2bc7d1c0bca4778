#!/usr/bin/env python
"""Lesion masks grown by hysteresis: each lesion found at the threshold keeps its neighbours down to a lower one.

Usage:
  python experiments/analyses/lesion_hysteresis.py BENCH_DIR --run NAME --seeds 21 [--lows 0.5 0.4 0.3 0.2]
  python experiments/analyses/lesion_hysteresis.py --phantoms BIDS_DIR WORK_DIR [--lows ...]

BENCH_DIR is a work folder of ``benchmarks/real_anatomy.py`` after runs with those lesion seeds: ``data/real``
(healthy real cords, manual cord and grey-matter masks) and ``data/real_lesions_v<N>_seed<S>`` (the same cords with
inserted lesions), and the app's Nipype work folders, whose post-processing nodes hold each image's cord and lesion
probabilities on its own grid. The question (``docs/real_anatomy.md``, "Where the inserted lesions' Dice goes"):
many inserted lesions are found but under-segmented, with a probability of 0.3-0.5 around a core above 0.5.
Hysteresis keeps the app's lesions (components with a voxel at the threshold, 0.5) and grows each one into the
connected voxels above ``low``; it cannot add a lesion that has no voxel at 0.5, so false lesions on healthy cords
can grow but not multiply. Scored as the benchmark scores (``bids_sclesion.evaluate``): lesion Dice and lesion-wise
F1 per contrast on the inserted lesions, false lesions and their volume on the healthy cords, on the subjects
that the benchmark run NAME measured (``runs/NAME/summary.json``); ``low`` 0.5 is the app as it is and must give
that run's figures.
With ``--phantoms`` the same on a phantom test set (``BIDS_DIR``, labels in its ``derivatives/labels``) that the app
processed with the work folder ``WORK_DIR``: lesion Dice and F1 per contrast, the regression check.
Nothing is rerun: seconds per image.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.core.image import voxel_volume
from bids_sclesion.core.lesions import threshold_masks
from bids_sclesion.derivatives import SourceName
from bids_sclesion.evaluate import (ImageScore, score_arrays, score_healthy_arrays, summarise_by_contrast,
                                    summarise_healthy)
from bids_sclesion.phantoms.insert import INSERTION_VERSION
from work_folders import postprocess_inputs  # beside this script


def masks(inputs: dict, low: float) -> tuple[np.ndarray, np.ndarray, float]:
    """The app's cord and lesion masks (its post-processing, ``threshold_masks``), the lesions grown down to
    ``low``; the voxel volume."""
    img = nib.load(inputs["cord_prob"])
    cord_p = np.asarray(img.dataobj, np.float32)
    if inputs.get("extra_cord_prob"):
        cord_p = 0.5 * (cord_p + np.asarray(nib.load(inputs["extra_cord_prob"]).dataobj, np.float32))
    les_p = np.asarray(nib.load(inputs["lesion_prob"]).dataobj, np.float32)
    vox = voxel_volume(img.affine)
    cord, lesion = threshold_masks(cord_p, les_p, inputs.get("threshold", 0.5), inputs.get("min_lesion_mm3", 0.0), vox,
                                   grow_threshold=low)
    return cord, lesion, vox


def labels_of(bids: Path, image: Path, label: str) -> np.ndarray | None:
    name = SourceName(image, bids)
    path = bids / "derivatives" / "labels" / Path(name.relpath).parent / image.name.replace(".nii.gz", f"_{label}.nii.gz")
    return np.asarray(nib.load(str(path)).dataobj) > 0.5 if path.exists() else None


def lesion_scores(bids: Path, work: Path, low: float, subjects: set[str] | None = None) -> list[ImageScore]:
    """Scores of every image of ``bids`` with inserted lesions that the app processed in ``work`` (only
    ``subjects``, when given), its lesions grown down to ``low``."""
    scores = []
    for image in sorted(bids.glob("sub-*/**/anat/*.nii.gz")):
        if subjects is not None and image.name.split("_")[0] not in subjects:
            continue
        inputs, truth = postprocess_inputs(work, image), labels_of(bids, image, "lesion-manual")
        if inputs is None or truth is None:
            continue
        cord, lesion, vox = masks(inputs, low)
        scores.append(score_arrays(image.name, SourceName(image, bids).suffix, cord, lesion,
                                   labels_of(bids, image, "seg-manual"), truth, vox))
    return scores


def phantom_table(bids: Path, work: Path, lows: list[float]) -> int:
    """Lesion Dice and F1 per contrast of a phantom set for each ``low``."""
    print("| low | contrast | images | lesion Dice | F1 | false positives | predicted / true volume |")
    print("|---|---|---|---|---|---|---|")
    for low in lows:
        scores = lesion_scores(bids, work, low)
        for contrast, s in summarise_by_contrast(scores).items():
            ratio = (sum(x.predicted_volume_mm3 for x in scores if contrast in ("all", x.suffix))
                     / max(1e-9, sum(x.true_volume_mm3 for x in scores if contrast in ("all", x.suffix))))
            print(f"| {low} | {contrast} | {s['images']} | {s['lesion_dice']:.3f} | {s['lesion_f1']:.3f} | "
                  f"{s['false_positives']} | {ratio:.2f} |")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_dir", type=Path, nargs="?")
    p.add_argument("--run", help="a benchmark run whose measured subjects are scored")
    p.add_argument("--seeds", type=int, nargs="+")
    p.add_argument("--lows", type=float, nargs="+", default=[0.5, 0.4, 0.3, 0.2])
    p.add_argument("--phantoms", type=Path, nargs=2, metavar=("BIDS_DIR", "WORK_DIR"))
    args = p.parse_args(argv)
    if args.phantoms:
        return phantom_table(*args.phantoms, args.lows)
    if not (args.bench_dir and args.run and args.seeds):
        p.error("BENCH_DIR, --run and --seeds are needed without --phantoms")
    data = args.bench_dir / "data"
    healthy_bids, healthy_work = data / "real", args.bench_dir / "work" / "healthy"
    run = json.loads((args.bench_dir / "runs" / args.run / "summary.json").read_text())
    measured = {s for info in run["models"].values() if info["status"] == "yes" for s in info["subjects"]}
    print("| low | false lesions / image | false mm3 / image | largest in GM mm3 | contrast | lesion Dice | F1 | "
          "TPR | PPV |")
    print("|---|---|---|---|---|---|---|---|---|")
    for low in args.lows:
        healthy = []
        for image in sorted(i for i in healthy_bids.glob("sub-*/anat/*.nii.gz") if i.name.split("_")[0] in measured):
            inputs = postprocess_inputs(healthy_work, image)
            if inputs is None:
                continue
            cord, lesion, vox = masks(inputs, low)
            healthy.append(score_healthy_arrays(image.name, SourceName(image, healthy_bids).suffix, cord, lesion,
                                                labels_of(healthy_bids, image, "seg-manual"),
                                                labels_of(healthy_bids, image, "gmseg-manual"), vox))
        h = summarise_healthy(healthy)["all"]
        for seed in args.seeds:
            name = f"real_lesions_v{INSERTION_VERSION}_seed{seed}"
            scores = lesion_scores(data / name, args.bench_dir / "work" / name, low, measured)
            for contrast, s in summarise_by_contrast(scores).items():
                print(f"| {low} (seed {seed}) | {h['false_lesions_per_image']:.3f} | {h['false_volume_per_image_mm3']:.0f} | "
                      f"{h['largest_in_grey_matter_mm3']:.1f} | {contrast} | {s['lesion_dice']:.3f} | "
                      f"{s['lesion_f1']:.3f} | {s['lesion_tpr']:.3f} | {s['lesion_ppv']:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
