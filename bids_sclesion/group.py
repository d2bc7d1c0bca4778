"""Group level: one row per subject/session/image from the participant outputs."""
from __future__ import annotations

import csv
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np

from .derivatives import source_of_lesion_table
from .utils.io import write_json, write_text

GROUP_COLUMNS = ("participant_id", "session_id", "source", "suffix", "n_lesions", "total_lesion_volume_mm3",
                 "cord_volume_mm3")


def collect_rows(out_dir: Path, participant_label: Sequence[str] | None = None,
                 session_label: Sequence[str] | None = None) -> list[dict]:
    rows = []
    for table in sorted(Path(out_dir).glob("sub-*/**/anat/*_lesions.tsv")):
        source = source_of_lesion_table(table, out_dir)
        sub, ses = source.subject, source.session or ""
        if participant_label and sub not in participant_label:
            continue
        if session_label and ses not in session_label:
            continue
        with open(table, newline="") as fh:
            lesions = list(csv.DictReader(fh, delimiter="\t"))
        cord_file = source.outputs(out_dir)["cord_mask"]
        cord_volume = float("nan")
        if cord_file.exists():
            img = nib.load(str(cord_file))
            cord_volume = float(np.count_nonzero(np.asarray(img.dataobj)) * abs(np.linalg.det(img.affine[:3, :3])))
        rows.append({
            "participant_id": f"sub-{sub}",
            "session_id": f"ses-{ses}" if ses else "n/a",
            "source": f"{source.entities}_{source.suffix}",
            "suffix": source.suffix,
            "n_lesions": len(lesions),
            "total_lesion_volume_mm3": round(sum(float(r["volume_mm3"]) for r in lesions), 2),
            "cord_volume_mm3": round(cord_volume, 2),
        })
    return rows


def write_group_table(out_dir: Path, participant_label=None, session_label=None) -> tuple[Path, int]:
    rows = collect_rows(out_dir, participant_label, session_label)
    text = "\t".join(GROUP_COLUMNS) + "\n" + "".join("\t".join(str(r[c]) for c in GROUP_COLUMNS) + "\n" for r in rows)
    target = Path(out_dir) / "group_lesions.tsv"
    write_text(text, target)
    write_json({
        "participant_id": {"Description": "Subject label"},
        "session_id": {"Description": "Session label, n/a without sessions"},
        "source": {"Description": "Source image name without extension"},
        "suffix": {"Description": "Contrast of the source image"},
        "n_lesions": {"Description": "Number of lesions (26-connected components) in the cord"},
        "total_lesion_volume_mm3": {"Description": "Sum of lesion volumes", "Units": "mm^3"},
        "cord_volume_mm3": {"Description": "Volume of the cord mask analysed", "Units": "mm^3"},
    }, target.with_suffix(".json"))
    return target, len(rows)
