#!/usr/bin/env python
"""Vertebral levels and cord CSA: accuracy on phantoms and on the real images of ../shared/data.

Usage:
  python benchmarks/morphometry.py WORK_DIR [--stage1 MODEL] [--stage2 MODEL] [--stage1-folds DIR]
      [--stage2-folds DIR] [--allow-seen] [--phantoms 8] [--nprocs 2] [--skip-app]

Printed:
  1. Phantoms (exact truth), with vertebrae drawn after real anatomy (``--realistic-spine``) and with the
     default blocks: CSA of the true cord mask on the acquisition grid against the drawn ellipse
     (pi * r_lr * r_ap); discs found by the template against the drawn discs (correctly numbered
     images, position error); level agreement per cord voxel given the drawn discs.
  2. Real landmarks: C2 and T2 of the four 3D T2w scans of sct-t2w-bids (never used to build the
     template) against the levels given from the manual cord mask and from the app's own cord mask,
     and the landmark's distance along the cord from the middle of the level found.
  3. Real CSA: the app's cord mask against the manual one, per image (slices both cover) and per level
     (the manual mask's levels), on every labelled real image; C2-C3 CSA against the published
     healthy range. The app runs with models that did not train on each collection when fold models
     are given (--stage1-folds, as benchmarks/real_anatomy.py); otherwise collections a model saw are
     left out unless --allow-seen (rows marked 'seen by' the stage that saw them: the cord mask averages
     both stages' cord probabilities, so a stage 2 that saw an image biases its CSA as well).
Everything is saved as WORK_DIR/morphometry.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from real_anatomy import (SHARED, app_model_options, build_real_dataset, collection_status,  # noqa: E402
                          fallback_for, is_measured, models_for, run_app)

from bids_sclesion.config import DEFAULT_STAGE1  # noqa: E402
from bids_sclesion.core.centerline import CenterlineError, extract_centerline  # noqa: E402
from bids_sclesion.core.morphometry import cord_csa, level_name  # noqa: E402
from bids_sclesion.core.vertebrae import (Disc, NoDiscFound, discs_from_labels, find_discs,  # noqa: E402
                                          level_map, segment_lengths)
from bids_sclesion.phantoms import random_acquisition, random_anatomy, render_image  # noqa: E402
from bids_sclesion.phantoms.spine import REALISTIC_SPINE_STREAM, random_real_spine  # noqa: E402

#: Healthy adult C2-C3 CSA reported in the literature (mm2; e.g. Kato 2012, Papinutto 2015, Cohen-Adad 2021).
HEALTHY_C2C3 = (65.0, 85.0)
PHANTOM_CONTRASTS = ("T2w", "STIR", "PSIR", "T1w")


def phantom_part(n_seeds: int, spine: str = "real") -> dict:
    """``spine``: "real" draws the vertebrae after real anatomy (:mod:`bids_sclesion.phantoms.spine`),
    "blocks" as the default phantoms do."""
    csa_errors, disc_errors, agreement = [], [], []
    outcomes = {"numbered correctly": 0, "numbered wrongly": 0, "no level (n/a)": 0}
    for seed in range(n_seeds):
        for contrast in PHANTOM_CONTRASTS:
            rng = np.random.default_rng(1000 + seed)
            anatomy = random_anatomy(rng, fov_top=110.0)
            if spine == "real":
                anatomy.spine = random_real_spine(np.random.default_rng([1000 + seed, REALISTIC_SPINE_STREAM]),
                                                  len(anatomy.disc_z))
            acq = random_acquisition(rng, contrast, anatomy, 110.0)
            image, cord_img, _ = render_image(rng, anatomy, acq)[:3]
            cord = np.asarray(cord_img.dataobj) > 0
            affine = image.affine
            centerline = extract_centerline(cord.astype(np.float32), affine)
            # CSA against the drawn ellipse, away from the mask's ends
            rows = cord_csa(cord, affine, centerline)[5:-5]
            z = np.array([r.centroid_z_mm for r in rows]) - acq.shift[2]
            rx, ry = anatomy.cord_radii(z)
            below = z < anatomy.foramen_z - 10  # the medulla widens above
            truth = np.pi * rx * ry
            csa_errors.extend(((np.array([r.csa_mm2 for r in rows]) - truth) / truth)[below].tolist())
            # levels given the drawn discs
            exact = []
            for k, dz in enumerate(anatomy.disc_z):
                if centerline.points[0, 2] <= dz + acq.shift[2] <= centerline.points[-1, 2]:
                    j = int(np.argmin(np.abs(centerline.points[:, 2] - dz - acq.shift[2])))
                    exact.append(Disc(k + 3, j * centerline.step_mm, tuple(centerline.points[j])))
            if len(exact) >= 2:
                levels = level_map(cord, affine, centerline, exact)
                vz = (np.argwhere(cord) @ affine[:3, :3].T + affine[:3, 3])[:, 2] - acq.shift[2]
                disc_z = np.asarray(anatomy.disc_z)
                inside = (vz < disc_z[0]) & (vz > min(d.point_mm[2] for d in exact) - acq.shift[2])
                want = 2 + np.sum(disc_z[None, :] > vz[:, None], axis=1)
                agreement.append(float(np.mean(levels[cord][inside] == want[inside])))
            # discs found by the template
            try:
                match = find_discs(np.asarray(image.dataobj, np.float32), affine, centerline)
            except NoDiscFound:
                outcomes["no level (n/a)"] += 1
                continue
            errors = [d.point_mm[2] - acq.shift[2] - anatomy.disc_z[d.label - 3] for d in match.discs
                      if 3 <= d.label < 3 + len(anatomy.disc_z)]
            good = bool(errors) and np.median(np.abs(errors)) < 7.0
            outcomes["numbered correctly" if good else "numbered wrongly"] += 1
            if good:
                disc_errors.extend(np.abs(errors).tolist())
    csa = np.array(csa_errors)
    return {"spine": spine, "images": n_seeds * len(PHANTOM_CONTRASTS),
            "csa_error_mean_percent": round(100 * float(csa.mean()), 2),
            "csa_abs_error_median_percent": round(100 * float(np.median(np.abs(csa))), 2),
            "level_agreement_given_discs_min": round(min(agreement), 4) if agreement else None,
            "level_agreement_given_discs_mean": round(float(np.mean(agreement)), 4) if agreement else None,
            "template_outcomes": outcomes,
            "disc_error_median_mm_when_correct": round(float(np.median(disc_errors)), 2) if disc_errors else None,
            "disc_error_p90_mm_when_correct": round(float(np.percentile(disc_errors, 90)), 2) if disc_errors else None}


def _landmark_levels(image: nib.Nifti1Image, cord: np.ndarray, landmarks: np.ndarray) -> dict:
    centerline = extract_centerline(cord.astype(np.float32), image.affine)
    try:
        match = find_discs(np.asarray(image.dataobj, np.float32), image.affine, centerline)
    except NoDiscFound as exc:
        return {"levels": "n/a", "why": str(exc)}
    levels = level_map(cord, image.affine, centerline, match.discs, segment_lengths(match))
    out = {"correlation": match.correlation, "scale": match.scale}
    disc_at = {d.label: d.position_mm for d in match.discs}
    for value in (2, 9):
        point = np.argwhere(landmarks == value)[0]
        # Position error: the landmark (on the vertebral body, as SCT's body labels) against the middle of
        # the level found, between disc n (above vertebra n) and disc n + 1, along the centreline.
        if value in disc_at and value + 1 in disc_at:
            landmark = discs_from_labels((landmarks == value).astype(np.uint8), image.affine, centerline)[0]
            middle = (disc_at[value] + disc_at[value + 1]) / 2
            out[f"{level_name(value)} error mm"] = round(middle - landmark.position_mm, 1)
        found = int(levels[tuple(point)]) if all(0 <= p < n for p, n in zip(point, levels.shape)) else 0
        if found == 0:  # the landmark outside the app's mask: the level of the nearest cord voxel
            cord_idx = np.argwhere(levels > 0)
            if len(cord_idx):
                found = int(levels[tuple(cord_idx[np.argmin(np.linalg.norm(cord_idx - point, axis=1))])])
        out[level_name(value)] = level_name(found) if found else "n/a"
    return out


def real_landmarks(shared: Path, app_out: Path | None) -> list[dict]:
    rows = []
    root = shared / "sct-t2w-bids"
    for path in sorted(root.glob("derivatives/labels/*/anat/*_label-vertebral_points.nii.gz")):
        sub = path.name.split("_")[0]
        image = nib.load(str(root / sub / "anat" / f"{sub}_T2w.nii.gz"))
        landmarks = np.asarray(nib.load(str(path)).dataobj)
        manual = np.asarray(nib.load(str(path).replace("label-vertebral_points", "seg-manual")).dataobj) > 0
        row = {"image": f"{sub}_T2w", "manual cord": _landmark_levels(image, manual, landmarks)}
        app_mask = app_out / sub / "anat" / f"{sub}_space-orig_label-SC_desc-T2w_mask.nii.gz" if app_out else None
        if app_mask and app_mask.exists():
            row["app cord"] = _landmark_levels(image, np.asarray(nib.load(str(app_mask)).dataobj) > 0, landmarks)
        rows.append(row)
    return rows


def real_csa(real: Path, app_out: Path, status: dict[str, str]) -> list[dict]:
    rows = []
    for mask in sorted(real.glob("derivatives/labels/sub-*/anat/*_seg-manual.nii.gz")):
        stem = mask.name.replace("_seg-manual.nii.gz", "")
        sub, suffix = stem.split("_")[0], stem.rsplit("_", 1)[1]
        app_mask = app_out / sub / "anat" / (stem.rsplit("_", 1)[0] + f"_space-orig_label-SC_desc-{suffix}_mask.nii.gz")
        if not app_mask.exists():
            continue
        image = nib.load(str(real / sub / "anat" / f"{stem}.nii.gz"))
        manual = np.asarray(nib.load(str(mask)).dataobj) > 0
        app = np.asarray(nib.load(str(app_mask)).dataobj) > 0
        try:
            centerline = extract_centerline(manual.astype(np.float32), image.affine)
        except CenterlineError:
            continue
        levels = None
        try:
            match = find_discs(np.asarray(image.dataobj, np.float32), image.affine, centerline)
            levels = level_map(manual | app, image.affine, centerline, match.discs, segment_lengths(match))
        except NoDiscFound:
            pass
        # Both masks measured with the manual mask's centreline, so only the masks differ.
        ref = {r.slice_index: r for r in cord_csa(manual, image.affine, centerline, levels)}
        got = {r.slice_index: r for r in cord_csa(app, image.affine, centerline, levels)}
        common = sorted(set(ref) & set(got))
        if not common:
            continue
        a = np.array([ref[k].csa_mm2 for k in common])
        b = np.array([got[k].csa_mm2 for k in common])
        row = {"image": stem, "status": status.get(sub, "?"), "slices": len(common),
               "manual_mean_mm2": round(float(a.mean()), 1), "app_mean_mm2": round(float(b.mean()), 1),
               "difference_percent": round(100 * float(b.mean() / a.mean() - 1), 1), "per_level": {}}
        for name in sorted({ref[k].vertebral_level for k in common} - {"n/a"}):
            sel = [k for k in common if ref[k].vertebral_level == name]
            ra = np.mean([ref[k].csa_mm2 for k in sel])
            rb = np.mean([got[k].csa_mm2 for k in sel])
            row["per_level"][name] = {"manual": round(float(ra), 1), "app": round(float(rb), 1),
                                      "difference_percent": round(100 * float(rb / ra - 1), 1)}
        c2c3 = [ref[k].csa_mm2 for k in common if ref[k].vertebral_level in ("C2", "C3")]
        row["manual_c2c3_mm2"] = round(float(np.mean(c2c3)), 1) if c2c3 else "n/a"
        rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work_dir", type=Path)
    p.add_argument("--stage1", default=DEFAULT_STAGE1)
    p.add_argument("--stage2", default="stage2")
    p.add_argument("--stage1-folds", type=Path, default=None)
    p.add_argument("--stage2-folds", type=Path, default=None)
    p.add_argument("--stage1-fallback", default=None, help="as in real_anatomy.py")
    p.add_argument("--fallback-folds", type=Path, default=None, help="as --stage1-folds, for the stage-1 fallback")
    p.add_argument("--allow-seen", action="store_true")
    p.add_argument("--phantoms", type=int, default=8, help="phantom subjects (each in %d contrasts)"
                   % len(PHANTOM_CONTRASTS))
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--shared", type=Path, default=SHARED)
    p.add_argument("--skip-app", action="store_true", help="reuse WORK_DIR/app (outputs of an earlier run)")
    args = p.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)
    started = time.time()
    result: dict = {"phantoms": phantom_part(args.phantoms, "real"),
                    "phantoms_default_spine": phantom_part(args.phantoms, "blocks")}
    for name, part in (("vertebrae drawn after real anatomy", "phantoms"),
                       ("default vertebrae (identical blocks)", "phantoms_default_spine")):
        print(f"== Phantoms (exact truth), {name}")
        for key, value in result[part].items():
            print(f"  {key}: {value}")
    if not args.shared.is_dir():
        print(f"{args.shared}: no real data; real parts skipped")
        return 0
    real = args.work_dir / "data" / "real"
    sources = build_real_dataset(real, args.shared)
    app_out = args.work_dir / "app"
    status: dict[str, str] = {}
    collections: dict[str, list[str]] = {}
    for subject, collection in sources.items():
        collections.setdefault(collection, []).append(subject)
    for collection, subjects in sorted(collections.items()):
        stage1, stage2, missing = models_for(collection, args)
        state = collection_status(subjects, stage1, stage2, missing, args.allow_seen,
                                  fallback=fallback_for(collection, args))
        labelled = [s for s in subjects if (real / "derivatives" / "labels" / s).is_dir()]
        status.update({s: state for s in subjects})
        if is_measured(state) and labelled and not args.skip_app:
            run_app(real, app_out, args.work_dir / "work", labelled, stage1, stage2, args.nprocs,
                    app_model_options(collection, args))
    print("\n== Real landmarks (sct-t2w-bids: C2 and T2 vertebral bodies)")
    landmarks = real_landmarks(args.shared, app_out if app_out.is_dir() else None)
    for row in landmarks:
        print(f"  {row['image']}: " + "; ".join(f"{k}: {v}" for k, v in row.items() if k != "image"))
    result["landmarks"] = landmarks
    print("\n== Real CSA: app cord mask against the manual mask (same centreline, same levels)")
    csa_rows = real_csa(real, app_out, status)
    print(f"  {'image':34s} {'models':24s} {'slices':>6s} {'manual':>7s} {'app':>7s} {'diff %':>7s}  C2-C3 manual")
    for row in csa_rows:
        print(f"  {row['image']:34s} {row['status'][:24]:24s} {row['slices']:6d} {row['manual_mean_mm2']:7.1f} "
              f"{row['app_mean_mm2']:7.1f} {row['difference_percent']:7.1f}  {row['manual_c2c3_mm2']}")
        for name, level in row["per_level"].items():
            print(f"      {name:4s} manual {level['manual']:6.1f}  app {level['app']:6.1f}  "
                  f"{level['difference_percent']:+6.1f} %")
    if csa_rows:
        diffs = [abs(r["difference_percent"]) for r in csa_rows]
        per_level = [abs(v["difference_percent"]) for r in csa_rows for v in r["per_level"].values()]
        print(f"  mean |difference|: {np.mean(diffs):.1f} % per image"
              + (f", {np.mean(per_level):.1f} % per level ({len(per_level)} levels)" if per_level else "")
              + " (target: within 5 % on average)")
        c2c3 = [r["manual_c2c3_mm2"] for r in csa_rows if r["manual_c2c3_mm2"] != "n/a"]
        if c2c3:
            print(f"  C2-C3 CSA of the manual masks: {', '.join(f'{v:.1f}' for v in c2c3)} mm2 (published healthy "
                  f"adults: about {HEALTHY_C2C3[0]:.0f}-{HEALTHY_C2C3[1]:.0f})")
    result["real_csa"] = csa_rows
    result["minutes"] = round((time.time() - started) / 60, 1)
    (args.work_dir / "morphometry.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"\n{result['minutes']} min; saved {args.work_dir / 'morphometry.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
