"""Write the vertebral template the app numbers discs with (bids_sclesion/data/vertebrae/).

From the PAM50 template (T2-weighted image, cord mask and disc labels at 1 x 1 x 2 mm, as in
../shared/data/sct-examples/template): the band in front of the cord, sampled every 1 mm along the
cord's centreline and 60 mm above it, normalised as the app normalises each image's profile, and the
position of each disc label along it.

    python scripts/make_disc_template.py [PAM50_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.core.centerline import extract_centerline
from bids_sclesion.core.vertebrae import (BAND_ANTERIOR_MM, BAND_HALF_WIDTH_MM, EXTENSION_MM, NORMALISE_WINDOW_MM,
                                          TEMPLATE_FILE, anterior_profile, extend_centerline, normalise_profile)
from bids_sclesion.utils.io import write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "sct-examples" / "template" / "template"


def main(pam50_dir: Path = DEFAULT) -> Path:
    load = lambda name: nib.load(str(pam50_dir / f"PAM50_small_{name}.nii.gz"))  # noqa: E731
    t2, cord, disc = load("t2"), load("cord"), load("label_disc")
    centerline = extract_centerline(np.asarray(cord.dataobj, np.float32), cord.affine, step_mm=1.0)
    extended = extend_centerline(centerline)
    profile = normalise_profile(anterior_profile(np.asarray(t2.dataobj, np.float32), t2.affine, extended))
    labels = np.asarray(disc.dataobj)
    discs = {}
    for value in np.unique(labels[labels > 0]):
        point = disc.affine[:3, :3] @ np.argwhere(labels == value).mean(axis=0) + disc.affine[:3, 3]
        k = int(np.argmin(np.linalg.norm(centerline.points - point, axis=1)))
        discs[str(int(value))] = round(k * centerline.step_mm + float((point - centerline.points[k])
                                                                       @ centerline.tangents[k]), 2)
    target = ROOT / "bids_sclesion" / "data" / "vertebrae" / TEMPLATE_FILE
    write_json({
        "Description": "Normalised intensity profile of the band in front of the cord along the PAM50 template's "
                       "centreline (1 mm steps from its inferior end, continued above the cord), and the position "
                       "of each disc label along it (SCT numbering: 3 = C2/C3)",
        "Source": "PAM50 template (De Leener et al., NeuroImage 2018), PAM50_small_t2/cord/label_disc from the "
                  "Spinal Cord Toolbox testing data (1 x 1 x 2 mm)",
        "Made": "scripts/make_disc_template.py",
        "band_anterior_mm": list(BAND_ANTERIOR_MM), "band_half_width_mm": BAND_HALF_WIDTH_MM,
        "extension_mm": EXTENSION_MM, "normalise_window_mm": NORMALISE_WINDOW_MM,
        "step_mm": 1.0,
        "discs": discs,
        "profile": [None if not np.isfinite(v) else round(float(v), 4) for v in profile],
    }, target)
    print(f"wrote {target}: {len(profile)} samples, discs {discs}")
    return target


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT)
