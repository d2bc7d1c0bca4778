#!/usr/bin/env python
"""Write measured test metrics into a model's metadata and its MODEL_CARD.md.

Usage: python scripts/make_model_card.py MODEL_DIR TEST_BIDS_DIR TEST_OUT_DIR --test-command "..." --train-command "..."
The metrics are computed here, from the app's outputs on the test dataset
(``bids_sclesion.evaluate``), never typed in.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bids_sclesion.model.metadata import read_metadata, write_metadata
from bids_sclesion.evaluate import evaluate_outputs, format_summary
from bids_sclesion.core.lesions import DEFAULT_THRESHOLD
from bids_sclesion.model.network import OUTPUT_CHANNELS


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("model_dir", type=Path)
    p.add_argument("test_bids", type=Path)
    p.add_argument("test_out", type=Path)
    p.add_argument("--train-command", required=True)
    p.add_argument("--data-command", required=True)
    p.add_argument("--test-command", required=True)
    p.add_argument("--name", default=None, help="name the model is bundled under")
    p.add_argument("--extra", type=Path, default=None, help="Markdown appended to the card (e.g. real-data table)")
    p.add_argument("--training-data", default=None,
                   help="one paragraph on the training data (default: synthetic phantoms only)")
    p.add_argument("--init-note", default=None,
                   help="sentence on the model it was fine-tuned from (default: 'Fine-tuned from `INIT`.')")
    p.add_argument("--test-note", default="", help="how the test run used this model (e.g. as stage 2 of the cascade)")
    p.add_argument("--more-test", type=Path, nargs=2, action="append", default=[], metavar=("BIDS_DIR", "OUT_DIR"),
                   help="another held-out synthetic test set and the app's outputs on it (repeatable)")
    p.add_argument("--more-test-command", action="append", default=[], help="how each --more-test's outputs were made")
    p.add_argument("--real-test", type=Path, nargs=2, default=None, metavar=("BIDS_DIR", "OUT_DIR"),
                   help="real cords with inserted lesions and the app's outputs on them (scored the same way)")
    p.add_argument("--real-test-command", default="", help="how --real-test's outputs were made")
    p.add_argument("--real-test-note", default="", help="which models processed which real images")
    args = p.parse_args()
    if len(args.more_test_command) != len(args.more_test):
        p.error("give one --more-test-command per --more-test")

    scores, summary = evaluate_outputs(args.test_bids, args.test_out)
    meta = read_metadata(args.model_dir)
    real_anatomy = meta.get("test_metrics", {}).get("real_anatomy")  # scripts/card_real_anatomy.py: kept
    meta["test_metrics"] = {
        "dataset": _generated_by(args.test_bids),
        "command": args.test_command,
        "per_contrast": summary,
    }
    if args.name:
        meta["name"] = args.name
    meta["training"]["commands"] = {"data": args.data_command, "train": args.train_command}

    more_section = ""
    meta["test_metrics"]["more"] = []
    for (bids, out), command in zip(args.more_test, args.more_test_command):
        more_scores, more_summary = evaluate_outputs(bids, out)
        dataset = _generated_by(bids)
        meta["test_metrics"]["more"].append({"dataset": dataset, "command": command, "per_contrast": more_summary})
        more_section += f"""Another held-out synthetic set: {dataset}; {len(more_scores)} images.

    {command}

{format_summary(more_summary)}

"""
    real_section = ""
    if args.real_test:
        real_scores, real_summary = evaluate_outputs(*args.real_test)
        meta["test_metrics"]["real_cords_inserted_lesions"] = {"command": args.real_test_command,
                                                               "per_contrast": real_summary}
        real_section = f"""## Measured accuracy (real cords of ../shared/data with synthetic lesions)
{len(real_scores)} images; {args.real_test_note}

    {args.real_test_command}

{format_summary(real_summary)}

