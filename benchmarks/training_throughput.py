#!/usr/bin/env python
"""Training throughput: iterations per second, with and without cached preprocessing, on CPU (and GPU).

Usage: python benchmarks/training_throughput.py [--subjects 4] [--iterations 40] [--threads 2] [--devices cpu[,cuda]]

A small synthetic dataset (T2w + PSIR) is made once. For each device, ``bids_sclesion-train`` runs twice with the
same preprocessing cache directory: the first run preprocesses every image (reorient, N4, resampling; cached),
the second finds them in the cache. Reported: preprocessing time, training iterations per second (batch of 2
patches of 64^3, validation excluded: it runs once, at the end), and the whole command's wall time.
"""
from __future__ import annotations

import argparse
import csv
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bids_sclesion.phantoms import generate_dataset


def run_training(bids: Path, model_dir: Path, cache: Path, iterations: int, threads: int, device: str) -> dict:
    cmd = [sys.executable, "-m", "bids_sclesion.cli.train", str(bids), str(model_dir), "-w", str(cache),
           "--iterations", str(iterations), "--val-every", str(iterations), "--device", device,
           "--nthreads", str(threads), "--contrast", "T2w", "PSIR"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS=str(threads)))
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"training failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    log = proc.stdout + proc.stderr
    match = re.search(r"preprocessing took (\d+) s", log)
    with open(model_dir / "training_log.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("loss")]
    # seconds at the last logged iteration, minus the validation that runs with it
    last = rows[-1]
    seconds = float(last["seconds"])
    return {"preprocessing": float(match.group(1)) if match else float("nan"), "iterations": int(last["iteration"]),
            "train_seconds": seconds, "it_per_s": int(last["iteration"]) / seconds, "wall": wall}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", type=int, default=4)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--devices", default="cpu" + (",cuda" if _cuda() else ""))
    args = p.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bids = Path(tmp) / "bids"
        generate_dataset(bids, n_subjects=args.subjects, contrasts=("T2w", "PSIR"), seed=8100, fov_scale=0.7)
        for device in args.devices.split(","):
            cache = Path(tmp) / f"cache-{device}"
            for label in ("empty cache (preprocesses)", "cached preprocessing"):
                model_dir = Path(tmp) / f"model-{device}-{len(rows)}"
                r = run_training(bids, model_dir, cache, args.iterations, args.threads, device)
                rows.append({"device": device, "run": label, **r})
                print(f"{device} {label}: {r['it_per_s']:.2f} it/s, wall {r['wall']:.0f} s", file=sys.stderr)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.subjects} subjects x "
          f"(T2w, PSIR), {args.iterations} iterations, batch 2 x 64^3, {args.threads} threads\n")
    print("| device | run | preprocessing (s) | training it/s | wall (s) | wall / first run |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        first = next(f for f in rows if f["device"] == r["device"])
        print(f"| {r['device']} | {r['run']} | {r['preprocessing']:.0f} | {r['it_per_s']:.2f} | {r['wall']:.0f} | "
              f"{r['wall'] / first['wall']:.2f} |")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
