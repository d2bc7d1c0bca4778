#!/usr/bin/env python
"""Write the app's Boutiques descriptor from its command-line parser.

Usage: python scripts/make_boutiques_descriptor.py [OUT_JSON]   (default: bids_sclesion/data/boutiques.json)

Every option of ``bids_sclesion --help`` becomes one input, with its flag, type, choices and default, so the
descriptor cannot drift from the parser: ``tests/test_boutiques.py`` rebuilds it, compares it with the file
and validates the file with the ``boutiques`` package.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bids_sclesion import __version__  # noqa: E402
from bids_sclesion.cli.parser import get_parser  # noqa: E402

DESCRIPTOR = ROOT / "bids_sclesion" / "data" / "boutiques.json"


def _input(action: argparse.Action) -> dict:
    key = f"[{action.dest.upper()}]"
    entry = {"id": action.dest, "name": action.dest.replace("_", " "), "value-key": key,
             "description": (action.help or "").replace("%(default)s", str(action.default))}
    if action.option_strings:
        entry["command-line-flag"] = max(action.option_strings, key=lambda o: (o.startswith("--"), -len(o)))
        entry["optional"] = True
    else:
        entry["optional"] = False
    if isinstance(action, argparse._StoreTrueAction):
        entry["type"] = "Flag"
        return entry
    if action.type in (int, float):
        entry["type"] = "Number"
        entry["integer"] = action.type is int
    elif action.dest in ("bids_dir", "output_dir", "work_dir", "bids_database_dir", "bids_filter_file", "derivatives",
                         "use_plugin"):
        entry["type"] = "File"
    else:
        entry["type"] = "String"
    if action.choices:
        entry["value-choices"] = list(action.choices)
    if action.nargs in ("+", "*"):
        entry["list"] = True
    if action.default not in (None, argparse.SUPPRESS) and not isinstance(action.default, (list, Path)):
        entry["default-value"] = action.default
    return entry


def build_descriptor() -> dict:
    parser = get_parser()
    actions = [a for a in parser._actions
               if not isinstance(a, (argparse._HelpAction, argparse._VersionAction)) and a.dest != "verbose"]
    inputs = [_input(a) for a in actions]
    keys = " ".join(i["value-key"] for i in inputs)
    return {
        "name": "bids_sclesion",
        "tool-version": __version__,
        "description": parser.description,
        "command-line": f"bids_sclesion {keys}",
        "schema-version": "0.5",
        "inputs": inputs,
        "output-files": [{"id": "output_dataset", "name": "BIDS-Derivatives folder", "path-template": "[OUTPUT_DIR]",
                          "optional": False}],
        "tags": {"domain": ["neuroinformatics", "mri", "spinal cord", "multiple sclerosis"]},
        "suggested-resources": {"cpu-cores": 2, "ram": 4, "walltime-estimate": 120},
    }


def main() -> int:
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else DESCRIPTOR
    out.write_text(json.dumps(build_descriptor(), indent=2) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
