#!/usr/bin/env python
"""Which cord probability makes the best cord mask on real images: the two stages' mean (the app's default),
stage 2 alone, stage 1 alone, or the mean at another threshold.

Usage:
  python experiments/analyses/cord_fusion.py BENCH_DIR [BENCH_DIR ...] [--dataset real] [--thresholds 0.5 0.4]

BENCH_DIR is a work folder of ``benchmarks/real_anatomy.py`` or ``benchmarks/morphometry.py`` after its app
runs: ``data/<dataset>`` holds the real images and their manual cord masks, the Nipype work folder each
image's two cord probabilities on the source grid (stage 1's and stage 2's mapped back), which the app's
post-processing averages and thresholds. Each rule's mask is scored against the manual mask: Dice, and the
mean CSA over the slices both masks cover, measured with the manual mask's centreline (as
``benchmarks/morphometry.py`` does). Lesions are not added to the masks here (the healthy images have none).
Nothing is rerun: 1-2 s per image.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.core.centerline import CenterlineError, extract_centerline
from bids_sclesion.core.lesions import threshold_masks
from bids_sclesion.core.metrics import dice
from bids_sclesion.core.morphometry import cord_csa
from work_folders import postprocess_inputs  # beside this script


def stage_probabilities(work: Path, image: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Stage 1's and stage 2's cord probabilities of ``image`` on its own grid, from the post-processing node's
    inputs in the work folder ``work``; None when the image was not processed by the cascade there."""
    inputs = postprocess_inputs(work, image)
    extra = inputs.get("extra_cord_prob") if inputs else None
    if not extra or not Path(str(extra)).exists():
        return None
    load = lambda path: np.clip(np.asarray(nib.load(str(path)).dataobj, np.float32), 0.0, 1.0)  # noqa: E731
    return load(extra), load(inputs["cord_prob"])


def rules(stage1: np.ndarray, stage2: np.ndarray, thresholds: list[float]) -> dict[str, np.ndarray]:
    """Cord mask of each fusion rule, with the app's component filtering (``threshold_masks``)."""
    mean = 0.5 * (stage1 + stage2)
    no_lesion = np.zeros_like(mean)
    out = {f"mean >= {t}": threshold_masks(mean, no_lesion, t)[0] for t in thresholds}
    out["stage 2 >= 0.5"] = threshold_masks(stage2, no_lesion, 0.5)[0]
    out["stage 1 >= 0.5"] = threshold_masks(stage1, no_lesion, 0.5)[0]
    return out


def mean_csa_difference(manual: np.ndarray, mask: np.ndarray, affine: np.ndarray, centerline) -> float:
    """Mean CSA of ``mask`` over that of ``manual`` minus 1 (%), on the slices both cover."""
    ref = {r.slice_index: r.csa_mm2 for r in cord_csa(manual, affine, centerline)}
    got = {r.slice_index: r.csa_mm2 for r in cord_csa(mask, affine, centerline)}
    common = sorted(set(ref) & set(got))
    if not common:
        return float("nan")
    return 100 * (np.mean([got[k] for k in common]) / np.mean([ref[k] for k in common]) - 1)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("bench_dirs", type=Path, nargs="+")
    p.add_argument("--dataset", default="real")
    p.add_argument("--thresholds", type=float, nargs="+", default=[0.5, 0.4, 0.3])
    args = p.parse_args(argv)
    scores: dict[str, dict[str, list[float]]] = {}
    seen: set[str] = set()
    for bench in args.bench_dirs:
        bids = bench / "data" / args.dataset
        for manual_path in sorted(bids.glob("derivatives/labels/sub-*/**/anat/*_seg-manual.nii.gz")):
            stem = manual_path.name.replace("_seg-manual.nii.gz", "")
            rel = manual_path.parent.relative_to(bids / "derivatives" / "labels")
            image_path = bids / rel / f"{stem}.nii.gz"
            probs = stage_probabilities(bench, image_path)
            if probs is None or stem in seen:
                continue
            seen.add(stem)
            affine = nib.load(str(image_path)).affine
            manual = np.asarray(nib.load(str(manual_path)).dataobj) > 0
            try:
                centerline = extract_centerline(manual.astype(np.float32), affine)
            except CenterlineError:
                continue
            cells = []
            for name, mask in rules(*probs, args.thresholds).items():
                d, c = dice(mask, manual), mean_csa_difference(manual, mask, affine, centerline)
                scores.setdefault(name, {"dice": [], "csa": []})
                scores[name]["dice"].append(d)
                scores[name]["csa"].append(c)
                cells.append(f"{d:.3f} / {c:+.1f} %")
            if len(scores) and len(cells) == len(scores):
                if len(seen) == 1:
                    print("| image | " + " | ".join(f"{n}: Dice / CSA" for n in scores) + " |")
                    print("|---" * (len(scores) + 1) + "|")
                print(f"| {stem} | " + " | ".join(cells) + " |")
    print("\n| rule | images | cord Dice mean | min | CSA mean abs difference | mean signed |")
    print("|---|---|---|---|---|---|")
    for name, s in scores.items():
        d, c = np.array(s["dice"]), np.array(s["csa"])
        print(f"| {name} | {len(d)} | {d.mean():.3f} | {d.min():.3f} | {np.nanmean(np.abs(c)):.1f} % | "
              f"{np.nanmean(c):+.1f} % |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
