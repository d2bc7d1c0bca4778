#!/usr/bin/env python
"""Scaling: time per subject for 1, 10, 100 subjects, and pybids indexing of a 1000-subject dataset.

Usage: python benchmarks/scaling.py [--subjects 1,10,100] [--nprocs 2] [--index-subjects 1000] [--skip-app]

Participant level: synthetic subjects (one sagittal T2w each, field of view along the cord scaled by 0.5 so that
100 subjects fit in minutes), run with --nprocs N --omp-nthreads 1; time per subject should stay flat as the
dataset grows (start-up is paid once, the steps run in parallel).
Indexing: a dataset of N subjects x 2 sessions x 3 images (tiny NIfTI files: indexing reads names, not voxels),
indexed without cache (what plain pybids does on every run), then with the app's database cache: the first run
builds it, the second loads it.
"""
from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.bids import load_layout
from bids_sclesion.phantoms import generate_dataset


def time_participants(n: int, nprocs: int, root: Path) -> dict:
    bids = root / f"bids{n}"
    t0 = time.perf_counter()
    generate_dataset(bids, n_subjects=n, contrasts=("T2w",), seed=4000, fov_scale=0.5)
    generation = time.perf_counter() - t0
    cmd = [sys.executable, "-m", "bids_sclesion.cli.run", str(bids), str(root / f"out{n}"), "participant",
           "-w", str(root / f"work{n}"), "--nprocs", str(nprocs), "--omp-nthreads", "1", "--skip-bids-validation",
           "--no-reports"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{n} subjects: run failed\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return {"subjects": n, "wall": wall, "per_subject": wall / n, "generation": generation}


def make_index_dataset(root: Path, n: int) -> Path:
    header = nib.Nifti1Image(np.zeros((2, 2, 2), np.uint8), np.eye(4)).to_bytes()
    blob = gzip.compress(header)
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "index benchmark", "BIDSVersion": "1.10.0"}))
    for s in range(1, n + 1):
        for ses in ("01", "02"):
            anat = root / f"sub-{s:04d}" / f"ses-{ses}" / "anat"
            anat.mkdir(parents=True)
            for name in ("acq-sag_T2w", "T1w", "acq-ax_T2starw"):
                (anat / f"sub-{s:04d}_ses-{ses}_{name}.nii.gz").write_bytes(blob)
                (anat / f"sub-{s:04d}_ses-{ses}_{name}.json").write_text('{"RepetitionTime": 3.0}')
    return root


def time_indexing(n: int, root: Path) -> list[tuple[str, float, int]]:
    bids = make_index_dataset(root / "index_bids", n)
    rows = []
    for label, db in (("no cache (plain pybids)", None), ("cache: first run (builds it)", root / "db"),
                      ("cache: second run (loads it)", root / "db")):
        t0 = time.perf_counter()
        layout = load_layout(bids, db)
        files = layout.get(suffix="T2w", extension=".nii.gz", return_type="file")
        rows.append((label, time.perf_counter() - t0, len(files)))
        print(f"indexing {label}: {rows[-1][1]:.1f} s", file=sys.stderr, flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--subjects", default="1,10,100")
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--index-subjects", type=int, default=1000)
    p.add_argument("--skip-app", action="store_true", help="only the indexing benchmark")
    args = p.parse_args()
    print(f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        if not args.skip_app:
            runs = []
            for n in (int(s) for s in args.subjects.split(",")):
                runs.append(time_participants(n, args.nprocs, root))
                print(f"{n} subjects: {runs[-1]['wall']:.0f} s", file=sys.stderr, flush=True)
            base = runs[0]["per_subject"]
            print(f"Participant level, --nprocs {args.nprocs} --omp-nthreads 1, one sagittal T2w per subject:\n")
            print("| subjects | wall (s) | s per subject | per subject / first row |")
            print("|---|---|---|---|")
            for r in runs:
                print(f"| {r['subjects']} | {r['wall']:.0f} | {r['per_subject']:.1f} | {r['per_subject'] / base:.2f} |")
            print()
        rows = time_indexing(args.index_subjects, root)
        print(f"pybids indexing, {args.index_subjects} subjects x 2 sessions x 3 images "
              f"({args.index_subjects * 12} files with sidecars):\n")
        print("| run | seconds | / no cache | T2w images found |")
        print("|---|---|---|---|")
        for label, seconds, found in rows:
            print(f"| {label} | {seconds:.1f} | {seconds / rows[0][1]:.2f} | {found} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
