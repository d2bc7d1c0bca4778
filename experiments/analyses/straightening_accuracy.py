#!/usr/bin/env python
"""Straightening accuracy and time on cord masks (manual or synthetic ground truth).

Usage: python experiments/analyses/straightening_accuracy.py MASK.nii.gz [MASK ...]
For each mask: centreline from the mask, straighten (0.5 x 0.5 x 1 mm grid,
20 mm radius), measure the distance of the straightened cord's per-slice
centroid to the straight line (RMS, max; slices 3 mm in from the centreline
ends), unstraighten and report the round-trip Dice, and the time for
centreline + both mappings + both resamplings (one core).
"""
from __future__ import annotations

import sys
import time

import nibabel as nib
import numpy as np

from bids_sclesion.core.centerline import extract_centerline
from bids_sclesion.core.metrics import dice
from bids_sclesion.core.straighten import apply_points, native_to_straight_points, straight_grid, straight_to_native_points


def measure(path: str) -> str:
    img = nib.load(path)
    mask = np.asarray(img.dataobj) > 0.5
    t0 = time.perf_counter()
    cl = extract_centerline(mask.astype(np.float32), img.affine)
    grid = straight_grid(cl, 20.0, (0.5, 0.5, 1.0))
    straight = apply_points(mask.astype(np.float32), img.affine, straight_to_native_points(cl, grid))
    back = apply_points(straight, grid.affine, native_to_straight_points(cl, grid, mask.shape, img.affine)) >= 0.5
    elapsed = time.perf_counter() - t0
    centre = (np.array(grid.shape[:2]) - 1) / 2
    m0 = int(grid.margin_mm / grid.spacing_mm[2])
    dev = []
    for k in range(m0 + 3, grid.shape[2] - m0 - 3):
        idx = np.argwhere(straight[:, :, k] >= 0.5)
        if len(idx) >= 5:
            dev.append(np.linalg.norm((idx.mean(axis=0) - centre) * np.asarray(grid.spacing_mm[:2])))
    dev = np.asarray(dev)
    return (f"| {path.split('/')[-1]} | {'x'.join(map(str, mask.shape))} | {cl.length_mm:.0f} | "
            f"{np.sqrt(np.mean(dev ** 2)):.2f} | {dev.max():.2f} | {dice(back, mask):.3f} | {elapsed:.1f} |")


def main(argv: list[str]) -> int:
    print("| mask | shape | cord length (mm) | RMS (mm) | max (mm) | round-trip Dice | time (s) |")
    print("|---|---|---|---|---|---|---|")
    for path in argv[1:]:
        print(measure(path), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
