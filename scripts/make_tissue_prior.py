"""Write the grey/white matter cross-section stage 2 may take as input (bids_sclesion/data/priors/).

From the PAM50 template at 0.5 mm (../shared/data/pam50/template: grey and white matter probabilities,
cord mask, vertebral levels): the mean cross-section over the slices of vertebral levels C2 to T1, each
slice resampled onto coordinates normalised by its cord's centre and semi-axes
(bids_sclesion.core.tissue_prior.template_from_maps).

    python scripts/make_tissue_prior.py [PAM50_TEMPLATE_DIR]
"""
from __future__ import annotations

import sys
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.core.tissue_prior import bundled_template_path, template_from_maps
from bids_sclesion.utils.io import write_json

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = ROOT.parent / "shared" / "data" / "pam50" / "template"
#: PAM50 vertebral level values averaged over: C2 (2) to T1 (8), the levels most clinical scans cover.
LEVELS = range(2, 9)


def main(template_dir: Path = DEFAULT) -> Path:
    load = lambda name: nib.load(str(template_dir / f"PAM50_{name}.nii.gz"))  # noqa: E731
    grey, white, cord, levels = load("gm"), load("wm"), load("cord"), load("levels")
    level_map = np.asarray(levels.dataobj)
    slices = np.flatnonzero(np.isin(level_map, list(LEVELS)).any(axis=(0, 1)))
    template = template_from_maps(np.asarray(grey.dataobj, np.float32), np.asarray(white.dataobj, np.float32),
                                  np.asarray(cord.dataobj, np.float32), cord.affine, slices,
                                  source="PAM50 (De Leener et al., NeuroImage 2018) gm/wm/cord/levels at 0.5 mm, "
                                         f"mean over {len(slices)} slices of C2-T1")
    target = bundled_template_path()
    write_json(dict(template.to_dict(), Made="scripts/make_tissue_prior.py",
                    Description="Grey (grey) and white (white) matter probability of the mean cord cross-section, "
                                "x (first index) towards the right, y (second) towards anterior, both in units of "
                                "the cord's semi-axes from its centre, from -extent to +extent"), target)
    return target


if __name__ == "__main__":
    print(main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT))
