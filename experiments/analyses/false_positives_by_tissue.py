#!/usr/bin/env python
"""Where do false-positive lesion voxels fall? Share inside a labelled tissue (e.g. grey matter).

Usage:
  python experiments/analyses/false_positives_by_tissue.py OUT_DIR LESION_LABELS TISSUE_LABELS
      [--tissue-label gmseg-manual] [--cord-label seg-manual] [--lesion-label lesion-manual]

OUT_DIR is the app's output folder; LESION_LABELS holds the true lesions
(``<stem>_<lesion-label>.nii.gz``, as for bids_sclesion-eval); TISSUE_LABELS
holds the tissue masks and the manual cord (``<stem>_<tissue-label>.nii.gz``,
``<stem>_<cord-label>.nii.gz``) at the same relative places, e.g. the
gm-challenge collection's derivatives/labels, or phantoms made with
``bids_sclesion-synth --grey-matter``. For every image with all three labels
it prints the false-positive volume, the share of it inside the tissue and
the tissue's share of the cord, then the same summed per contrast: a share of
false positives well above the tissue's share of the cord means the model
mistakes that tissue for lesion.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.core.image import voxel_volume
from bids_sclesion.derivatives import source_of_lesion_table


def _mask(path: Path) -> np.ndarray:
    return np.asarray(nib.load(str(path)).dataobj) > 0.5


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir", type=Path)
    p.add_argument("lesion_labels", type=Path)
    p.add_argument("tissue_labels", type=Path)
    p.add_argument("--tissue-label", default="gmseg-manual")
    p.add_argument("--cord-label", default="seg-manual")
    p.add_argument("--lesion-label", default="lesion-manual")
    args = p.parse_args()
    print("| image | false-positive mm3 | share in tissue | tissue share of cord |")
    print("|---|---|---|---|")
    # Per image suffix: false-positive mm3, of which in the tissue, cord voxels, of which tissue.
    totals: dict[str, np.ndarray] = {}
    for table in sorted(args.out_dir.glob("sub-*/**/anat/*_lesions.tsv")):
        name = source_of_lesion_table(table, args.out_dir)
        rel = Path(name.relpath)
        stem = rel.name.split(".")[0]
        paths = {"lesion": args.lesion_labels / rel.parent / f"{stem}_{args.lesion_label}.nii.gz",
                 "tissue": args.tissue_labels / rel.parent / f"{stem}_{args.tissue_label}.nii.gz",
                 "cord": args.tissue_labels / rel.parent / f"{stem}_{args.cord_label}.nii.gz"}
        if not all(path.exists() for path in paths.values()):
            continue
        pred_img = nib.load(str(name.outputs(args.out_dir)["lesion_mask"]))
        pred = np.asarray(pred_img.dataobj) > 0
        truth, tissue, cord = (_mask(paths[k]) for k in ("lesion", "tissue", "cord"))
        if not pred.shape == truth.shape == tissue.shape == cord.shape:
            raise SystemExit(f"{rel}: prediction and labels differ in shape")
        false_pos = pred & ~truth
        voxel_mm3 = voxel_volume(pred_img.affine)
        share = (false_pos & tissue).sum() / max(int(false_pos.sum()), 1)
        print(f"| {rel.name} | {false_pos.sum() * voxel_mm3:.0f} | {share:.2f} | "
              f"{(tissue & cord).sum() / max(int(cord.sum()), 1):.2f} |")
        totals.setdefault(name.suffix, np.zeros(4))
        totals[name.suffix] += [false_pos.sum() * voxel_mm3, (false_pos & tissue).sum() * voxel_mm3,
                                cord.sum(), (tissue & cord).sum()]
    if not totals:
        raise SystemExit("no image has a prediction, a lesion label and a tissue label")
    print("\n| contrast | false-positive mm3 | share in tissue | tissue share of cord |\n|---|---|---|---|")
    for suffix, (fp_mm3, fp_tissue_mm3, cord_vox, tissue_vox) in sorted(totals.items()):
        print(f"| {suffix} | {fp_mm3:.0f} | {fp_tissue_mm3 / max(fp_mm3, 1e-9):.2f} | {tissue_vox / max(cord_vox, 1):.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
