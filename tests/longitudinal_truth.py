"""Ground truth of lesion changes between sessions of a synthetic dataset (from the generator's sidecars)."""
from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np


def _visible_z(bids: Path, stem_dir: Path, stem: str) -> tuple[np.ndarray, np.ndarray, float]:
    """Subject-frame z (mm) of lesion voxels and of cord voxels of one image."""
    raw = json.loads((bids / stem_dir / f"{stem}.json").read_text())
    shift_z = raw["PhantomAcquisition"]["shift"][2]
    out = []
    for label in ("lesion-manual", "seg-manual"):
        img = nib.load(str(bids / "derivatives" / "labels" / stem_dir / f"{stem}_{label}.nii.gz"))
        ijk = np.argwhere(np.asarray(img.dataobj) > 0)
        out.append((ijk @ img.affine[:3, :3].T + img.affine[:3, 3])[:, 2] - shift_z)
    return out[0], out[1], shift_z


def expected_changes(bids: Path, subject: str, suffix: str, ses_a: str = "01", ses_b: str = "02") -> dict[str, int]:
    """Counts of new/enlarging/stable/shrinking/disappeared lesions the masks can show.

    A lesion counts when it lies in the part of the cord both images cover
    and has voxels in the mask of the session(s) its status needs.
    """
    info = {}
    for ses in (ses_a, ses_b):
        stem_dir = Path(f"sub-{subject}") / f"ses-{ses}" / "anat"
        stem = f"sub-{subject}_ses-{ses}_{suffix}"
        lesion_z, cord_z, _ = _visible_z(bids, stem_dir, stem)
        meta = json.loads((bids / "derivatives" / "labels" / stem_dir / f"{stem}_lesion-manual.json").read_text())
        info[ses] = (lesion_z, cord_z, {les["lesion_id"]: les for les in meta["Lesions"]})
    lo = max(info[ses_a][1].min(), info[ses_b][1].min())
    hi = min(info[ses_a][1].max(), info[ses_b][1].max())

    def seen(ses, les):
        z = info[ses][0]
        return bool(np.any(np.abs(z - les["z_mm"]) <= les["half_length_mm"] + 1.0))

    counts = {k: 0 for k in ("new", "enlarging", "stable", "shrinking", "disappeared")}
    ids = set(info[ses_a][2]) | set(info[ses_b][2])
    for lid in ids:
        before, after = info[ses_a][2].get(lid), info[ses_b][2].get(lid)
        les = after or before
        if not lo + 3 <= les["z_mm"] <= hi - 3:
            continue
        if after is None:
            counts["disappeared"] += seen(ses_a, before)
        elif after["status"] == "new":
            counts["new"] += seen(ses_b, after)
        elif seen(ses_a, before) and seen(ses_b, after):
            counts[after["status"]] += 1
        elif seen(ses_b, after):
            counts["new"] += 1  # too small to show in the earlier mask
        elif seen(ses_a, before):
            counts["disappeared"] += 1
    return counts
