"""Failed images, kept in the output directory so that later steps (group level, reports) can say why.

One JSON file per participant, ``logs/failed/sub-<label>.json`` (``{image name: {"reason", "time"}}``):
participants are locked one run at a time, so a per-participant file needs no lock of its own. A record
lives until the image is processed again: a later success removes it, a later failure replaces it.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Iterable, Mapping

from .utils.io import write_json

FAILED_DIR = Path("logs") / "failed"


def failure_file(out_dir: str | Path, subject: str) -> Path:
    return Path(out_dir) / FAILED_DIR / f"sub-{subject}.json"


def read_failures(out_dir: str | Path, subject: str) -> dict[str, dict]:
    """This participant's failure records; an unreadable file counts as none (it is rewritten next run)."""
    path = failure_file(out_dir, subject)
    try:
        records = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in records.items() if isinstance(v, dict)} if isinstance(records, dict) else {}


def record_failures(out_dir: str | Path, subject: str, processed: Iterable[str],
                    failed: Mapping[str, str]) -> Path | None:
    """Update a participant's records after a run that processed the images ``processed`` (names).

    ``failed`` maps the names of those that failed to their reason. Records of images this run did not
    touch (another session, a contrast left out) are kept. Returns the file, or None once no record remains.
    """
    records = {name: rec for name, rec in read_failures(out_dir, subject).items() if name not in set(processed)}
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    records.update({name: {"reason": reason, "time": stamp} for name, reason in failed.items()})
    path = failure_file(out_dir, subject)
    if not records:
        path.unlink(missing_ok=True)
        return None
    return write_json(dict(sorted(records.items())), path)


def all_failures(out_dir: str | Path) -> list[dict]:
    """Every failure record of the output directory: ``participant_id``, ``image``, ``reason``, ``time``."""
    rows = []
    for path in sorted((Path(out_dir) / FAILED_DIR).glob("sub-*.json")):
        subject = path.stem[len("sub-"):]
        for name, rec in read_failures(out_dir, subject).items():
            rows.append({"participant_id": f"sub-{subject}", "image": name,
                         "reason": str(rec.get("reason", "unknown")), "time": str(rec.get("time", "n/a"))})
    return rows
