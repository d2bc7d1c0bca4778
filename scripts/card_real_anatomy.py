#!/usr/bin/env python
"""Put a model's real-anatomy benchmark figures at the head of its model card.

Usage: python scripts/card_real_anatomy.py MODEL_DIR SUMMARY_JSON --command "..."

SUMMARY_JSON is what ``benchmarks/real_anatomy.py`` saved for a run of this model
(WORK_DIR/runs/NAME/summary.json). The figures are recorded in model.json
(``test_metrics.real_anatomy``) and the card's section "Measured on real anatomy" is written
right under its title, replacing an earlier one; ``make_model_card.py`` keeps it when it
rebuilds the card.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from real_anatomy import compare_tables  # noqa: E402
from bids_sclesion.model.metadata import read_metadata, write_metadata

HEADING = "## Measured on real anatomy (benchmarks/real_anatomy.py)"


def section(record: dict) -> str:
    """The card's section from ``test_metrics.real_anatomy``."""
    measured = [f"{c} (stage 1: `{m['stage1']}`)" for c, m in sorted(record["models"].items())
                if m["status"] == "yes"]
    other = [f"{c}: {m['status']}" for c, m in sorted(record["models"].items()) if m["status"] != "yes"]
    targets = "\n".join(f"- {line}" for line in record["targets"])
    return f"""{HEADING}
Real images of `../shared/data`, processed by the app as users run it, each collection by models that never
trained or validated on it: {', '.join(measured)}. Not measured: {'; '.join(other) or 'none'}. Healthy cords:
every lesion found is false; inserted lesions: synthetic lesions in the same real cords
({_lesion_set(record.get('lesion_dataset', 'real_lesions_seed11'))}). How the benchmark works and how far it
can be trusted: `docs/real_anatomy.md`.

    {record['command']}

{compare_tables([record])}

{targets}

"""


def _lesion_set(name: str) -> str:
    """Words for the benchmark's lesion folder name (real_lesions[_v<rules>]_seed<seed>)."""
    version = name.split("_v")[1].split("_")[0] if "_v" in name else "1"
    seed = name.rsplit("seed", 1)[-1]
    rules = "drawn after the literature, insertion rules v2" if version == "2" else "ellipsoids, insertion rules v1"
    return f"{rules}, seed {seed}"


def splice(card: str, text: str) -> str:
    """``card`` with ``text`` as its first section (an earlier real-anatomy section is replaced)."""
    lines = card.splitlines(keepends=True)
    if HEADING + "\n" in lines:
        start = lines.index(HEADING + "\n")
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        lines[start:end] = []
    title = next(i for i, line in enumerate(lines) if line.startswith("# "))
    body = "".join(lines[title + 1:]).lstrip("\n")
    return "".join(lines[:title + 1]) + "\n" + text + body


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model_dir", type=Path)
    p.add_argument("summary", type=Path)
    p.add_argument("--command", required=True, help="the benchmark command that made SUMMARY_JSON")
    args = p.parse_args()
    result = json.loads(args.summary.read_text())
    record = {key: result[key] for key in ("name", "models", "healthy_summary", "lesion_summary", "targets")}
    record["lesion_dataset"] = result.get("lesion_dataset", "real_lesions_seed11")
    record["command"] = args.command
    meta = read_metadata(args.model_dir)
    meta.setdefault("test_metrics", {})["real_anatomy"] = record
    write_metadata(meta, args.model_dir)
    card_path = args.model_dir / "MODEL_CARD.md"
    card_path.write_text(splice(card_path.read_text(), section(record)))
    print(section(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
