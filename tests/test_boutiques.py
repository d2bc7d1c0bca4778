"""The Boutiques descriptor: in step with the parser, valid, and giving command lines the app accepts."""
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_sclesion.cli.parser import get_parser

ROOT = Path(__file__).resolve().parents[1]
DESCRIPTOR = ROOT / "bids_sclesion" / "data" / "boutiques.json"
sys.path.insert(0, str(ROOT / "scripts"))

from make_boutiques_descriptor import build_descriptor  # noqa: E402

bosh = shutil.which("bosh") or (str(Path(sys.executable).parent / "bosh")
                                if (Path(sys.executable).parent / "bosh").exists() else None)
needs_bosh = pytest.mark.skipif(bosh is None, reason="the boutiques package is not installed (pip install boutiques)")


def test_descriptor_is_that_of_the_parser():
    assert json.loads(DESCRIPTOR.read_text()) == build_descriptor(), (
        "bids_sclesion/data/boutiques.json is out of date: python scripts/make_boutiques_descriptor.py")
    options = {a.dest for a in get_parser()._actions if a.option_strings and a.dest not in ("help", "version",
                                                                                            "verbose")}
    assert options <= {i["id"] for i in json.loads(DESCRIPTOR.read_text())["inputs"]}


@needs_bosh
def test_descriptor_validates_and_its_command_lines_parse(tmp_path):
    proc = subprocess.run([bosh, "validate", str(DESCRIPTOR)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    invocation = tmp_path / "invocation.json"
    invocation.write_text(json.dumps({"bids_dir": "/data", "output_dir": "/out", "analysis_level": "participant",
                                      "participant_label": ["01", "02"], "skip_bids_validation": True,
                                      "nprocs": 2, "threshold": 0.4}))
    proc = subprocess.run([bosh, "exec", "simulate", str(DESCRIPTOR), "-i", str(invocation)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    command = next(line for line in proc.stdout.splitlines() if line.startswith("bids_sclesion "))
    args = get_parser().parse_args(shlex.split(command)[1:])
    assert (str(args.bids_dir), str(args.output_dir), args.analysis_level) == ("/data", "/out", "participant")
    assert args.participant_label == ["01", "02"] and args.skip_bids_validation and args.threshold == 0.4
