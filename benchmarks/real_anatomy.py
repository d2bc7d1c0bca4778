#!/usr/bin/env python
"""Real-anatomy benchmark: the app, run as users run it, on every real image of ../shared/data.

Usage:
  python benchmarks/real_anatomy.py WORK_DIR [--stage1 MODEL] [--stage2 MODEL]
      [--stage1-folds DIR] [--stage2-folds DIR] [--locator MODEL | --locator-folds DIR]
      [--name NAME] [--seed 11] [--nprocs 2]
      [--collections NAME ...] [--allow-seen] [--tta] [--precision auto|float32] [--stage1-flips unsure|all|none]

Two datasets are made in WORK_DIR/data from ../shared/data (links; nothing is copied into the
repository): ``real`` holds every real image of a clinical kind (manual cord and grey-matter masks
where they exist; the unlabelled images count as healthy cords), and ``real_lesions_seed<S>`` the
labelled ones with synthetic lesions inserted into their manual cord
(``scripts/make_real_lesion_dataset.py``). The participant level runs on both, collection by
collection, with models that did not train on that collection: ``--stage1-folds DIR`` /
``--stage2-folds DIR`` name a folder whose ``fold-<collection>`` model held that collection out (as
``experiments/analyses/crossval_real_cord.py`` writes them); otherwise ``--stage1`` / ``--stage2`` (default: the
bundled models); ``--locator`` / ``--locator-folds`` likewise give the app's ``--cord-locator``. Each model's ``model.json`` (and that of the model it was initialised from) says
which subjects it trained and validated on: a collection one of its models saw is not measured, and
the table says so, unless ``--allow-seen`` (its rows are then marked ``seen by`` the stage that saw them).

Printed per image and per contrast: real cord Dice; false lesions on the healthy cords (count,
volume, share inside the manual grey matter, largest part of one false lesion inside it); Dice and
lesion-wise F1 of the inserted lesions; then the targets. Everything is also saved as
WORK_DIR/runs/NAME/summary.json. One work directory per dataset (WORK_DIR/work) serves every model set: a
run with another stage 2 recomputes stage 2 and what follows it only.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from make_real_cord_dataset import CASES  # noqa: E402
from make_real_lesion_dataset import build as build_lesion_dataset  # noqa: E402

from bids_sclesion.model.metadata import METADATA, read_metadata  # noqa: E402
from bids_sclesion.cli.run import main as app  # noqa: E402
from bids_sclesion.config import DEFAULT_STAGE1, DEFAULT_STAGE1_FALLBACK, PRECISIONS, STAGE1_FLIPS  # noqa: E402
from bids_sclesion.core.image import voxel_volume  # noqa: E402
from bids_sclesion.derivatives import source_of_lesion_table  # noqa: E402
from bids_sclesion.evaluate import (HealthyScore, evaluate_outputs, score_healthy_arrays,  # noqa: E402
                                    summarise_by_contrast, summarise_healthy)
from bids_sclesion.model.io import resolve_model  # noqa: E402
from bids_sclesion.phantoms.insert import INSERTION_VERSION  # noqa: E402

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

#: The contrasts the app is for; the MT slabs of sct-examples are not among them (stage 2 never saw MTS).
CONTRASTS = ("T2w", "T1w", "PSIR", "STIR", "T2starw", "T2star")

#: Real images without a cord mask, counted as healthy cords for false lesions only:
#: (collection, subject, name stem, image path). sct-t2w sub-errsm20/22 carry no health status; their
#: sagittal slices through the cord show no focal hyperintensity (looked at before adding them).
UNLABELLED = [
    ("sct-t2w", "errsm20", "T2w", "sct-t2w-bids/sub-errsm20/anat/sub-errsm20_T2w.nii.gz"),
    ("sct-t2w", "errsm22", "T2w", "sct-t2w-bids/sub-errsm22/anat/sub-errsm22_T2w.nii.gz"),
    ("gm-challenge", "9418", "run-2_T2starw", "gm-challenge-bids/sub-9418/anat/sub-9418_run-2_T2starw.nii.gz"),
    ("gm-challenge", "9584", "run-2_T2starw", "gm-challenge-bids/sub-9584/anat/sub-9584_run-2_T2starw.nii.gz"),
    ("gm-challenge", "9604", "run-2_T2starw", "gm-challenge-bids/sub-9604/anat/sub-9604_run-2_T2starw.nii.gz"),
]
#: Left out, and why (printed with the table).
LEFT_OUT = {
    "spine-mini sub-unf02, sub-unf03": "5-10 mm voxels (2-slice T2*, 8 mm T2w): test-plumbing crops, not clinical scans",
    "sct-examples MT slabs": "MTS is not a contrast the app is for; stage 2 never trained on it",
    "PAM50 template": "an average of many people, not a scan",
}

TARGETS = {"false_lesions_per_image": 0.2, "largest_in_grey_matter_mm3": 10.0, "lesion_dice": 0.65,
           "lesion_f1": 0.85, "cord_dice": 0.85}


def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.resolve())


def build_real_dataset(out: Path, shared: Path = SHARED) -> dict[str, str]:
    """The real images of the benchmark as one BIDS dataset; returns participant -> collection."""
    sources: dict[str, str] = {}
    for source, subject, stem, image, mask in CASES:
        if source == "template" or "MTS" in stem or not (shared / image).exists():
            continue
        name = f"sub-{subject}_{stem}"
        _link(out / f"sub-{subject}" / "anat" / f"{name}.nii.gz", shared / image)
        labels = out / "derivatives" / "labels" / f"sub-{subject}" / "anat"
        _link(labels / f"{name}_seg-manual.nii.gz", shared / mask)
        grey_matter = shared / mask.replace("_seg-manual", "_gmseg-manual")
        if "_seg-manual" in mask and grey_matter.exists():
            _link(labels / f"{name}_gmseg-manual.nii.gz", grey_matter)
        sources[f"sub-{subject}"] = source
    for source, subject, stem, image in UNLABELLED:
        if (shared / image).exists():
            _link(out / f"sub-{subject}" / "anat" / f"sub-{subject}_{stem}.nii.gz", shared / image)
            sources[f"sub-{subject}"] = source
    rows = ["participant_id\tsource"] + [f"{s}\t{src}" for s, src in sorted(sources.items())]
    (out / "participants.tsv").write_text("\n".join(rows) + "\n")
    (out / "dataset_description.json").write_text(
        '{"Name": "real spinal cord images (benchmark)", "BIDSVersion": "1.9.0", "DatasetType": "raw"}\n')
    (out / ".bidsignore").write_text("*_T2star.*\n")
    return sources


def seen_subjects(model: str | Path, _chain: tuple[Path, ...] = ()) -> set[str]:
    """Subjects a model trained or validated on, with those of the model it was initialised from."""
    model_dir = resolve_model(model).resolve()
    if model_dir in _chain or not (model_dir / METADATA).exists():
        return set()
    training = read_metadata(model_dir, required=()).get("training", {})
    seen = set(training.get("subjects", [])) | set(training.get("validation_subjects", []))
    if training.get("init_from"):  # a missing model adds nothing; one that names itself stops at _chain
        seen |= seen_subjects(training["init_from"], _chain + (model_dir,))
    return seen


def models_for(collection: str, args) -> tuple[str, str, list[str]]:
    """Stage 1 and stage 2 for ``collection``, and those of them that do not exist."""
    stage1 = str(args.stage1_folds / f"fold-{collection}") if args.stage1_folds else args.stage1
    stage2 = str(args.stage2_folds / f"fold-{collection}") if args.stage2_folds else args.stage2
    missing = [m for m in (stage1, stage2, locator_for(collection, args), fallback_for(collection, args)) if m
               and not (resolve_model(m) / METADATA).is_file()]
    return stage1, stage2, missing


def locator_for(collection: str, args) -> str | None:
    """The app's ``--cord-locator`` for ``collection`` (``--locator-folds`` / ``--locator``), or None."""
    folds, locator = getattr(args, "locator_folds", None), getattr(args, "locator", None)
    if folds:
        return str(folds / f"fold-{collection}")
    return None if locator in (None, "none") else locator


