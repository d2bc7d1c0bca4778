#!/usr/bin/env python
"""Insert synthetic lesions into the real cords gathered by make_real_cord_dataset.py.

Usage: python scripts/make_real_lesion_dataset.py REAL_DIR OUT_DIR [--seed S] [--lesions MIN MAX]

Every real image with a cord mask (the ``template`` subject excepted) is
written to OUT_DIR with 1-4 lesions inside its manual cord mask (drawn as
``bids_sclesion.phantoms.insert`` says: column, size, shape, intensity against the
local white matter; the scanner's texture kept), plus ``*_seg-manual`` (the manual cord,
lesions included) and ``*_lesion-manual`` in derivatives/labels.
participants.tsv is copied, so each image can be scored with the
cross-validation fold that did not train on its collection.
"""
from __future__ import annotations

import argparse
import csv
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.core.image import voxel_volume
from bids_sclesion.training import find_training_cases
from bids_sclesion.phantoms.insert import LESION_CONTRAST, insert_lesions
from bids_sclesion.utils.io import write_nifti


def build(real_dir: Path, out_dir: Path, seed: int = 11, lesions: tuple[int, int] = (1, 4)) -> list[tuple[str, int, float]]:
    """Write the dataset; returns (image name, lesions, lesion volume mm3) per image.

    Image ``i`` of the sorted labelled images draws from ``rng([seed, i])``: the
    same seed gives the same lesions in the same real cords.
    """
    from scipy import ndimage

    sources = {}
    with open(real_dir / "participants.tsv") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            sources[row["participant_id"]] = row["source"]
    cases = find_training_cases(real_dir, tuple(LESION_CONTRAST), require_lesion=False,
                                grey_matter_label="gmseg-manual")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(real_dir / "participants.tsv", out_dir / "participants.tsv")
    (out_dir / "dataset_description.json").write_text(
        '{"Name": "real spinal cords with synthetic lesions", "BIDSVersion": "1.9.0", "DatasetType": "raw"}\n')
    made = []
    for i, case in enumerate(cases):
        if sources.get(case.subject) == "template":
            continue
        rng = np.random.default_rng([seed, i])
        img = nib.load(str(case.image_path))
        cord_img = nib.load(str(case.cord_path))
        cord = np.asarray(cord_img.dataobj) > 0.5
        n = int(rng.integers(lesions[0], lesions[1] + 1))
        # The manual grey matter, where there is one, is kept out of the white matter a lesion's intensity is
        # set against.
        grey_matter = np.asarray(nib.load(str(case.grey_matter_path)).dataobj) > 0.5 if case.grey_matter_path else None
        data, lesion_mask = insert_lesions(np.asarray(img.dataobj, np.float32), img.affine, cord, case.suffix, rng, n,
                                           grey_matter=grey_matter)
        rel = case.image_path.parent.relative_to(real_dir)
        stem = case.image_path.name.split(".")[0]
        out_img = nib.Nifti1Image(data, img.affine, img.header)
        out_img.set_data_dtype(np.float32)
        write_nifti(out_img, out_dir / rel / f"{stem}.nii.gz")
        labels = out_dir / "derivatives" / "labels" / rel
        for name, mask in (("seg-manual", cord | lesion_mask), ("lesion-manual", lesion_mask)):
            write_nifti(nib.Nifti1Image(mask.astype(np.uint8), img.affine), labels / f"{stem}_{name}.nii.gz")
        made.append((case.image_path.name, int(ndimage.label(lesion_mask)[1]), float(lesion_mask.sum() * voxel_volume(img.affine))))
    return made


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("real_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--lesions", type=int, nargs=2, default=(1, 4), metavar=("MIN", "MAX"))
    args = p.parse_args()
    print("| image | lesions | lesion volume (mm3) |")
    print("|---|---|---|")
    for name, n_found, volume in build(args.real_dir, args.out_dir, args.seed, tuple(args.lesions)):
        print(f"| {name} | {n_found} | {volume:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
