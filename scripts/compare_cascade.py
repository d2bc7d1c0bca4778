#!/usr/bin/env python
"""Single-stage vs cascade segmentation, scored on a dataset with known lesions.

Usage:
  python scripts/compare_cascade.py BIDS_DIR OUT_ROOT [--stage1 MODEL] [--stage2 MODEL]
      [--baseline MODEL] [--stage1-folds CV_DIR] [--nprocs N]

Runs the participant level three times on BIDS_DIR (labels in
derivatives/labels: *_seg-manual, *_lesion-manual):
  baseline  the walking skeleton's single-stage model (``--baseline``),
  stage1    the whole-image model of the cascade alone (``--stage1``, single stage),
  cascade   stage 1 + stage 2 on the straightened cord.
With ``--stage1-folds CV_DIR`` (from scripts/crossval_real_cord.py) each
subject is processed by the fold model that did not see its collection
(participants.tsv ``source`` column), so real images are never scored by a
model trained on them. Prints lesion Dice, lesion-wise F1, cord Dice and
wall time per image for each configuration.
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

from bids_sclesion.cli.run import main as app
from bids_sclesion.evaluate import evaluate_outputs


def run(bids: Path, out: Path, model: str, stage2: str | None, nprocs: int, participants=None) -> float:
    argv = [str(bids), str(out / "derivatives"), "participant", "-w", str(out / "work"), "--skip-bids-validation",
            "--nprocs", str(nprocs), "--omp-nthreads", "1", "--model", model]
    argv += ["--stage2-model", stage2] if stage2 else ["--single-stage"]
    if participants:
        argv += ["--participant-label", *[p.removeprefix("sub-") for p in participants]]
    t0 = time.time()
    code = app(argv)
    if code not in (0, 1):
        raise SystemExit(f"participant level failed with exit code {code}: {' '.join(argv)}")
    return time.time() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bids_dir", type=Path)
    p.add_argument("out_root", type=Path)
    p.add_argument("--baseline", default="default")
    p.add_argument("--stage1", default="stage1")
    p.add_argument("--stage2", default="stage2")
    p.add_argument("--stage1-folds", type=Path, default=None)
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--only", nargs="+", default=None, help="configurations to run")
    args = p.parse_args()
    groups: dict[str, list[str]] = {}
    if args.stage1_folds:
        with open(args.bids_dir / "participants.tsv") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                if row["source"] != "template":
                    groups.setdefault(row["source"], []).append(row["participant_id"])
    configs = {"baseline": (args.baseline, None, False), "stage1": (args.stage1, None, True),
               "cascade": (args.stage1, args.stage2, True)}
    results = {}
    for name, (model, stage2, uses_folds) in configs.items():
        if args.only and name not in args.only:
            continue
        out = args.out_root / name
        seconds = 0.0
        if uses_folds and groups:
            for source, subjects in sorted(groups.items()):
                seconds += run(args.bids_dir, out, str(args.stage1_folds / f"fold-{source}"), stage2, args.nprocs,
                               subjects)
        else:
            seconds = run(args.bids_dir, out, model, stage2, args.nprocs)
        scores, summary = evaluate_outputs(args.bids_dir, out / "derivatives")
        results[name] = (summary, seconds, len(scores))
    print("| configuration | contrast | images | cord Dice | lesion Dice | lesion TPR | lesion PPV | lesion F1 "
          "| false positives | wall s / image |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (summary, seconds, n) in results.items():
        for contrast, row in summary.items():
            per_image = f"{seconds / max(n, 1):.1f}" if contrast == "all" else ""
            print(f"| {name} | {contrast} | {row['images']} | {row['cord_dice']:.3f} | {row['lesion_dice']:.3f} | "
                  f"{row['lesion_tpr']:.3f} | {row['lesion_ppv']:.3f} | {row['lesion_f1']:.3f} | "
                  f"{row['false_positives']} | {per_image} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
