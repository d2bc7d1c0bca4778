"""``bids_sclesion-eval``: score the app's outputs against manual labels."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import __version__
from ..evaluate import evaluate_predictions, format_summary, scores_to_tsv
from ..utils.io import write_text


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bids_sclesion-eval",
        description="Voxel Dice, lesion-wise TPR/PPV/F1 (any overlap, and the 10 %% overlap rule) and lesion "
        "volume differences of the app's outputs against manual labels, per image and per contrast.",
    )
    p.add_argument("pred_dir", type=Path, help="the app's output folder (OUT_DIR of the participant level)")
    p.add_argument("gt_dir", type=Path,
                   help="labels folder laid out like the raw dataset (e.g. BIDS_DIR/derivatives/labels), "
                        "or a BIDS dataset whose derivatives/labels holds them")
    p.add_argument("--lesion-label", default="lesion-manual", help="ground-truth lesion file: <stem>_<LABEL>.nii.gz")
    p.add_argument("--cord-label", default="seg-manual", help="ground-truth cord file: <stem>_<LABEL>.nii.gz")
    p.add_argument("--tsv", type=Path, default=None, help="per-image scores")
    p.add_argument("--json", type=Path, default=None, help="per-contrast summary")
    p.add_argument("--version", action="version", version=f"bids_sclesion {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    if not args.pred_dir.is_dir():
        print(f"bids_sclesion-eval: error: {args.pred_dir}: not a directory", file=sys.stderr)
        return 2
    labels = args.gt_dir / "derivatives" / "labels" if (args.gt_dir / "derivatives" / "labels").is_dir() else args.gt_dir
    scores, summary = evaluate_predictions(args.pred_dir, labels, args.lesion_label, args.cord_label)
    if not scores:
        print(f"bids_sclesion-eval: error: no output of {args.pred_dir} has a *_{args.lesion_label}.nii.gz "
              f"label in {labels}", file=sys.stderr)
        return 1
    print(format_summary(summary))
    if args.tsv:
        write_text(scores_to_tsv(scores), args.tsv)
    if args.json:
        write_text(json.dumps(summary, indent=2) + "\n", args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
