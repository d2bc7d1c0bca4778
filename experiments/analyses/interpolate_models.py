#!/usr/bin/env python
"""A model whose weights lie between a base model and its fine-tuning: (1 - alpha) * base + alpha * tuned.

Usage: python experiments/analyses/interpolate_models.py BASE TUNED OUT_DIR [--alpha 0.5]

Fine-tuning a network and then moving its weights part of the way back towards the model it started from
often keeps what the fine-tuning gained on the new data while losing less of what the base model did well
(Wortsman et al. 2022, "Robust fine-tuning of zero-shot models", CVPR: weight-space ensembles). Both models
must have the same architecture and TUNED must have been initialised from BASE (its ``training.init_from``),
so the two sets of weights are one optimisation path apart. OUT_DIR gets the tuned model's metadata (so its
``training`` record, with the subjects both models saw, carries over) plus an ``interpolation`` record.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from bids_sclesion.model.io import ModelError, interpolate_state, load_model, resolve_model, save_model
from bids_sclesion.model.metadata import weights_sha256


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("base")
    p.add_argument("tuned")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--alpha", type=float, default=0.5, help="weight of the tuned model (0: base, 1: tuned)")
    args = p.parse_args()
    base, tuned = load_model(args.base), load_model(args.tuned)
    init_from = str(tuned.metadata.get("training", {}).get("init_from") or "")
    if init_from and resolve_model(init_from).resolve() != resolve_model(args.base).resolve():
        print(f"warning: {args.tuned} was initialised from {init_from}, not from {args.base}")
    network = tuned.network
    try:  # interpolate_state checks the share and that both networks have the same weights and shapes
        state = interpolate_state(base.network.state_dict(), tuned.network.state_dict(), args.alpha)
    except (ValueError, ModelError) as exc:
        raise SystemExit(f"{args.base}, {args.tuned}: {exc}") from exc
    network.load_state_dict(state)
    metadata = dict(tuned.metadata)
    metadata["name"] = args.out_dir.name
    metadata["interpolation"] = {
        "base": str(args.base), "base_sha256": weights_sha256(resolve_model(args.base)),
        "tuned": str(args.tuned), "tuned_sha256": weights_sha256(resolve_model(args.tuned)), "alpha": args.alpha,
        "command": f"python experiments/analyses/interpolate_models.py {args.base} {args.tuned} OUT --alpha {args.alpha}",
    }
    metadata.pop("test_metrics", None)
    save_model(network, metadata, args.out_dir, weights_dtype=tuned.metadata.get("weights_dtype", "float32"))
    print(f"wrote {args.out_dir} ({1 - args.alpha:g} x {args.base} + {args.alpha:g} x {args.tuned})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