def fallback_for(collection: str, args) -> str | None:
    """The app's ``--stage1-fallback`` for ``collection``: ``--fallback-folds`` / ``--stage1-fallback``; with
    ``--stage1-folds`` and neither, None, so that no model that saw the collection can make its cord."""
    folds, fallback = getattr(args, "fallback_folds", None), getattr(args, "stage1_fallback", None)
    if folds:
        return str(folds / f"fold-{collection}")
    if fallback is None:
        fallback = None if getattr(args, "stage1_folds", None) else DEFAULT_STAGE1_FALLBACK
    return None if fallback in (None, "none") else fallback


def app_model_options(collection: str, args) -> tuple[str, ...]:
    """The app's ``--cord-locator`` and ``--stage1-fallback`` options for ``collection``."""
    locator, fallback = locator_for(collection, args), fallback_for(collection, args)
    return (("--cord-locator", locator) if locator else ()) + ("--stage1-fallback", fallback or "none")


def collection_status(subjects: list[str], stage1: str, stage2: str, missing: list[str], allow_seen: bool,
                      selected: bool = True, locator: str | None = None, fallback: str | None = None) -> str:
    """'yes' when the collection is measured by models that never saw it, else why not.

    A collection a model trained on is 'seen by stage 1' (or 'stage 2', or both) with ``allow_seen`` and
    is then measured; without it, 'no: trained on by ...'. The stage is named because the app's cord mask
    averages both stages' cord probabilities: a stage 2 that saw an image biases cord figures too.
    """
    named = ((("stage 1", stage1), ("stage 2", stage2)) + ((("the cord locator", locator),) if locator else ())
             + ((("the stage-1 fallback", fallback),) if fallback else ()))
    saw = {name: sorted(seen_subjects(model) & set(subjects)) for name, model in named}
    saw = {name: who for name, who in saw.items() if who}
    if saw and not allow_seen:  # first: the reason that no other model of the same kind would mend
        return "no: trained on by " + " and ".join(f"{name} ({', '.join(who)})" for name, who in saw.items())
    if missing:
        return "no: no model at " + ", ".join(missing)
    if not selected:
        return "not run (--collections)"
    return "seen by " + " and ".join(saw) if saw else "yes"


