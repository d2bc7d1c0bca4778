#!/usr/bin/env python
"""Transfer learning across contrasts: T2w-pretrained network fine-tuned on 4 PSIR subjects.

Usage:
  python experiments/analyses/transfer_learning.py OUT_ROOT [--pretrain-iterations 3000]
      [--finetune-iterations 1000] [--nthreads 2] [--seeds 0 1]

Steps (each skipped when its output exists, so the script can be rerun
after an interruption):
  1. synthetic data (bids_sclesion-synth): T2w only for pre-training
     (18 subjects), PSIR for fine-tuning (4 subjects) and a held-out PSIR
     test set (20 subjects); three generator seeds, so no phantom is shared;
  2. pre-training on T2w only (bids_sclesion-train);
  3. for each training seed: (b) fine-tuning of the pretrained network on the
     4 PSIR subjects (``--init-from``), (c) the same network trained from
     scratch on the same 4 subjects with the same number of iterations;
  4. the participant level (single stage) with (a) the pretrained network
     as it is, (b) and (c), on the 20 test subjects, scored by the code of
     ``bids_sclesion-eval``.
Prints a Markdown table (also written to OUT_ROOT/table.md).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from bids_sclesion.model.metadata import read_metadata
from bids_sclesion.cli.run import main as app
from bids_sclesion.cli.train import main as train_cli
from bids_sclesion.evaluate import evaluate_outputs, summarise_by_contrast
from bids_sclesion.phantoms import generate_dataset

DATASETS = {  # name: (contrast, subjects, generator seed)
    "pretrain_T2w": ("T2w", 18, 1000),
    "finetune_PSIR": ("PSIR", 4, 5000),
    "test_PSIR": ("PSIR", 20, 6000),
}


def make_data(root: Path) -> dict[str, Path]:
    paths = {}
    for name, (contrast, subjects, seed) in DATASETS.items():
        path = root / "data" / name
        if not (path / "dataset_description.json").exists():
            t0 = time.time()
            generate_dataset(path, subjects, 1, [contrast], seed)
            print(f"[data] {name}: {subjects} x {contrast} in {time.time() - t0:.0f} s", flush=True)
        paths[name] = path
    return paths


def train(bids: Path, model_dir: Path, contrast: str, iterations: int, extra: list[str], cache: Path,
          nthreads: int) -> float:
    if (model_dir / "model.safetensors").exists():
        return read_metadata(model_dir)["training"]["minutes"]
    argv = [str(bids), str(model_dir), "--contrast", contrast, "--iterations", str(iterations),
            "--nthreads", str(nthreads), "-w", str(cache), *extra]
    code = train_cli(argv)
    if code != 0:
        raise SystemExit(f"training failed ({code}): {' '.join(argv)}")
    return read_metadata(model_dir)["training"]["minutes"]


def segment(bids: Path, out: Path, work: Path, model: Path, nprocs: int, contrast: str = "PSIR") -> None:
    if (out / "done").exists():
        return
    argv = [str(bids), str(out / "derivatives"), "participant", "-w", str(work), "--skip-bids-validation",
            "--nprocs", str(nprocs), "--omp-nthreads", "1", "--single-stage", "--model", str(model),
            "--contrast", contrast, "--no-reports"]
    code = app(argv)
    if code != 0:
        raise SystemExit(f"participant level failed ({code}): {' '.join(argv)}")
    (out / "done").write_text("")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_root", type=Path)
    p.add_argument("--pretrain-iterations", type=int, default=3000)
    p.add_argument("--finetune-iterations", type=int, default=1000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds of (b) and (c)")
    p.add_argument("--pretrain-augmentation", choices=["standard", "domain"], default="domain",
                   help="domain: contrast inversion, histogram remapping, gamma... (features that carry over)")
    p.add_argument("--finetune-learning-rate", type=float, default=1e-3)
    p.add_argument("--encoder-lr-scale", type=float, default=0.3)
    p.add_argument("--nthreads", type=int, default=2)
    p.add_argument("--nprocs", type=int, default=2)
    args = p.parse_args()
    root = args.out_root.resolve()
    data = make_data(root)
    cache = root / "cache"
    models = root / "models"
    minutes = {"pretrained": train(data["pretrain_T2w"], models / "pretrained_T2w", "T2w", args.pretrain_iterations,
                                   ["--val-every", "500", "--augmentation", args.pretrain_augmentation], cache,
                                   args.nthreads)}
    configs = {"(a) pretrained T2w, no fine-tuning": models / "pretrained_T2w"}
    for seed in args.seeds:
        common = ["--val-fraction", "0", "--val-every", str(args.finetune_iterations), "--seed", str(seed)]
        ft = models / f"finetuned_PSIR_seed{seed}"
        sc = models / f"scratch_PSIR_seed{seed}"
        minutes[ft.name] = train(data["finetune_PSIR"], ft, "PSIR", args.finetune_iterations,
                                 common + ["--init-from", str(models / "pretrained_T2w"), "--learning-rate",
                                           str(args.finetune_learning_rate), "--encoder-lr-scale",
                                           str(args.encoder_lr_scale)], cache, args.nthreads)
        minutes[sc.name] = train(data["finetune_PSIR"], sc, "PSIR", args.finetune_iterations, common, cache,
                                 args.nthreads)
        configs[f"(b) fine-tuned on 4 PSIR (seed {seed})"] = ft
        configs[f"(c) from scratch on 4 PSIR (seed {seed})"] = sc
    rows = []
    for label, model in configs.items():
        out = root / "segment" / model.name
        segment(data["test_PSIR"], out, root / "work", model, args.nprocs)
        scores, _ = evaluate_outputs(data["test_PSIR"], out / "derivatives")
        summary = summarise_by_contrast(scores)["all"]
        rows.append((label, summary, minutes.get(model.name) if model.name != "pretrained_T2w" else None))
    lines = ["| model | test images | lesion Dice | lesion TPR | lesion PPV | lesion F1 | F1 (10 % rule) "
             "| false positives | cord Dice | training min |", "|---|---|---|---|---|---|---|---|---|---|"]
    for label, s, mins in rows:
        lines.append(f"| {label} | {s['images']} | {s['lesion_dice']:.3f} | {s['lesion_tpr']:.3f} | "
                     f"{s['lesion_ppv']:.3f} | {s['lesion_f1']:.3f} | {s.get('lesion_f1_10pct', float('nan')):.3f} | "
                     f"{s['false_positives']} | {s['cord_dice']:.3f} | {'' if mins is None else mins} |")
    lines.append(f"\nPre-training: {args.pretrain_iterations} iterations on {DATASETS['pretrain_T2w'][1]} T2w subjects, "
                 f"augmentation `{args.pretrain_augmentation}` ({minutes['pretrained']} min); (b) and (c): "
                 f"{args.finetune_iterations} iterations each on the same {DATASETS['finetune_PSIR'][1]} PSIR subjects "
                 f"(no validation split: the last iteration is kept); (b) learning rate {args.finetune_learning_rate}, "
                 f"encoder x{args.encoder_lr_scale}; (c) the default 2e-3; {args.nthreads} CPU threads.")
    table = "\n".join(lines)
    (root / "table.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
