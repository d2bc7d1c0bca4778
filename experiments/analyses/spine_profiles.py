#!/usr/bin/env python
"""The profile the disc finder reads (the band in front of the cord), side by side: the PAM50 template, a real
3D T2w of ../shared/data/sct-t2w-bids (its manual cord), and one phantom drawn with the default vertebrae and
with ``--realistic-spine``, each aligned on its C2/C3 disc (the template's label; the phantoms' drawn disc;
the real image's matched one).

Usage:
  python experiments/analyses/spine_profiles.py OUT.png [--shared ../shared/data] [--seed 1002] [--contrast T2w]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from bids_sclesion.core import vertebrae as V  # noqa: E402
from bids_sclesion.core.centerline import extract_centerline  # noqa: E402
from bids_sclesion.core.image import to_canonical  # noqa: E402
from bids_sclesion.phantoms import random_acquisition, random_anatomy, render_image  # noqa: E402
from bids_sclesion.phantoms.spine import REALISTIC_SPINE_STREAM, random_real_spine  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def _profile(image: np.ndarray, affine: np.ndarray, cord: np.ndarray):
    centerline = extract_centerline(cord.astype(np.float32), affine)
    extended = V.extend_centerline(centerline)
    return centerline, extended, V.normalise_profile(V.anterior_profile(image, affine, extended), centerline.step_mm)


def phantom_profile(seed: int, contrast: str, realistic: bool):
    rng = np.random.default_rng(seed)
    anatomy = random_anatomy(rng, brainstem=True, fov_top=110.0)
    if realistic:
        anatomy.spine = random_real_spine(np.random.default_rng([seed, REALISTIC_SPINE_STREAM]), len(anatomy.disc_z))
    acq = random_acquisition(rng, contrast, anatomy, 110.0)
    image, cord_img = render_image(rng, anatomy, acq)[:2]
    _, extended, profile = _profile(np.asarray(image.dataobj, np.float32), image.affine,
                                    np.asarray(cord_img.dataobj) > 0)
    z = extended.points[:, 2] - acq.shift[2]
    s = np.arange(len(profile)) * extended.step_mm
    at = lambda height: s[int(np.argmin(np.abs(z - height)))]  # noqa: E731
    origin = at(anatomy.disc_z[0])
    return s - origin, profile, [at(d) - origin for d in anatomy.disc_z], at(anatomy.foramen_z) - origin


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out", type=Path)
    p.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data")
    p.add_argument("--seed", type=int, default=1002)
    p.add_argument("--contrast", default="T2w")
    p.add_argument("--subject", default="errsm18")
    args = p.parse_args()
    template = V.disc_template()
    fig, axes = plt.subplots(4, 1, figsize=(11, 10), sharex=True)
    u = np.arange(len(template["profile"])) * template["step_mm"] - template["discs"][3]
    axes[0].plot(u, template["profile"], "k")
    for d in template["discs"].values():
        axes[0].axvline(d - template["discs"][3], color="r", lw=0.6)
    axes[0].set_title("PAM50 template (T2w), its disc labels")
    sub = args.subject
    base = args.shared / "sct-t2w-bids"
    image = to_canonical(nib.load(str(base / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w.nii.gz")))
    cord = to_canonical(nib.load(str(base / "derivatives" / "labels" / f"sub-{sub}" / "anat"
                                     / f"sub-{sub}_T2w_seg-manual.nii.gz")))
    data = np.asarray(image.dataobj, np.float32)
    centerline, _, profile = _profile(data, image.affine, np.asarray(cord.dataobj) > 0.5)
    match = V.find_discs(data, image.affine, centerline)
    found = {d.label: d.position_mm for d in match.discs}
    axes[1].plot(np.arange(len(profile)) * centerline.step_mm - found[3], profile, "b")
    for d in found.values():
        axes[1].axvline(d - found[3], color="r", lw=0.6)
    axes[1].set_title(f"real 3D T2w (sct-t2w sub-{sub}, manual cord), the discs found (correlation {match.correlation})")
    for ax, realistic, name in ((axes[2], False, "default vertebrae"), (axes[3], True, "--realistic-spine")):
        s, prof, discs, foramen = phantom_profile(args.seed, args.contrast, realistic)
        ax.plot(s, prof, "b")
        for d in discs:
            ax.axvline(d, color="r", lw=0.6)
        ax.axvline(foramen, color="g", lw=1.0)
        ax.set_title(f"phantom (seed {args.seed}, {args.contrast}), {name}: drawn discs (red), foramen magnum (green)")
    axes[-1].set_xlim(-200, 100)
    axes[-1].set_xlabel("mm along the cord from the C2/C3 disc (superior to the right)")
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
