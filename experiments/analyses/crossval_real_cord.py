#!/usr/bin/env python
"""Stage-1 cord model on real anatomy, measured by leave-one-collection-out
cross-validation, then (optionally) trained on everything.

Usage:
  python experiments/analyses/crossval_real_cord.py REAL_DIR PHANTOM_DIR OUT_DIR [--iterations N] [--final]
      [--spacing MM]

REAL_DIR is made by ``scripts/make_real_cord_dataset.py`` (its participants.tsv
names the collection of each subject); PHANTOM_DIR is a phantom training set
from ``bids_sclesion-synth``. For each collection (except ``template``) a
model is fine-tuned from the bundled ``default`` model on the phantoms and on
the real images of the *other* collections, then scored on the held-out
collection's images. Fold models already in OUT_DIR are reused (the script
can be resumed). ``--final`` also trains on every real image (the model to
ship; its real-image accuracy is the cross-validated one printed here). ``--spacing`` sets the
model's isotropic voxel size (default 1 mm, the bundled stage 1's): a coarser grid is a cheaper
network pass (2 mm: about an eighth of the voxels).
"""
from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.model.metadata import read_metadata, write_metadata
from bids_sclesion.core.image import load_image, resample_to_grid, to_canonical, voxel_volume
from bids_sclesion.core.lesions import threshold_masks
from bids_sclesion.core.metrics import dice
from bids_sclesion.core.preprocess import bias_correct_image
from bids_sclesion.evaluate import dice_in_labelled_slices
from bids_sclesion.model.inference import TTA_FLIPS
from bids_sclesion.model.io import load_model
from bids_sclesion.model.segment import segment_image
from bids_sclesion.training import TrainingConfig, find_training_cases, train

SUFFIXES = ("T2w", "T1w", "PSIR", "STIR", "T2starw", "MTS")
# Averaging flips along each axis at inference (TTA_FLIPS): +0.02-0.12 cord Dice on the
# held-out gm-challenge images for 4x the (1 s) inference time.


def stage1_cord_dice(model, image_path: Path, manual_path: Path, device: str = "cpu") -> tuple[float, float, float, float]:
    """Cord Dice of a whole-image model on one image, as the app computes it:
    canonical grid, N4, model grid, back to the image grid, threshold 0.5.

    Returns (Dice, Dice in the labelled slices, manual volume mm3, predicted volume mm3).
    """
    img = load_image(image_path)
    canonical = bias_correct_image(to_canonical(img))
    cord_prob, _ = segment_image(canonical, model, device)
    native = resample_to_grid(cord_prob, canonical.affine, img.shape[:3], img.affine, order=1)
    cord, _ = threshold_masks(native, np.zeros_like(native))
    ref = nib.load(str(manual_path))
    truth = np.asarray(ref.dataobj) > 0.5
    vox = voxel_volume(img.affine)
    return (dice(cord, truth), dice_in_labelled_slices(cord, truth, img.affine), float(truth.sum() * vox),
            float(cord.sum() * vox))


def config(args, exclude: tuple[str, ...]) -> TrainingConfig:
    return TrainingConfig(
        suffixes=SUFFIXES, iterations=args.iterations, batch_size=2, learning_rate=args.learning_rate,
        val_fraction=0.0, val_every=max(1, args.iterations // 4), augmentation=args.augmentation, require_lesion=False,
        exclude_subjects=exclude, init_from=args.init_from, seed=args.seed, threads=args.nthreads,
        tta_flip_axes=TTA_FLIPS, spacing_mm=(args.spacing,) * 3,
    )


def ensure_flips(model_dir: Path) -> None:
    """Models trained before test-time flips were recorded get them (inference setting only)."""
    meta = read_metadata(model_dir)
    if meta["inference"].get("flip_axes") != [list(a) for a in TTA_FLIPS]:
        meta["inference"]["flip_axes"] = [list(a) for a in TTA_FLIPS]
        write_metadata(meta, model_dir)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("real_dir", type=Path)
    p.add_argument("phantom_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--iterations", type=int, default=1500)
    p.add_argument("--learning-rate", type=float, default=1e-3)
    p.add_argument("--init-from", default="default")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nthreads", type=int, default=2)
    p.add_argument("--cache", type=Path, default=None, help="preprocessing cache (default OUT_DIR/cache)")
    p.add_argument("--folds", nargs="+", default=None, help="collections to hold out (default: all)")
    p.add_argument("--final", action="store_true", help="also train on every real image")
    p.add_argument("--spacing", type=float, default=1.0, help="isotropic voxel size of the model (mm)")
    p.add_argument("--augmentation", default="domain", help="training augmentation profile (default domain)")
    args = p.parse_args()
    cache = args.cache or args.out_dir / "cache"

    sources = {}
    with open(args.real_dir / "participants.tsv") as fh:
        for row in csv.DictReader(fh, delimiter="\t"):
            sources[row["participant_id"]] = row["source"]
    folds = args.folds or sorted({s for s in sources.values() if s != "template"})
    cases = find_training_cases(args.real_dir, SUFFIXES, require_lesion=False)
    rows = []
    for fold in folds:
        held = tuple(sorted(s for s, src in sources.items() if src == fold))
        model_dir = args.out_dir / f"fold-{fold}"
        t0 = time.time()
        if not (model_dir / "model.safetensors").exists():
            train([args.phantom_dir, args.real_dir], model_dir, config(args, held), cache_dir=cache)
        minutes = (time.time() - t0) / 60
        ensure_flips(model_dir)
        model = load_model(str(model_dir), "cpu")
        for case in cases:
            if case.subject not in held:
                continue
            t1 = time.time()
            d, d_lab, v_true, v_pred = stage1_cord_dice(model, case.image_path, case.cord_path)
            rows.append((fold, case.image_path.name, d, d_lab, v_true, v_pred, time.time() - t1))
        print(f"fold {fold}: held out {', '.join(held)}; training {minutes:.1f} min", flush=True)
    if args.final:
        model_dir = args.out_dir / "final"
        if not (model_dir / "model.safetensors").exists():
            train([args.phantom_dir, args.real_dir], model_dir, config(args, ()), cache_dir=cache)
        ensure_flips(model_dir)
    print("| held-out collection | image | cord Dice | Dice in labelled slices | manual (mm3) | predicted (mm3) "
          "| seconds |")
    print("|---|---|---|---|---|---|---|")
    for fold, name, d, d_lab, vt, vp, sec in rows:
        print(f"| {fold} | {name} | {d:.3f} | {d_lab:.3f} | {vt:.0f} | {vp:.0f} | {sec:.1f} |")
    if rows:
        import numpy as np

        for col, label in ((2, "cord Dice"), (3, "Dice in labelled slices")):
            ds = [r[col] for r in rows]
            print(f"{label}: mean {np.mean(ds):.3f}, min {np.min(ds):.3f}, images >= 0.85: "
                  f"{sum(d >= 0.85 for d in ds)}/{len(ds)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
