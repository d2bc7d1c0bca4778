"""Input dataset access through pybids, and BIDS validation."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Sequence

LOGGER = logging.getLogger("bids_sclesion.bids")

_LABEL = re.compile(r"^[A-Za-z0-9]+$")
#: Suffixes of MS protocols that BIDS does not define; their validator errors are tolerated.
NONSTANDARD_SUFFIXES = ("PSIR", "STIR", "T2star")


def _dataset_fingerprint(bids_dir: Path) -> str:
    """Hash of the file names, sizes and times (derivatives excluded), to key the pybids cache."""
    digest = hashlib.sha1(str(bids_dir).encode())
    for root, dirs, files in os.walk(bids_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not (Path(root) == bids_dir and d in ("derivatives", "sourcedata", "code")))
        for name in sorted(files):
            st = os.stat(os.path.join(root, name))
            digest.update(f"{os.path.relpath(os.path.join(root, name), bids_dir)}|{st.st_size}|{st.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def load_layout(bids_dir: Path, database_dir: Path | None):
    """A ``BIDSLayout`` whose index is cached in ``database_dir`` (reused until the dataset changes)."""
    from bids import BIDSLayout

    kwargs = dict(validate=False, derivatives=False)
    if database_dir is None:
        return BIDSLayout(str(bids_dir), **kwargs)
    db = Path(database_dir) / _dataset_fingerprint(bids_dir)
    if not (db / "layout_index.sqlite").is_file():
        # Index into a private directory, then rename it into place: two runs sharing a work directory
        # never see a half-written database (the loser of the race drops its copy).
        db.parent.mkdir(parents=True, exist_ok=True)
        if db.is_dir():  # left by an interrupted index of an older version: no database inside
            shutil.rmtree(db, ignore_errors=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{db.name}.", dir=db.parent))
        try:
            BIDSLayout(str(bids_dir), database_path=str(partial), **kwargs)
            try:
                os.rename(partial, db)
            except OSError:
                if not (db / "layout_index.sqlite").is_file():
                    raise
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return BIDSLayout(str(bids_dir), database_path=str(db), reset_database=False, **kwargs)


def read_filter_file(path: str | os.PathLike) -> dict:
    """The pybids filters of a ``--bids-filter-file`` (a JSON object, e.g. ``{"acquisition": "sag"}``).

    Raises ValueError naming the file when it cannot be read or holds something else.
    """
    try:
        filters = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read BIDS filter file ({exc})") from exc
    if not isinstance(filters, dict):
        raise ValueError(f"{path}: BIDS filter file must hold a JSON object, e.g. {{\"acquisition\": \"sag\"}}")
    return filters


def _check_labels(labels: Sequence[str] | None, kind: str) -> None:
    for label in labels or []:
        if not _LABEL.match(label):
            raise ValueError(f"invalid {kind} label '{label}': labels contain only letters and digits")


def _split_filters(filters: dict, suffixes: Sequence[str]) -> tuple[dict, dict]:
    """Filters keyed by suffix (fMRIPrep style: {"t2w": {...}}) and global ones."""
    lowered = {s.lower(): s for s in suffixes}
    per_suffix = {lowered[k.lower()]: v for k, v in filters.items() if k.lower() in lowered and isinstance(v, dict)}
    global_ = {k: v for k, v in filters.items() if k.lower() not in lowered}
    return per_suffix, global_


def collect_images(
    bids_dir: Path,
    database_dir: Path | None,
    *,
    participant_label: Sequence[str] | None = None,
    session_label: Sequence[str] | None = None,
    suffixes: Sequence[str],
    filters: dict | None = None,
) -> dict[str, list[Path]]:
    """Anatomical images to process, grouped by subject label."""
    _check_labels(participant_label, "participant")
    _check_labels(session_label, "session")
    layout = load_layout(bids_dir, database_dir)
    available = set(layout.get_subjects())
    if participant_label:
        missing = sorted(set(participant_label) - available)
        if missing:
            raise LookupError(
                f"{bids_dir}: participant(s) {', '.join('sub-' + m for m in missing)} not found; "
                f"available: {', '.join('sub-' + s for s in sorted(available)) or 'none'}")
    per_suffix, global_ = _split_filters(filters or {}, suffixes)
    subjects: dict[str, list[Path]] = {}
    for suffix in suffixes:
        query = dict(datatype="anat", suffix=suffix, extension=[".nii", ".nii.gz"], return_type="file")
        query.update(global_)
        query.update(per_suffix.get(suffix, {}))
        if participant_label:
            query["subject"] = list(participant_label)
        if session_label:
            query["session"] = list(session_label)
        try:
            files = layout.get(**query)
        except (ValueError, KeyError) as exc:
            raise ValueError(f"invalid BIDS filter {query}: {exc}") from exc
        for f in files:
            sub = re.match(r"sub-([A-Za-z0-9]+)", Path(f).name).group(1)
            subjects.setdefault(sub, []).append(Path(f))
    return {s: sorted(set(v)) for s, v in sorted(subjects.items())}


def validate_dataset(bids_dir: Path) -> list[str]:
    """Errors of the BIDS validator (bids-validator-deno), tolerating the
    non-standard MS suffixes. Returns [] when the validator is not installed."""
    exe = shutil.which("bids-validator-deno") or shutil.which("bids-validator")
    if exe is None:
        LOGGER.warning("BIDS validator not installed (pip install bids-validator-deno); skipping validation")
        return []
    try:
        proc = subprocess.run([exe, "--format", "json", "--ignoreWarnings", str(bids_dir)], capture_output=True,
                              text=True, timeout=600)
        report = json.loads(proc.stdout)
    except (subprocess.TimeoutExpired, json.JSONDecodeError, OSError) as exc:
        LOGGER.warning("BIDS validator could not run (%s); skipping validation", exc)
        return []
    problems = []
    for issue in report.get("issues", {}).get("issues", []):
        if issue.get("severity") != "error":
            continue
        location = issue.get("location", "")
        if any(re.search(rf"_{s}\.(nii|json)", location) for s in NONSTANDARD_SUFFIXES):
            continue
        problems.append(f"{issue.get('code')}: {location}")
    return problems


#: How a disc-label file of an image is named in a derivatives folder: the image's name, then an entity or
#: suffix naming discs (SCT and spine-generic write ``<image>_labels-disc.nii.gz`` or ``_labels-disc-manual``).
_DISC_LABEL_NAME = re.compile(r"_(labels?-disc[A-Za-z0-9-]*|desc-disc[A-Za-z0-9-]*_dseg)\.nii(\.gz)?$")


def find_disc_labels(image: str | os.PathLike, bids_dir: str | os.PathLike,
                     derivative_dirs: Sequence[str | os.PathLike]) -> Path | None:
    """The user's disc-label file for ``image`` in the first derivatives folder holding one, or None.

    The file sits at the image's place in the folder (``sub-X[/ses-Y]/anat/``) and is named after it.
    Two candidates in one folder are refused (which one was meant cannot be told).
    """
    image = Path(image)
    stem = re.sub(r"\.nii(\.gz)?$", "", image.name)
    rel = Path(os.path.relpath(image.parent, bids_dir))
    for root in derivative_dirs:
        folder = Path(root) / rel
        if not folder.is_dir():
            continue
        found = sorted(p for p in folder.iterdir()
                       if p.name.startswith(stem + "_") and _DISC_LABEL_NAME.search(p.name[len(stem):]))
        found = [p for p in found if "posterior" not in p.name.lower()]
        if len(found) > 1:
            raise ValueError(f"{folder}: several disc-label files for {image.name} ({', '.join(p.name for p in found)});"
                             " keep one")
        if found:
            return found[0]
    return None
