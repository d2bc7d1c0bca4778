"""Process environment of the app: offline, and scratch files only where the user allows writing."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path


def _writable(path: str | os.PathLike | None) -> bool:
    if not path:
        return False
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def confine_scratch(work_dir: str | os.PathLike) -> list[str]:
    """Move temporary and cache directories into ``work_dir`` when their defaults cannot be written.

    Under Singularity/Apptainer or a read-only container, HOME and /tmp may be
    read-only; the libraries the app uses (matplotlib, torch, tempfile) would
    then fail or warn. Returns one line per variable changed, for the log.
    """
    os.environ.setdefault("NIPYPE_NO_ET", "1")  # the app never goes online
    scratch = Path(work_dir) / ".scratch"
    changed = []
    home = os.environ.get("HOME", "")
    defaults = {
        "TMPDIR": os.environ.get("TMPDIR") or "/tmp",
        "MPLCONFIGDIR": os.environ.get("MPLCONFIGDIR") or os.path.join(home, ".config", "matplotlib"),
        "XDG_CACHE_HOME": os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache"),
    }
    for var, default in defaults.items():
        if _writable(default):
            continue
        target = scratch / var.lower()
        target.mkdir(parents=True, exist_ok=True)
        os.environ[var] = str(target)
        changed.append(f"{var}: {default} is not writable, using {target}")
    if "TMPDIR" in {c.split(":")[0] for c in changed}:
        tempfile.tempdir = None  # forget the cached choice so that the new TMPDIR is used
    return changed


def process_context():
    """Start method for worker processes: fork where the platform has it (workers then share the
    parent's arrays instead of receiving pickled copies), else spawn."""
    import multiprocessing

    return multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
