"""Atomic file writing: a reader never sees a partial file."""
from __future__ import annotations

import gzip
import json
import hashlib
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import nibabel as nib


#: What names the temporary file of :func:`atomic_path`: ".<target stem>.<random><mark><target suffixes>".
_PARTIAL_MARK = ".tmp"


def partial_file_pattern(stem: str = "*") -> str:
    """Glob pattern of the temporary files :func:`atomic_path` makes for targets named ``<stem>.*``.

    They remain only when the process writing them was killed.
    """
    return f".{stem}.*{_PARTIAL_MARK}*"


@contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it over ``target`` on success.

    The rename is atomic on POSIX file systems, so an interrupted run leaves
    either the old file or the new one, never a truncated one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}.", suffix=f"{_PARTIAL_MARK}{suffix}",
                               dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_nifti(img: nib.Nifti1Image, target: str | os.PathLike) -> Path:
    with atomic_path(target) as tmp:
        nib.save(img, str(tmp))
    return Path(target)


def write_text(text: str, target: str | os.PathLike) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_text(text)
    return Path(target)


def copy_file(source: str | os.PathLike, target: str | os.PathLike) -> Path:
    """Copy ``source`` to ``target`` atomically, gzip-compressing it when only the target ends in ``.gz``
    (work images are uncompressed; derivatives are ``.nii.gz``)."""
    with atomic_path(target) as tmp:
        if str(target).endswith(".gz") and not str(source).endswith(".gz"):
            # Level 1, nibabel's default for .nii.gz: most of the size gain for a fraction of the time.
            with open(source, "rb") as src, gzip.open(tmp, "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
        else:
            shutil.copyfile(source, tmp)
    return Path(target)


def tsv_text(rows: list[dict], columns) -> str:
    """A TSV table: the header ``columns``, then each row's values in that order."""
    return "\t".join(columns) + "\n" + "".join("\t".join(str(r[c]) for c in columns) + "\n" for r in rows)


def write_json(obj: Any, target: str | os.PathLike) -> Path:
    return write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n", target)


def _json_default(obj: Any) -> Any:
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def sha256_of(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes (hex), read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
