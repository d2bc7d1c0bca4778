#!/usr/bin/env python
"""How the lesions inserted into real cords look: measured placement, size, shape and contrast, and a figure.

Usage: python experiments/analyses/lesion_realism.py REAL_DIR OUT_PNG [--draws 12] [--seed 0]

REAL_DIR is a BIDS folder of real images with manual cord masks (``*_seg-manual``) and, where there is one,
a manual grey matter mask (``*_gmseg-manual``) in derivatives/labels: ``benchmarks/real_anatomy.py`` makes
one at WORK/data/real. Each labelled image receives 3 lesions ``--draws`` times (``insert_lesions``, as
``scripts/make_real_lesion_dataset.py`` does). Measured on the result, per lesion: the column it lies in,
whether it reaches the cord's surface, its length along the cord, the share of the cord's cross-section it
covers at its widest, and its contrast: the median of the lesion in the new image against the median of the
white matter around it in the original (the cord outside the lesion and outside the grey matter mask),
minus one. Prints a table per contrast; the figure shows one lesion per contrast (axial and along the cord)
and the measured contrasts beside the range the rules draw from.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from bids_sclesion.core.centerline import extract_centerline  # noqa: E402
from bids_sclesion.training import find_training_cases  # noqa: E402
from bids_sclesion.phantoms.insert import LESION_CONTRAST, LesionGeometry, insert_lesions  # noqa: E402


def measure_lesion(lesion: np.ndarray, cord: np.ndarray, before: np.ndarray, after: np.ndarray,
                   grey_matter: np.ndarray, affine: np.ndarray, tangent: np.ndarray) -> dict:
    """Placement, size and contrast of one inserted lesion, measured on the images and masks."""
    around = ndimage.binary_dilation(lesion, iterations=6) & cord & ~ndimage.binary_dilation(lesion, iterations=1)
    white_matter = float(np.median(before[around & ~grey_matter])) if (around & ~grey_matter).sum() >= 5 else np.nan
    world = np.argwhere(lesion) @ affine[:3, :3].T + affine[:3, 3]
    along = world @ tangent
    voxel_along = float(np.abs(affine[:3, :3].T @ tangent).max())  # one voxel's reach along the cord
    # Widest section: lesion voxels against cord voxels within one voxel along the cord of the lesion's centre.
    cord_world = np.argwhere(cord) @ affine[:3, :3].T + affine[:3, 3]
    centre = float(np.median(along))
    share = (np.abs(along - centre) <= voxel_along / 2 + 0.5).sum() / max(
        int((np.abs(cord_world @ tangent - centre) <= voxel_along / 2 + 0.5).sum()), 1)
    return {"contrast": float(np.median(after[lesion])) / white_matter - 1.0,
            "surface": bool((ndimage.binary_dilation(lesion) & ~cord).any()),
            "length_mm": float(along.max() - along.min() + voxel_along),
            "share": float(share)}


def collect(real_dir: Path, draws: int, seed: int) -> tuple[list[dict], dict, dict]:
    """Measured lesions (one dict each), the drawn geometries per contrast, and one example image per contrast."""
    cases = find_training_cases(real_dir, tuple(LESION_CONTRAST), require_lesion=False,
                                grey_matter_label="gmseg-manual")
    rows, geometries, examples = [], {}, {}
    for i, case in enumerate(cases):
        img = nib.load(str(case.image_path))
        before = np.asarray(img.dataobj, np.float32)
        cord = np.asarray(nib.load(str(case.cord_path)).dataobj) > 0.5
        gm = (np.asarray(nib.load(str(case.grey_matter_path)).dataobj) > 0.5 if case.grey_matter_path
              else np.zeros(cord.shape, bool))
        tangent = extract_centerline(cord.astype(np.float32), img.affine).tangents.mean(axis=0)
        tangent /= np.linalg.norm(tangent)
        for d in range(draws):
            drawn: list[LesionGeometry] = []
            after, lesions = insert_lesions(before, img.affine, cord, case.suffix, np.random.default_rng([seed, i, d]),
                                            3, grey_matter=gm if case.grey_matter_path else None, drawn=drawn)
            labels, n = ndimage.label(lesions)
            for k in range(1, n + 1):
                m = measure_lesion(labels == k, cord, before, after, gm, img.affine, tangent)
                rows.append({"image": case.image_path.name, "suffix": case.suffix, **m})
            geometries.setdefault(case.suffix, []).extend(drawn)
            if case.suffix not in examples and n:
                examples[case.suffix] = (case.image_path.name, img, before, after, lesions, cord)
        print(f"[realism] {case.image_path.name}: {draws} draws", flush=True)
    return rows, geometries, examples


def summary_table(rows: list[dict], geometries: dict) -> str:
    lines = ["| contrast | lesions | contrast vs local WM, median (IQR) | drawn range | lateral / dorsal / ventral "
             "| reaching the surface | wedges | length mm, median (range) | cross-section share, median (max) |",
             "|" + "---|" * 9]
    for suffix in sorted({r["suffix"] for r in rows}):
        sel = [r for r in rows if r["suffix"] == suffix]
        c = np.array([r["contrast"] for r in sel])
        length = np.array([r["length_mm"] for r in sel])
        share = np.array([r["share"] for r in sel])
        geoms = geometries.get(suffix, [])
        columns = " / ".join(f"{100 * np.mean([g.column == col for g in geoms]):.0f} %"
                             for col in ("lateral", "dorsal", "ventral"))
        lo, hi = LESION_CONTRAST[suffix]
        lines.append(f"| {suffix} | {len(sel)} | {np.nanmedian(c):+.2f} ({np.nanpercentile(c, 25):+.2f} to "
                     f"{np.nanpercentile(c, 75):+.2f}) | {lo:+.2f} to {hi:+.2f} | {columns} | "
                     f"{100 * np.mean([r['surface'] for r in sel]):.0f} % | "
                     f"{100 * np.mean([g.shape == 'wedge' for g in geoms]):.0f} % | {np.median(length):.1f} "
                     f"({length.min():.1f}-{length.max():.1f}) | {np.median(share):.2f} ({share.max():.2f}) |")
    return "\n".join(lines)


def figure(rows: list[dict], examples: dict, out_png: Path) -> None:
    suffixes = sorted(examples)
    fig, axes = plt.subplots(len(suffixes), 3, figsize=(11, 3.3 * len(suffixes)), squeeze=False)
    for row, suffix in zip(axes, suffixes):
        name, img, before, after, lesions, cord = examples[suffix]
        canonical = nib.as_closest_canonical(nib.Nifti1Image(after, img.affine))
        orient = nib.orientations.io_orientation(img.affine)
        data = canonical.get_fdata()
        les = nib.orientations.apply_orientation(lesions.astype(np.uint8), orient) > 0
        crd = nib.orientations.apply_orientation(cord.astype(np.uint8), orient) > 0
        zooms = canonical.header.get_zooms()
        labels, n = ndimage.label(les)
        largest = 1 + int(np.argmax(ndimage.sum(les, labels, range(1, n + 1))))
        ci = np.argwhere(labels == largest).mean(axis=0).round().astype(int)
        # 12 mm around the lesion across the cord, 40 mm along it.
        reach = np.ceil(np.array([12.0, 12.0, 40.0]) / np.array(zooms)).astype(int)
        lo, hi = np.maximum(ci - reach, 0), np.minimum(ci + reach + 1, crd.shape)
        ax = row[0]
        sl = np.s_[lo[0]:hi[0], lo[1]:hi[1], ci[2]]
        ax.imshow(data[sl].T, origin="lower", cmap="gray", aspect=zooms[1] / zooms[0])
        ax.contour(les[sl].T.astype(float), [0.5], colors="r", linewidths=0.8)
        ax.contour(crd[sl].T.astype(float), [0.5], colors="y", linewidths=0.5)
        ax.set_title(f"{name}\naxial (lesion red, cord yellow)", fontsize=8)
        ax = row[1]
        sl = np.s_[ci[0], lo[1]:hi[1], lo[2]:hi[2]]
        ax.imshow(data[sl].T, origin="lower", cmap="gray", aspect=zooms[2] / zooms[1])
        ax.contour(les[sl].T.astype(float), [0.5], colors="r", linewidths=0.8)
        ax.set_title("sagittal through the lesion", fontsize=8)
        for a in row[:2]:
            a.set_xticks([])
            a.set_yticks([])
        ax = row[2]
        values = [r["contrast"] for r in rows if r["suffix"] == suffix]
        ax.hist(values, bins=20, color="0.4")
        for edge in LESION_CONTRAST[suffix]:
            ax.axvline(edge, color="r", ls="--", lw=0.8)
        ax.set_title(f"{suffix}: measured lesion / local WM - 1\n(dashed: range the rules draw from)", fontsize=8)
        ax.set_xlabel("relative contrast", fontsize=8)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("real_dir", type=Path)
    p.add_argument("out_png", type=Path)
    p.add_argument("--draws", type=int, default=12)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rows, geometries, examples = collect(args.real_dir, args.draws, args.seed)
    if not rows:
        raise SystemExit(f"{args.real_dir}: no image with a cord mask (*_seg-manual) to insert lesions into")
    print(summary_table(rows, geometries))
    figure(rows, examples, args.out_png)
    print(f"figure: {args.out_png}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
