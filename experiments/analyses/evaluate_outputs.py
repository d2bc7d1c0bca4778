#!/usr/bin/env python
"""Score the app's outputs against ground-truth labels.

Usage: python experiments/analyses/evaluate_outputs.py BIDS_DIR OUT_DIR [--tsv FILE]
Prints a per-contrast table (Markdown); --tsv writes the per-image scores.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bids_sclesion.evaluate import evaluate_outputs, format_summary, scores_to_tsv


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("bids_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--labels-dir", type=Path, default=None)
    p.add_argument("--tsv", type=Path, default=None)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    scores, summary = evaluate_outputs(args.bids_dir, args.out_dir, args.labels_dir)
    print(format_summary(summary))
    if args.tsv:
        args.tsv.write_text(scores_to_tsv(scores))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
