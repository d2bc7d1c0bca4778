#!/usr/bin/env python
"""Single-stage vs cascade segmentation, scored on a dataset with known lesions.

Usage:
  python experiments/analyses/compare_cascade.py BIDS_DIR OUT_ROOT [--stage1 MODEL] [--stage2 MODEL]
      [--baseline MODEL] [--stage1-folds CV_DIR] [--nprocs N] [--participant-label LABEL ...]

Runs the participant level three times on BIDS_DIR (labels in
derivatives/labels: *_seg-manual, *_lesion-manual):
  baseline  the walking skeleton's single-stage model (``--baseline``),
  stage1    the whole-image model of the cascade alone (``--stage1``, single stage),
  cascade   stage 1 + stage 2 on the straightened cord (cord map: stage 2's),
  cascade_mean  the same, cord map = mean of both stages' cord probabilities
            (it reuses the cascade's work directory: only the post-processing
            runs again, so its time is the cascade's).
With ``--stage1-folds CV_DIR`` (from experiments/analyses/crossval_real_cord.py) each
subject is processed by the fold model that did not see its collection
(participants.tsv ``source`` column), so real images are never scored by a
model trained on them; ``--stage2-folds`` does the same for stage 2 (alone, it
keeps ``--stage1`` for every subject). Prints lesion Dice, lesion-wise F1, cord Dice and
wall time per image for each configuration, over the images that every
configuration processed (a model that does not know a contrast skips it).
Wall times are saved in OUT_ROOT/<configuration>/timing.json; ``--score-only``
rescores finished runs without running anything.
"""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

from bids_sclesion.cli.run import main as app
from bids_sclesion.evaluate import evaluate_outputs, summarise_by_contrast
from bids_sclesion.workflows.base import node_run_seconds


def run(bids: Path, out: Path, work: Path, model: str, stage2: str | None, cord: str, nprocs: int,
        participants=None) -> float:
    argv = [str(bids), str(out / "derivatives"), "participant", "-w", str(work), "--skip-bids-validation",
            "--nprocs", str(nprocs), "--omp-nthreads", "1", "--model", model]
    argv += ["--stage2-model", stage2, "--cascade-cord", cord] if stage2 else ["--single-stage"]
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
    p.add_argument("--stage2-folds", type=Path, default=None,
                   help="like --stage1-folds for stage 2: CV_DIR/fold-<source> did not see <source>")
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--only", nargs="+", default=None, help="configurations to run")
    p.add_argument("--participant-label", nargs="+", default=None, metavar="LABEL",
                   help="run and score these subjects only (e.g. the collections a model never saw)")
    p.add_argument("--score-only", action="store_true", help="score finished runs, run nothing")
    args = p.parse_args()
    groups: dict[str, list[str]] = {}
    if args.stage1_folds or args.stage2_folds:
        with open(args.bids_dir / "participants.tsv") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                if row["source"] != "template":
                    groups.setdefault(row["source"], []).append(row["participant_id"])
    configs = {"baseline": (args.baseline, None, False, "", "baseline"),
               "stage1": (args.stage1, None, True, "", "stage1"),
               "cascade": (args.stage1, args.stage2, True, "stage2", "cascade"),
               "cascade_mean": (args.stage1, args.stage2, True, "mean", "cascade")}
    results = {}
    for name, (model, stage2, uses_folds, cord, work_name) in configs.items():
        if args.only and name not in args.only:
            continue
        out = args.out_root / name
        work = args.out_root / work_name / "work"
        timing = out / "timing.json"
        if args.score_only:
            if not timing.exists():
                continue
            info = json.loads(timing.read_text())
            seconds = info["seconds"]
            if "steps" not in info:  # durations are in the work directory's result files
                info["steps"] = node_run_seconds(work)
                timing.write_text(json.dumps(info) + "\n")
        else:
            seconds = 0.0
            if uses_folds and groups:
                for source, subjects in sorted(groups.items()):
                    fold_stage2 = stage2
                    if stage2 and args.stage2_folds:
                        fold_stage2 = str(args.stage2_folds / f"fold-{source}")
                    fold_stage1 = str(args.stage1_folds / f"fold-{source}") if args.stage1_folds else model
                    seconds += run(args.bids_dir, out, work, fold_stage1, fold_stage2, cord, args.nprocs, subjects)
            else:
                seconds = run(args.bids_dir, out, work, model, stage2, cord, args.nprocs, args.participant_label)
            if work_name != name and (args.out_root / work_name / "timing.json").exists():
                seconds = json.loads((args.out_root / work_name / "timing.json").read_text())["seconds"]
        scores, _ = evaluate_outputs(args.bids_dir, out / "derivatives")
        if args.participant_label:
            wanted = {f"sub-{label.removeprefix('sub-')}" for label in args.participant_label}
            scores = [s for s in scores if s.image.split("_")[0] in wanted]
        if not args.score_only:
            steps = node_run_seconds(work)
            timing.write_text(json.dumps({"seconds": seconds, "images": len(scores), "steps": steps}) + "\n")
        results[name] = (scores, seconds)
    common = set.intersection(*[{s.image for s in scores} for scores, _ in results.values()]) if results else set()
    for name, (scores, _) in results.items():
        left_out = sorted({s.image for s in scores} - common)
        if left_out:
            print(f"{name}: not scored (not processed by every configuration): {', '.join(left_out)}")
    print("| configuration | contrast | images | cord Dice | lesion Dice | lesion TPR | lesion PPV | lesion F1 "
          "| false positives | wall s / image |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (scores, seconds) in results.items():
        kept = [s for s in scores if s.image in common]
        summary = summarise_by_contrast(kept)
        for contrast, row in summary.items():
            per_image = f"{seconds / max(len(scores), 1):.1f}" if contrast == "all" else ""
            print(f"| {name} | {contrast} | {row['images']} | {row['cord_dice']:.3f} | {row['lesion_dice']:.3f} | "
                  f"{row['lesion_tpr']:.3f} | {row['lesion_ppv']:.3f} | {row['lesion_f1']:.3f} | "
                  f"{row['false_positives']} | {per_image} |")
    print("\nSeconds per image in each step (sum of Nipype node run times / images; one thread per node):")
    for name in results:
        timing = args.out_root / name / "timing.json"
        if timing.exists():
            info = json.loads(timing.read_text())
            n = max(info.get("images", 1), 1)
            steps = info.get("steps", {})
            cells = ", ".join(f"{k} {v / n:.1f}" for k, v in sorted(steps.items()))
            print(f"- {name}: total {sum(steps.values()) / n:.1f} s ({cells})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