def is_measured(status: str) -> bool:
    """Whether a :func:`collection_status` lets the collection be measured."""
    return status == "yes" or status.startswith("seen by")


def run_app(bids: Path, out: Path, work: Path, subjects: list[str], stage1: str, stage2: str, nprocs: int,
            options: tuple[str, ...] = ()) -> None:
    argv = [str(bids), str(out), "participant", "-w", str(work), "--skip-bids-validation", "--no-reports",
            "--nprocs", str(nprocs), "--omp-nthreads", "1", "--model", stage1, "--stage2-model", stage2,
            "--contrast", *CONTRASTS, "--participant-label", *[s.removeprefix("sub-") for s in subjects], *options]
    code = app(argv)
    if code not in (0, 1):
        raise SystemExit(f"participant level failed with exit code {code}: {' '.join(argv)}")


def score_healthy(bids: Path, out: Path) -> list[HealthyScore]:
    """False lesions and cord Dice of every processed image of the healthy dataset."""
    labels_dir = bids / "derivatives" / "labels"
    scores = []
    for table in sorted(out.glob("sub-*/**/anat/*_lesions.tsv")):
        name = source_of_lesion_table(table, out)
        outputs = name.outputs(out)
        rel = Path(name.relpath)
        stem = rel.name.split(".")[0]
        pred_img = nib.load(str(outputs["lesion_mask"]))
        masks = {}
        for key, label in (("cord", "seg-manual"), ("gm", "gmseg-manual")):
            path = labels_dir / rel.parent / f"{stem}_{label}.nii.gz"
            masks[key] = np.asarray(nib.load(str(path)).dataobj) > 0.5 if path.exists() else None
        voxel_mm3 = voxel_volume(pred_img.affine)
        scores.append(score_healthy_arrays(
            rel.name, name.suffix, np.asarray(nib.load(str(outputs["cord_mask"])).dataobj) > 0,
            np.asarray(pred_img.dataobj) > 0, masks["cord"], masks["gm"], voxel_mm3))
    return scores


def _fmt(value) -> str:
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.3f}"
    return str(value)


def report(name: str, models: dict, healthy: list[HealthyScore], lesions: list, sources: dict[str, str]) -> dict:
    """Print the tables and the targets; returns everything as one dict."""
    collection_of = {}
    for s in healthy:
        collection_of[s.image] = sources.get(s.image.split("_")[0], "?")
    print(f"\n## Real-anatomy benchmark: {name}\n")
    print("| collection | stage 1 | stage 2 | measured |\n|---|---|---|---|")
    for collection, info in sorted(models.items()):
        stage1 = (info["stage1"] + (f" (in the box of {info['locator']})" if info.get("locator") else "")
                  + (f" (fallback {info['fallback']})" if info.get("fallback") else ""))
        print(f"| {collection} | {stage1} | {info['stage2']} | {info['status']} |")
    print("\nLeft out: " + "; ".join(f"{k} ({v})" for k, v in LEFT_OUT.items()) + ".")
    print("\n### Healthy real cords, per image\n")
    print("| collection | image | cord Dice | false lesions | false mm3 | in grey matter mm3 | largest in GM mm3 |")
    print("|---|---|---|---|---|---|---|")
    for s in healthy:
        print(f"| {collection_of[s.image]} | {s.image} | {_fmt(s.cord_dice)} | {s.false_lesions} | "
              f"{s.false_volume_mm3:.0f} | {_fmt(s.in_grey_matter_mm3)} | {_fmt(s.largest_in_grey_matter_mm3)} |")
    healthy_summary = summarise_healthy(healthy)
    print("\n### Synthetic lesions inserted into the same real cords, per image\n")
    print("| image | lesions | detected | false positives | lesion Dice |\n|---|---|---|---|---|")
    for s in lesions:
        print(f"| {s.image} | {s.true_lesions} | {s.detected} | {s.false_positives} | {_fmt(s.lesion_dice)} |")
    lesion_summary = summarise_by_contrast(lesions)
    print("\n### Per contrast\n")
    print(compare_tables([{"name": name, "healthy_summary": healthy_summary, "lesion_summary": lesion_summary}]))
    targets = check_targets(healthy, healthy_summary, lesion_summary)
    print("\n### Targets\n")
    for line in targets:
        print(f"- {line}")
    t1w = [s for s in healthy if s.suffix == "T1w"]
    print(f"\nT1w rests on {len(t1w)} real image(s) ({', '.join(s.image for s in t1w) or 'none'}): one image "
          "is an anecdote, not an accuracy; T1w figures here say only whether the app fails outright.")
    return {"name": name, "models": models, "healthy": [vars(s) for s in healthy],
            "healthy_summary": healthy_summary, "lesions": [vars(s) for s in lesions],
            "lesion_summary": lesion_summary, "targets": targets}


