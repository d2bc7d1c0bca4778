"""Group level: one row per subject/session/image from the participant outputs."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from .core.image import voxel_volume
from .core.morphometry import mean_csa
from .derivatives import SourceName, source_of_lesion_table
from .failures import all_failures
from .utils.io import tsv_text, write_json, write_text

GROUP_COLUMNS = ("participant_id", "session_id", "source", "suffix", "status", "n_lesions",
                 "total_lesion_volume_mm3", "cord_volume_mm3", "csa_c2c3_mm2", "levels", "failure_reason")
LEVEL_GROUP_COLUMNS = ("participant_id", "session_id", "source", "suffix", "vertebral_level", "n_lesions",
                       "lesion_volume_mm3", "csa_mean_mm2", "length_mm", "cord_volume_mm3")


def _read_tsv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def c2c3_csa(csa_table: Path) -> float | str:
    """Mean angle-corrected CSA over the slices at C2 and C3 (the usual atrophy measure); n/a without them."""
    return mean_csa((r.get("vertebral_level"), float(r["csa_mm2"])) for r in _read_tsv(csa_table))


def _failed_rows(out_dir: Path, participant_label, session_label) -> dict[str, dict]:
    """Rows of the images whose latest participant run failed, by source name (no extension)."""
    rows = {}
    for rec in all_failures(out_dir):
        image = SourceName(rec["image"], ".")
        ses = image.session
        if participant_label and image.subject not in participant_label:
            continue
        if session_label and (not ses or ses not in session_label):
            continue
        source = f"{image.entities}_{image.suffix}"
        rows[source] = {"participant_id": rec["participant_id"], "session_id": f"ses-{ses}" if ses else "n/a",
                        "source": source, "suffix": image.suffix, "status": "failed",
                        "n_lesions": "n/a", "total_lesion_volume_mm3": "n/a", "cord_volume_mm3": "n/a",
                        "csa_c2c3_mm2": "n/a", "levels": "n/a", "failure_reason": rec["reason"].replace("\t", " ").replace("\n", " ")}
    return rows


def collect_rows(out_dir: Path, participant_label: Sequence[str] | None = None,
                 session_label: Sequence[str] | None = None) -> list[dict]:
    """One row per image: its lesion summary, or, where its latest run failed, ``status = failed`` and why."""
    failed = _failed_rows(Path(out_dir), participant_label, session_label)
    rows = []
    for table in sorted(Path(out_dir).glob("sub-*/**/anat/*_lesions.tsv")):
        source = source_of_lesion_table(table, out_dir)
        sub, ses = source.subject, source.session or ""
        if participant_label and sub not in participant_label:
            continue
        if session_label and ses not in session_label:
            continue
        if f"{source.entities}_{source.suffix}" in failed:
            continue  # outputs of an earlier run; the latest one failed
        with open(table, newline="") as fh:
            lesions = list(csv.DictReader(fh, delimiter="\t"))
        outputs = source.outputs(out_dir)
        cord_file = outputs["cord_mask"]
        cord_volume = float("nan")
        if cord_file.exists():
            img = nib.load(str(cord_file))
            cord_volume = float(np.count_nonzero(np.asarray(img.dataobj)) * voxel_volume(img.affine))
        rows.append({
            "participant_id": f"sub-{sub}",
            "session_id": f"ses-{ses}" if ses else "n/a",
            "source": f"{source.entities}_{source.suffix}",
            "suffix": source.suffix,
            "status": "ok",
            "n_lesions": len(lesions),
            "total_lesion_volume_mm3": round(sum(float(r["volume_mm3"]) for r in lesions), 2),
            "cord_volume_mm3": round(cord_volume, 2),
            "csa_c2c3_mm2": c2c3_csa(outputs["csa_table"]),
            "levels": _level_span(outputs["level_table"]),
            "failure_reason": "n/a",
            "_level_table": outputs["level_table"],  # not a column: for the per-level table
        })
    rows.extend(failed.values())
    return sorted(rows, key=lambda r: (r["participant_id"], r["session_id"], r["source"]))


def _level_span(level_table: Path) -> str:
    rows = _read_tsv(level_table)
    return f"{rows[0]['vertebral_level']}-{rows[-1]['vertebral_level']}" if rows else "n/a"


def collect_level_rows(rows: list[dict]) -> list[dict]:
    """Per image and vertebral level: lesions (by centroid), mean CSA, length and cord volume."""
    out = []
    for row in rows:
        if row["status"] != "ok":
            continue
        for level in _read_tsv(row["_level_table"]):
            out.append({**{k: row[k] for k in ("participant_id", "session_id", "source", "suffix")},
                        **{k: level[k] for k in LEVEL_GROUP_COLUMNS[4:]}})
    return out


def write_group_table(out_dir: Path, participant_label=None,
                      session_label=None) -> tuple[Path, list[dict], list[dict]]:
    """``group_lesions.tsv`` and ``group_levels.tsv`` (with sidecars); returns the first's path, its rows and
    the per-level rows (each image's tables are read once, here)."""
    rows = collect_rows(out_dir, participant_label, session_label)
    target = Path(out_dir) / "group_lesions.tsv"
    write_text(tsv_text(rows, GROUP_COLUMNS), target)
    write_json({
        "participant_id": {"Description": "Subject label"},
        "session_id": {"Description": "Session label, n/a without sessions"},
        "source": {"Description": "Source image name without extension"},
        "suffix": {"Description": "Contrast of the source image"},
        "status": {"Description": "Outcome of the latest participant run on this image",
                   "Levels": {"ok": "processed; the lesion columns hold its results",
                              "failed": "no result; failure_reason says why (the lesion columns are n/a)"}},
        "n_lesions": {"Description": "Number of lesions (26-connected components) in the cord"},
        "total_lesion_volume_mm3": {"Description": "Sum of lesion volumes", "Units": "mm^3"},
        "cord_volume_mm3": {"Description": "Volume of the cord mask analysed", "Units": "mm^3"},
        "csa_c2c3_mm2": {"Description": "Mean cord cross-sectional area over the slices at the C2 and C3 "
                                        "vertebral levels, angle-corrected; n/a when the image has no level there",
                         "Units": "mm^2"},
        "levels": {"Description": "Vertebral levels the image's cord covers (n/a: none could be given)"},
        "failure_reason": {"Description": "Why the latest participant run on this image failed (n/a if it did not)"},
    }, target.with_suffix(".json"))
    levels_target = Path(out_dir) / "group_levels.tsv"
    level_rows = collect_level_rows(rows)
    write_text(tsv_text(level_rows, LEVEL_GROUP_COLUMNS), levels_target)
    write_json({
        "Description": "One row per image and vertebral level (images without levels have no row)",
        "vertebral_level": {"Description": "C1 ... C7, T1 ... (SCT numbering)"},
        "n_lesions": {"Description": "Lesions whose centroid lies in the level"},
        "lesion_volume_mm3": {"Description": "Their total volume", "Units": "mm^3"},
        "csa_mean_mm2": {"Description": "Mean angle-corrected cord cross-sectional area", "Units": "mm^2"},
        "length_mm": {"Description": "Length of the level along the cord in the image", "Units": "mm"},
        "cord_volume_mm3": {"Description": "Cord volume in the level", "Units": "mm^3"},
    }, levels_target.with_suffix(".json"))
    return target, rows, level_rows


CHANGE_COLUMNS = ("participant_id", "image", "session_earlier", "session_later", "status", "earlier_volume_mm3",
                  "later_volume_mm3", "position_mm", "earlier_components", "later_components")
LONGITUDINAL_COLUMNS = ("participant_id", "image", "session_earlier", "session_later", "shift_mm", "n_new",
                        "n_enlarging", "n_stable", "n_shrinking", "n_disappeared", "csa_c2c3_earlier_mm2",
                        "csa_c2c3_later_mm2", "csa_c2c3_change_percent")


def session_pairs(out_dir: Path, participant_label=None) -> list[tuple[str, str, Path, Path]]:
    """(subject, image key, earlier table, later table) for consecutive sessions of the same image kind.

    The image key is the source name without subject and session (e.g.
    ``acq-sag_T2w``): only like is compared with like.
    """
    by_key: dict[tuple[str, str], list[tuple[str, Path]]] = {}
    for table in sorted(Path(out_dir).glob("sub-*/ses-*/anat/*_lesions.tsv")):
        source = source_of_lesion_table(table, out_dir)
        if participant_label and source.subject not in participant_label:
            continue
        rest = [p for p in source.entities.split("_")[1:] if not p.startswith("ses-")]
        key = "_".join(rest + [source.suffix])
        by_key.setdefault((source.subject, key), []).append((source.session or "", table))
    pairs = []
    for (subject, key), items in sorted(by_key.items()):
        items.sort()
        for (_, a), (_, b) in zip(items, items[1:]):
            pairs.append((subject, key, a, b))
    return pairs


def _session_arrays(table: Path, out_dir: Path, bids_dir: Path):
    source = source_of_lesion_table(table, out_dir)
    raw = Path(bids_dir) / source.relpath
    outputs = source.outputs(out_dir)
    arrays = []
    for path in (raw, outputs["cord_mask"], outputs["lesion_mask"]):
        img = nib.as_closest_canonical(nib.load(str(path)))
        arrays.append(np.asarray(img.dataobj, np.float32))
    return arrays[0], arrays[1] > 0, arrays[2] > 0, img.affine, source.session


def longitudinal_changes(out_dir: Path, bids_dir: Path, participant_label=None) -> tuple[list[dict], list[dict], list[str]]:
    """Lesion changes between consecutive sessions of every subject (rows of both tables, and problems)."""
    from .core.longitudinal import compare_sessions, count_changes

    changes, summary, problems = [], [], []
    for subject, key, earlier, later in session_pairs(out_dir, participant_label):
        try:
            a = _session_arrays(earlier, out_dir, bids_dir)
            b = _session_arrays(later, out_dir, bids_dir)
            found, shift_mm = compare_sessions(a[:4], b[:4])
        except Exception as exc:  # one pair must not stop the others
            problems.append(f"sub-{subject} {key}: sessions {earlier.name} and {later.name} not compared ({exc})")
            continue
        ses_a, ses_b = f"ses-{a[4]}", f"ses-{b[4]}"
        for change in found:
            changes.append({"participant_id": f"sub-{subject}", "image": key, "session_earlier": ses_a,
                            "session_later": ses_b, **change.as_row()})
        counts = count_changes(found)
        csa_a = c2c3_csa(source_of_lesion_table(earlier, out_dir).outputs(out_dir)["csa_table"])
        csa_b = c2c3_csa(source_of_lesion_table(later, out_dir).outputs(out_dir)["csa_table"])
        change = round(100.0 * (csa_b - csa_a) / csa_a, 2) if "n/a" not in (csa_a, csa_b) else "n/a"
        summary.append({"participant_id": f"sub-{subject}", "image": key, "session_earlier": ses_a,
                        "session_later": ses_b, "shift_mm": round(float(shift_mm), 1),
                        **{f"n_{k}": v for k, v in counts.items()}, "csa_c2c3_earlier_mm2": csa_a,
                        "csa_c2c3_later_mm2": csa_b, "csa_c2c3_change_percent": change})
    return changes, summary, problems


def write_longitudinal_tables(out_dir: Path, bids_dir: Path, participant_label=None) -> tuple[list[dict], list[str]]:
    changes, summary, problems = longitudinal_changes(out_dir, bids_dir, participant_label)
    if not summary:
        return summary, problems
    out_dir = Path(out_dir)
    write_text(tsv_text(changes, CHANGE_COLUMNS), out_dir / "group_lesion_changes.tsv")
    write_json({
        "Description": "Lesions matched between consecutive sessions of the same image kind, after registration "
                       "of the straightened cords (shift along the cord by normalised cross-correlation); lesions "
                       "whose dilated masks overlap form one group",
        "status": {"Description": "new: no earlier lesion; disappeared: no later lesion; enlarging: later volume "
                                  ">= 1.5 x earlier; shrinking: <= earlier / 1.5; stable otherwise. Only the part "
                                  "of the cord covered by both sessions is compared"},
        "earlier_volume_mm3": {"Description": "Volume in the earlier session (straightened grid)", "Units": "mm^3"},
        "later_volume_mm3": {"Description": "Volume in the later session (straightened grid)", "Units": "mm^3"},
        "position_mm": {"Description": "Along the cord from the top of the later (for disappeared lesions, the "
                                       "earlier) session's cord", "Units": "mm"},
        "earlier_components": {"Description": "Connected lesions of the earlier session in this group"},
        "later_components": {"Description": "Connected lesions of the later session in this group"},
    }, out_dir / "group_lesion_changes.json")
    write_text(tsv_text(summary, LONGITUDINAL_COLUMNS), out_dir / "group_longitudinal.tsv")
    write_json({
        "Description": "Per subject and pair of consecutive sessions: lesion changes (see group_lesion_changes.json)",
        "shift_mm": {"Description": "Displacement along the cord between the sessions' straightened cords found "
                                    "by the registration", "Units": "mm"},
        "csa_c2c3_earlier_mm2": {"Description": "Mean C2-C3 cord CSA, earlier session", "Units": "mm^2"},
        "csa_c2c3_later_mm2": {"Description": "Mean C2-C3 cord CSA, later session", "Units": "mm^2"},
        "csa_c2c3_change_percent": {"Description": "(later - earlier) / earlier x 100; n/a when either session "
                                                   "has no C2-C3 level", "Units": "%"},
    }, out_dir / "group_longitudinal.json")
    return summary, problems
