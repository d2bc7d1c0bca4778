#!/usr/bin/env python
"""Training throughput: iterations per second, with and without cached preprocessing, on CPU (and GPU).

Usage: python benchmarks/training_throughput.py [--subjects 4] [--iterations 40] [--threads 2] [--devices cpu[,cuda]]
                                               [--workers 0,1] [--batch-size 2] [--channels 16 32 64 128]
                                               [--cpu-bf16]

A small synthetic dataset (T2w + PSIR) is made once. For each device, ``bids_sclesion-train`` runs twice with the
same preprocessing cache directory: the first run preprocesses every image (reorient, N4, resampling; cached),
then it runs once more from the cache for each ``--workers`` count (processes preparing batches beside the
network; the same batches for any count). Reported: preprocessing time, training iterations per second (patches
of 64^3, validation excluded: it runs once, at the end), the whole command's wall time, and iterations per
second against the cached run without workers measured in the same run. With ``--cpu-bf16`` the CPU also
trains once more from the cache in bfloat16 (``bids_sclesion-train --cpu-bf16``), against the same baseline.
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


def run_training(bids: Path, model_dir: Path, cache: Path, iterations: int, threads: int, device: str,
                 workers: int = 0, batch_size: int = 2, channels: list[int] | None = None,
                 cpu_bf16: bool = False) -> dict:
    cmd = [sys.executable, "-m", "bids_sclesion.cli.train", str(bids), str(model_dir), "-w", str(cache),
           "--iterations", str(iterations), "--val-every", str(iterations), "--device", device,
           "--nthreads", str(threads), "--contrast", "T2w", "PSIR", "--workers", str(workers),
           "--batch-size", str(batch_size)] + (["--channels", *map(str, channels)] if channels else [])
    cmd += ["--cpu-bf16"] if cpu_bf16 else []
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
    p.add_argument("--workers", default="0,1", help="comma-separated worker counts to time on the cache")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--channels", type=int, nargs="+", default=None)
    p.add_argument("--cpu-bf16", action="store_true", help="also time the CPU in bfloat16 from the cache")
    args = p.parse_args()
    worker_counts = [int(w) for w in args.workers.split(",")]
    options = dict(batch_size=args.batch_size, channels=args.channels)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        bids = Path(tmp) / "bids"
        generate_dataset(bids, n_subjects=args.subjects, contrasts=("T2w", "PSIR"), seed=8100, fov_scale=0.7)
        for device in args.devices.split(","):
            cache = Path(tmp) / f"cache-{device}"
            runs = [("empty cache (preprocesses)", 0, False)] + [("cached preprocessing", w, False)
                                                                 for w in worker_counts]
            if args.cpu_bf16 and device == "cpu":
                runs.append(("cached preprocessing, bfloat16", 0, True))
            for label, workers, bf16 in runs:
                model_dir = Path(tmp) / f"model-{device}-{len(rows)}"
                r = run_training(bids, model_dir, cache, args.iterations, args.threads, device, workers, **options,
                                 cpu_bf16=bf16)
                rows.append({"device": device, "run": label, "workers": workers, **r})
                print(f"{device} {label}, {workers} workers: {r['it_per_s']:.2f} it/s, wall {r['wall']:.0f} s",
                      file=sys.stderr)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; {args.subjects} subjects x "
          f"(T2w, PSIR), {args.iterations} iterations, batch {args.batch_size} x 64^3, {args.threads} threads, "
          f"channels {args.channels or 'default'}\n")
    print("| device | run | workers | preprocessing (s) | training it/s | wall (s) | wall / first run "
          "| it/s / cached, 0 workers |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        first = next(f for f in rows if f["device"] == r["device"])
        base = next((f for f in rows if f["device"] == r["device"] and f["run"] == "cached preprocessing"
                     and f["workers"] == 0), None)
        ratio = f"{r['it_per_s'] / base['it_per_s']:.2f}" if base else "-"
        print(f"| {r['device']} | {r['run']} | {r['workers']} | {r['preprocessing']:.0f} | {r['it_per_s']:.2f} | "
              f"{r['wall']:.0f} | {r['wall'] / first['wall']:.2f} | {ratio} |")
    return 0


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    raise SystemExit(main())
