"""Per-participant locks in the output directory: two runs never write the same participant at once."""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Iterable

from .io import partial_file_pattern

#: Lock files live in OUT_DIR/.locks (listed in the output's .bidsignore).
LOCK_DIR = ".locks"

#: The only errors of a non-blocking flock that mean "another process holds it".
_BUSY = {errno.EWOULDBLOCK, errno.EAGAIN}

LOGGER = logging.getLogger("bids_sclesion")


class ParticipantLocks:
    """Exclusive, non-blocking ``flock`` locks, one per participant, held until :meth:`release`.

    The kernel drops a lock when its holder dies (even by ``kill -9``): no stale lock survives a crash.
    """

    def __init__(self, out_dir: str | os.PathLike):
        self.dir = Path(out_dir) / LOCK_DIR
        self._held: dict[str, int] = {}
        self.unsupported: str | None = None  # why this file system cannot lock, once found out

    def acquire(self, labels: Iterable[str]) -> dict[str, str]:
        """Lock every label that no other run holds; returns {label: who holds it} for the others."""
        self.dir.mkdir(parents=True, exist_ok=True)
        busy = {}
        for label in labels:
            path = self.dir / f"sub-{label}.lock"
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in _BUSY:
                    busy[label] = _describe_holder(fd)
                    os.close(fd)
                    continue
                # A file system without flock (Lustre mounted without it, some NFS): locking is impossible,
                # not held. Go on unlocked rather than skip every participant; say so once.
                if self.unsupported is None:
                    self.unsupported = f"{exc.strerror or exc}"
                    LOGGER.warning("%s: the file system does not support locks (%s); participants are processed "
                                   "without them: do not run two commands on one participant at once",
                                   self.dir, self.unsupported)
            os.ftruncate(fd, 0)
            os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                     "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "command": " ".join(sys.argv)[:500]}).encode())
            self._held[label] = fd
        return busy

    def release(self) -> None:
        for fd in self._held.values():
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing the descriptor drops the lock
        self._held.clear()

    def __enter__(self) -> "ParticipantLocks":
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _describe_holder(fd: int) -> str:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another bids_sclesion run"
    return f"another bids_sclesion run (pid {info.get('pid')} on {info.get('host')}, since {info.get('started')})"


def remove_partial_files(out_dir: str | os.PathLike, label: str) -> list[Path]:
    """Delete temporary files an interrupted run left for this participant (call it holding its lock)."""
    out_dir = Path(out_dir)
    removed = []
    subject_dir = out_dir / f"sub-{label}"
    candidates = list(subject_dir.rglob(partial_file_pattern())) if subject_dir.is_dir() else []
    candidates += list(out_dir.glob(partial_file_pattern(f"sub-{label}")))  # the subject's report
    for path in candidates:
        if path.is_file():
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed
