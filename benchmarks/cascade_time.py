#!/usr/bin/env python
"""Time per image and per step: single stage (0.1.0 baseline) vs the cascade.

Usage: python benchmarks/cascade_time.py [--subjects 2] [--contrasts T2w,T1w] [--seed 99] [--tta]
                                         [--stage2-model NAME|PATH ...]

Generates a small phantom dataset, runs the participant level with one
process and one thread per node for each configuration in turn (same
machine, same run), and prints the seconds each step took per image (from
Nipype's result files) and the cascade/baseline ratio. ``--stage2-model`` adds the cascade with
another stage 2 (a candidate for bundling) to the same run.
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bids_sclesion.cli.run import main as app
from bids_sclesion.phantoms import generate_dataset
from bids_sclesion.workflows.base import node_run_seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=2)
    p.add_argument("--contrasts", default="T2w,T1w")
    p.add_argument("--seed", type=int, default=99)
    p.add_argument("--tta", action="store_true", help="also time the cascade with --tta")
    p.add_argument("--stage2-model", action="append", default=[], metavar="NAME|PATH",
                   help="also time the cascade with this stage 2 (repeatable)")
    args = p.parse_args()
    contrasts = tuple(args.contrasts.split(","))
    configs = {"baseline": ["--model", "default", "--single-stage"], "cascade": []}
    if args.tta:
        configs["cascade+tta"] = ["--tta"]
    for model in args.stage2_model:
        configs[f"cascade, stage 2 {Path(model).name}"] = ["--stage2-model", model]
    with tempfile.TemporaryDirectory() as tmp:
        bids = Path(tmp) / "bids"
        generate_dataset(bids, n_subjects=args.subjects, contrasts=contrasts, seed=args.seed)
        n_images = args.subjects * len(contrasts)
        results = {}
        for name, extra in configs.items():
            work = Path(tmp) / name / "work"
            t0 = time.time()
            code = app([str(bids), str(Path(tmp) / name / "out"), "participant", "-w", str(work), "--nprocs", "1",
                        "--omp-nthreads", "1", "--skip-bids-validation", *extra])
            if code != 0:
                raise SystemExit(f"{name}: participant level failed ({code})")
            results[name] = (time.time() - t0, node_run_seconds(work))
    steps = sorted({s for _, st in results.values() for s in st})
    names = list(results)
    print(f"\n{n_images} images ({args.subjects} subjects x {', '.join(contrasts)}), seconds per image, one thread:\n")
    print("| step | " + " | ".join(names) + " |")
    print("|---|" + "---|" * len(names))
    for step in steps:
        print(f"| {step} | " + " | ".join(f"{results[n][1].get(step, 0.0) / n_images:.2f}" for n in names) + " |")
    totals = {n: sum(results[n][1].values()) / n_images for n in names}
    print("| **all steps** | " + " | ".join(f"{totals[n]:.2f}" for n in names) + " |")
    print("| wall (incl. start-up) | " + " | ".join(f"{results[n][0] / n_images:.2f}" for n in names) + " |")
    for n in names[1:]:
        print(f"\n{n} / baseline (all steps): {totals[n] / totals['baseline']:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