"""
    if real_anatomy:
        meta["test_metrics"]["real_anatomy"] = real_anatomy
    write_metadata(meta, args.model_dir)
    real_where = ("real cords with inserted lesions are scored above" if real_section
                  else "real-image results, where measured, are below")
    t = meta["training"]
    outputs = "two\nsigmoid maps: spinal cord (lesions included) and MS lesion"
    if len(meta.get("outputs", [])) > len(OUTPUT_CHANNELS):
        outputs = ("three\nsigmoid maps: spinal cord (lesions included), MS lesion and grey matter (trained where "
                   "grey matter labels exist; the app reads the first two)")
    if meta.get("space") == "straight":
        sp = meta["straight_space"]
        grid = (f"the straightened, cropped cord: a grid of {sp['spacing_mm']} mm (across, across, along the "
                f"cord) reaching {sp['radius_mm']} mm from the centreline, resampled from the N4-corrected "
                "image with the straightening warp of the stage-1 cord, scaled by its 0.5-99.5 percentiles. "
                "This is stage 2 of the cascade; its maps are brought back to the source grid by the reverse warp")
    else:
        grid = (f"one anatomical image, reoriented to RAS, N4-corrected, resampled to {meta['spacing_mm']} mm and "
                "scaled by its 0.5-99.5 percentiles")
    data_text = args.training_data or (
        f"Synthetic phantoms only (`bids_sclesion-synth`), {t['images']} images of {len(t['subjects'])} subjects, "
        f"validation on {len(t['validation_subjects'])} other subjects. No real image and no real lesion was used.")
    init = f" Fine-tuned from `{t['init_from']}`." if t.get("init_from") else ""
    if args.init_note is not None:
        init = f" {args.init_note}" if args.init_note else ""
    precision = " in bfloat16 (`--cpu-bf16`)" if t["config"].get("cpu_bf16") else ""
    stored = (" Weights stored in float16 (half the file), computed in float32; the figures below are this file's."
              if meta.get("weights_dtype") == "float16" else "")
    card = f"""# Model card: `{meta['name']}` (bids_sclesion {meta['version']})

## What it does
A 3D residual U-Net (MONAI `UNet`, channels {meta['network']['channels']}, instance norm) that outputs {outputs}. Input: {grid}.
Contrasts seen in training: {', '.join(meta['contrasts'])}. Inference: sliding window
{meta['inference']['roi_size']} with Gaussian blending, threshold {meta['inference'].get('threshold', DEFAULT_THRESHOLD)};
lesion components outside the cord are removed.{stored}

## Training data
{data_text}{init} Augmentation profile: `{t['config'].get('augmentation', 'standard')}`.

    {args.data_command}
    {args.train_command}

Iterations: {t['iterations_done']} ({t['minutes']} min on the CPU{precision}); best validation: {json.dumps(t['best_validation'])}.

## Measured accuracy (held-out synthetic subjects, seed never used in training)
Dataset: {meta['test_metrics']['dataset']}; {len(scores)} images. Produced by the BIDS App itself{args.test_note}:

    {args.test_command}

{format_summary(summary)}

Lesion Dice is the mean over images that contain at least one true lesion. Lesion-wise TPR/PPV/F1 are pooled
over images: a true lesion is detected when a predicted component overlaps it (`lesion_f1_10pct`: when it
covers at least 10 % of it); a predicted component touching no true lesion is a false positive.

{more_section}{real_section}## Limits
- No real MS lesion was used in training or testing: lesion accuracy on real patients is not known from
  these figures ({real_where}).
"""
    if args.extra and args.extra.exists():
        card += "\n" + args.extra.read_text()
    if real_anatomy:
        from card_real_anatomy import section, splice

        card = splice(card, section(real_anatomy))
    (args.model_dir / "MODEL_CARD.md").write_text(card)
    print(format_summary(summary))
    return 0


def _generated_by(bids: Path) -> str:
    """How a synthetic dataset was made (``GeneratedBy[0].Description`` of its dataset_description.json)."""
    desc = json.loads((bids / "dataset_description.json").read_text())
    return desc.get("GeneratedBy", [{}])[0].get("Description", "")


if __name__ == "__main__":
    raise SystemExit(main())