def compare_tables(results: list[dict]) -> str:
    """One Markdown table, a row per model set and contrast: healthy cords, then inserted lesions."""
    lines = ["| models | contrast | healthy images | false lesions / image | false mm3 / image | GM share of false mm3 "
             "| largest in GM mm3 | cord Dice mean (min) | lesion images | lesion Dice | lesion TPR | lesion PPV "
             "| lesion F1 | lesion FP |", "|" + "---|" * 14]
    for result in results:
        healthy, lesions = result["healthy_summary"], result["lesion_summary"]
        dataset = result.get("lesion_dataset", "real_lesions_seed11")  # runs saved before it was recorded
        if lesions and dataset != results[0].get("lesion_dataset", "real_lesions_seed11"):
            # Inserted-lesion figures of two lesion datasets are not comparable: name them apart.
            result = {**result, "name": f"{result['name']} [{dataset}]"}
        for contrast in sorted(set(healthy) | set(lesions), key=lambda c: (c == "all", c)):
            h, les = healthy.get(contrast), lesions.get(contrast)
            cells = [result["name"], contrast]
            if h:
                cells += [h["images"], _fmt(h["false_lesions_per_image"]), f"{h['false_volume_per_image_mm3']:.0f}",
                          _fmt(h["grey_matter_share"]), _fmt(h["largest_in_grey_matter_mm3"]),
                          f"{_fmt(h['cord_dice'])} ({_fmt(h['cord_dice_min'])})"]
            else:
                cells += [0] + ["-"] * 5
            if les and les["images"]:
                cells += [les["images"], _fmt(les["lesion_dice"]), _fmt(les["lesion_tpr"]), _fmt(les["lesion_ppv"]),
                          _fmt(les["lesion_f1"]), les["false_positives"]]
            else:
                cells += [0] + ["-"] * 5
            lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def check_targets(healthy: list[HealthyScore], healthy_summary: dict, lesion_summary: dict) -> list[str]:
    """One line per target of the benchmark, saying met or not met with the measured figure."""
    lines = []

    def line(ok: bool, text: str) -> None:
        lines.append(f"{'met' if ok else 'NOT met'}: {text}")

    if healthy:
        fl = healthy_summary["all"]["false_lesions_per_image"]
        line(fl <= TARGETS["false_lesions_per_image"], f"false lesions per healthy image {fl:.2f} (<= 0.2)")
        gm = healthy_summary["all"]["largest_in_grey_matter_mm3"]
        if not math.isnan(gm):
            line(gm <= TARGETS["largest_in_grey_matter_mm3"], f"largest false lesion inside grey matter {gm:.1f} mm3 (<= 10)")
        cord = [s for s in healthy if not math.isnan(s.cord_dice)]
        low = [f"{s.image} {s.cord_dice:.3f}" for s in cord if s.cord_dice < TARGETS["cord_dice"]]
        line(not low, f"cord Dice >= 0.85 on every image: {len(cord) - len(low)}/{len(cord)}"
             + (f" (below: {', '.join(low)})" if low else ""))
    for contrast, row in lesion_summary.items():
        if contrast == "all" or not row["images"]:
            continue
        ok = row["lesion_dice"] >= TARGETS["lesion_dice"] and row["lesion_f1"] >= TARGETS["lesion_f1"]
        line(ok, f"{contrast} inserted lesions: Dice {row['lesion_dice']:.3f} (>= 0.65), F1 {row['lesion_f1']:.3f} (>= 0.85)")
    return lines


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("work_dir", type=Path)
    p.add_argument("--stage1", default=DEFAULT_STAGE1, help="stage-1 model for every collection (no --stage1-folds)")
    p.add_argument("--stage2", default="stage2", help="stage-2 model for every collection (no --stage2-folds)")
    p.add_argument("--stage1-folds", type=Path, default=None, help="DIR/fold-<collection> held that collection out")
    p.add_argument("--stage2-folds", type=Path, default=None, help="as --stage1-folds, for stage 2")
    p.add_argument("--locator", default="none",
                   help="the app's --cord-locator for every collection (no --locator-folds; default: none)")
    p.add_argument("--locator-folds", type=Path, default=None, help="as --stage1-folds, for the cord locator")
    p.add_argument("--stage1-fallback", default=None,
                   help="the app's --stage1-fallback for every collection (no --fallback-folds; default: the app's "
                        f"default, {DEFAULT_STAGE1_FALLBACK}, or none with --stage1-folds: a bundled model saw every image)")
    p.add_argument("--fallback-folds", type=Path, default=None, help="as --stage1-folds, for the stage-1 fallback")
    p.add_argument("--name", default=None, help="name of this run's outputs (default: from the models)")
    p.add_argument("--seed", type=int, default=11, help="seed of the inserted lesions")
    p.add_argument("--nprocs", type=int, default=2)
    p.add_argument("--shared", type=Path, default=SHARED, help="the real data (default ../shared/data)")
    p.add_argument("--collections", nargs="+", default=None, metavar="NAME",
                   help="measure only these collections (default: every one); the others are listed as not run")
    p.add_argument("--compare", nargs="+", default=None, metavar="NAME",
                   help="run nothing: print the saved results of these runs (WORK_DIR/runs/NAME) side by side")
    p.add_argument("--tta", action="store_true", help="run the app with --tta (stage 2 averaged over flips)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="the app's --precision (auto: bfloat16 on a CPU that computes it natively)")
    p.add_argument("--stage1-flips", choices=STAGE1_FLIPS, default=STAGE1_FLIPS[0],
                   help="the app's --stage1-flips (where stage 1's test-time flips run)")
    p.add_argument("--allow-seen", action="store_true",
                   help="also measure collections a model trained on (marked 'seen by' the stage that saw them; not a valid figure)")
    args = p.parse_args()
    if args.compare:
        saved = [json.loads((args.work_dir / "runs" / name / "summary.json").read_text()) for name in args.compare]
        print(compare_tables(saved))
        return 0
    if not args.shared.is_dir():
        raise SystemExit(f"{args.shared}: no real data folder (../shared/data); nothing to measure")
    name = args.name or "_".join(Path(str(m)).name for m in (args.stage1_folds or args.stage1,
                                                             args.stage2_folds or args.stage2))
    data = args.work_dir / "data"
    real = data / "real"
    sources = build_real_dataset(real, args.shared)
    # Named after the insertion rules too: lesions drawn by other rules are another test set.
    lesion_dir = data / f"real_lesions_v{INSERTION_VERSION}_seed{args.seed}"
    if not (lesion_dir / "participants.tsv").exists():
        build_lesion_dataset(real, lesion_dir, args.seed)
    run_dir = args.work_dir / "runs" / name
    collections: dict[str, list[str]] = {}
    for subject, collection in sources.items():
        collections.setdefault(collection, []).append(subject)
    models, measured = {}, []
    started = time.time()
    for collection, subjects in sorted(collections.items()):
        stage1, stage2, missing = models_for(collection, args)
        selected = not args.collections or collection in args.collections
        locator, fallback = locator_for(collection, args), fallback_for(collection, args)
        status = collection_status(subjects, stage1, stage2, missing, args.allow_seen, selected, locator, fallback)
        models[collection] = {"stage1": stage1, "stage2": stage2, "status": status, "subjects": sorted(subjects)}
        if locator:
            models[collection]["locator"] = locator
        if fallback:
            models[collection]["fallback"] = fallback
        if selected and status.startswith("no: no model"):
            raise SystemExit(f"{collection}: {status}")
        if not is_measured(status):
            continue
        measured.extend(subjects)
        for kind, bids, work in (("healthy", real, "healthy"), ("lesions", lesion_dir, lesion_dir.name)):
            present = [s for s in subjects if (bids / s).is_dir()]
            if present:
                run_app(bids, run_dir / kind, args.work_dir / "work" / work, present, stage1, stage2, args.nprocs,
                        ("--tta",) * args.tta + ("--precision", args.precision, "--stage1-flips", args.stage1_flips)
                        + app_model_options(collection, args))
    keep = set(measured)
    healthy = [s for s in score_healthy(real, run_dir / "healthy") if s.image.split("_")[0] in keep]
    lesions, _ = evaluate_outputs(lesion_dir, run_dir / "lesions") if (run_dir / "lesions").is_dir() else ([], {})
    lesions = [s for s in lesions if s.image.split("_")[0] in keep]
    result = report(name, models, healthy, lesions, sources)
    result["lesion_dataset"] = lesion_dir.name
    result["stage1_flips"] = args.stage1_flips
    result["minutes"] = (time.time() - started) / 60
    (run_dir / "summary.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    print(f"\n{result['minutes']:.1f} min; saved {run_dir / 'summary.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
