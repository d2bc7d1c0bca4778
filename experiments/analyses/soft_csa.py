#!/usr/bin/env python
"""Cord CSA from the binary cord mask against CSA from the cord probability, both against the manual mask.

Usage:
  python experiments/analyses/soft_csa.py BENCH_DIR [--dataset real]
  python experiments/analyses/soft_csa.py WORK_DIR --phantoms BIDS_DIR --seed SEED

BENCH_DIR is a work folder of ``benchmarks/real_anatomy.py`` (or ``benchmarks/morphometry.py``) after its app
runs: its ``data/<dataset>`` holds the real images with their manual cord masks, and its Nipype work folder the
two cord probabilities (stage 1 on the source grid, stage 2 mapped back to it) that the app averages and
thresholds at 0.5 into its cord mask. The question: on thick or coarse slices a binary mask counts a voxel
half in the cord as all or nothing, so the area of a slice moves in steps of whole voxels; the probability,
summed over the slice, may follow the partial volume better. The soft area of a slice is the sum of the
averaged probability over the final cord mask dilated by one voxel (so that probability just outside the
mask counts, but not distant blobs), times the voxel face, times the same angle correction.
Both are measured with the manual mask's centreline and on the slices where both the manual and the app's
mask have cord, as ``benchmarks/morphometry.py`` does; the table gives each image's mean difference.

With ``--phantoms`` the truth is exact instead: each phantom's anatomy is drawn again from the seed it was made
with (``bids_sclesion-synth BIDS_DIR --seed SEED``: subject n's anatomy comes from the stream (SEED, n)), and
both CSAs are compared slice by slice with the drawn ellipse (pi r_lr r_ap) below the medulla, as the
phantom part of ``benchmarks/morphometry.py`` does for the true mask; WORK_DIR is the app's work folder
(``-w``) of a run on BIDS_DIR.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from bids_sclesion.core.centerline import CenterlineError, extract_centerline
from bids_sclesion.core.lesions import threshold_masks
from bids_sclesion.core.morphometry import cord_csa
from work_folders import postprocess_inputs  # beside this script


def cord_probability(work: Path, image: Path) -> np.ndarray | None:
    """The app's averaged cord probability of ``image``, from its post-processing node's inputs."""
    inputs = postprocess_inputs(work, image)
    if inputs is None:
        return None
    prob = np.asarray(nib.load(inputs["cord_prob"]).dataobj, np.float32)
    extra = inputs.get("extra_cord_prob")
    if extra and Path(str(extra)).exists():
        prob = 0.5 * (prob + np.asarray(nib.load(extra).dataobj, np.float32))
    return np.clip(prob, 0.0, 1.0)


def phantom_errors(work: Path, bids: Path, seed: int) -> int:
    """Binary-mask and probability CSA of the app against each phantom's drawn ellipse."""
    import json

    from bids_sclesion.phantoms import random_anatomy

    print("| image | slices | binary mask: mean error | median abs error | probability: mean error | median abs error |")
    print("|---|---|---|---|---|---|")
    every = {"binary": [], "probability": []}
    for image_path in sorted(bids.glob("sub-*/anat/*.nii.gz")):
        prob = cord_probability(work, image_path)
        if prob is None:
            continue
        index = int(image_path.name.split("_")[0].removeprefix("sub-"))
        anatomy = random_anatomy(np.random.default_rng([seed, index]), fov_top=110.0)
        shift = json.loads(image_path.with_name(image_path.name.replace(".nii.gz", ".json")).read_text())[
            "PhantomAcquisition"]["shift"]
        affine = nib.load(str(image_path)).affine
        mask, _ = threshold_masks(prob, np.zeros_like(prob))
        try:
            centerline = extract_centerline(mask.astype(np.float32), affine)
        except CenterlineError:
            continue
        region = ndimage.binary_dilation(mask, iterations=1)
        errors = {}
        for name, rows in (("binary", cord_csa(mask, affine, centerline)),
                           ("probability", cord_csa(region, affine, centerline, weights=np.where(region, prob, 0.0)))):
            rows = rows[5:-5]  # the mask's ends
            z = np.array([r.centroid_z_mm for r in rows]) - shift[2]
            rx, ry = anatomy.cord_radii(z)
            truth = np.pi * rx * ry
            keep = z < anatomy.foramen_z - 10  # the medulla widens above
            errors[name] = 100 * ((np.array([r.csa_mm2 for r in rows]) - truth) / truth)[keep]
            every[name].extend(errors[name].tolist())
        b, s = errors["binary"], errors["probability"]
        print(f"| {image_path.name} | {len(b)} | {b.mean():+.1f} % | {np.median(np.abs(b)):.1f} % | {s.mean():+.1f} % | "
              f"{np.median(np.abs(s)):.1f} % |")
    for name, values in every.items():
        v = np.array(values)
        if len(v):
            print(f"{name}: {len(v)} slices, mean error {v.mean():+.2f} %, median absolute error "
                  f"{np.median(np.abs(v)):.2f} %, 90th percentile {np.percentile(np.abs(v), 90):.1f} %")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_dir", type=Path, help="benchmark folder (or, with --phantoms, the app's work folder)")
    p.add_argument("--dataset", default="real")
    p.add_argument("--phantoms", type=Path, default=None, metavar="BIDS_DIR", help="phantom dataset the app ran on")
    p.add_argument("--seed", type=int, default=None, help="the seed the phantoms were made with")
    args = p.parse_args(argv)
    if args.phantoms:
        if args.seed is None:
            p.error("--phantoms needs --seed")
        return phantom_errors(args.bench_dir, args.phantoms, args.seed)
    bids = args.bench_dir / "data" / args.dataset
    print("| image | slices | manual (mm2) | binary mask (mm2) | difference | probability (mm2) | difference |")
    print("|---|---|---|---|---|---|---|")
    binary_diffs, soft_diffs = [], []
    for manual_path in sorted(bids.glob("derivatives/labels/sub-*/**/anat/*_seg-manual.nii.gz")):
        stem = manual_path.name.replace("_seg-manual.nii.gz", "")
        rel = manual_path.parent.relative_to(bids / "derivatives" / "labels")
        image_path = bids / rel / f"{stem}.nii.gz"
        prob = cord_probability(args.bench_dir, image_path)
        if prob is None:
            continue
        image = nib.load(str(image_path))
        manual = np.asarray(nib.load(str(manual_path)).dataobj) > 0.5
        mask, _ = threshold_masks(prob, np.zeros_like(prob))
        if prob.shape != manual.shape:
            print(f"| {stem} | grid differs: skipped | | | | | |")
            continue
        try:
            centerline = extract_centerline(manual.astype(np.float32), image.affine)
        except CenterlineError:
            continue
        region = ndimage.binary_dilation(mask, iterations=1)
        ref = {r.slice_index: r.csa_mm2 for r in cord_csa(manual, image.affine, centerline)}
        hard = {r.slice_index: r.csa_mm2 for r in cord_csa(mask, image.affine, centerline)}
        soft = {r.slice_index: r.csa_mm2 for r in cord_csa(region, image.affine, centerline,
                                                           weights=np.where(region, prob, 0.0))}
        common = sorted(set(ref) & set(hard) & set(soft))
        if not common:
            continue
        a, b, c = (np.mean([d[k] for k in common]) for d in (ref, hard, soft))
        binary_diffs.append(100 * (b / a - 1))
        soft_diffs.append(100 * (c / a - 1))
        print(f"| {rel.parts[0]} {stem} | {len(common)} | {a:.1f} | {b:.1f} | {binary_diffs[-1]:+.1f} % | {c:.1f} | "
              f"{soft_diffs[-1]:+.1f} % |")
    if binary_diffs:
        print(f"\nmean absolute difference over {len(binary_diffs)} images: binary mask "
              f"{np.mean(np.abs(binary_diffs)):.1f} %, probability {np.mean(np.abs(soft_diffs)):.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
