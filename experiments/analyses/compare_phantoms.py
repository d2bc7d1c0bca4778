#!/usr/bin/env python
"""Render synthetic phantoms beside real images of ../shared/data (one figure).

Usage: python experiments/analyses/compare_phantoms.py SYNTH_BIDS_DIR [REAL_DATA_DIR] [OUT_PNG]
"""
from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import nibabel as nib
import numpy as np


def _ras(path: Path) -> tuple[np.ndarray, np.ndarray]:
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, dtype=np.float32), np.asarray(img.header.get_zooms()[:3])


def _slice(data: np.ndarray, zooms: np.ndarray, mask: np.ndarray | None, plane: str):
    if plane == "sagittal":
        if mask is not None and mask.any():
            i = int(np.round(np.nonzero(mask)[0].mean()))
        else:
            i = data.shape[0] // 2
        return data[i].T, zooms[2] / zooms[1]
    k = data.shape[2] // 2
    if mask is not None and mask.any():
        k = int(np.median(np.nonzero(mask)[2]))
    return data[:, :, k].T, zooms[1] / zooms[0]


def main(argv: list[str]) -> int:
    synth = Path(argv[1])
    real = Path(argv[2]) if len(argv) > 2 else Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
    out = Path(argv[3]) if len(argv) > 3 else Path("docs/figures/phantoms_vs_real.png")
    panels = []
    for contrast, plane in [("T2w", "sagittal"), ("T1w", "sagittal"), ("STIR", "sagittal"), ("PSIR", "sagittal"), ("T2starw", "axial")]:
        files = sorted(synth.glob(f"sub-*/**/anat/*_{contrast}.nii.gz"))
        if files:
            img = files[0]
            seg = sorted(synth.glob(f"derivatives/labels/**/{img.name.replace('.nii.gz', '_lesion-manual.nii.gz')}"))
            data, zooms = _ras(img)
            mask = _ras(seg[0])[0] > 0 if seg else None
            if mask is not None and not mask.any():
                mask = _ras(Path(str(seg[0]).replace("_lesion-manual", "_seg-manual")))[0] > 0
            panels.append((f"synthetic {contrast}", *_slice(data, zooms, mask, plane)))
    reals = [
        ("real T2w (sct-t2w-bids)", "sct-t2w-bids/sub-errsm11/anat/sub-errsm11_T2w.nii.gz", "sct-t2w-bids/derivatives/labels/sub-errsm11/anat/sub-errsm11_T2w_seg-manual.nii.gz", "sagittal"),
        ("real T1w (sct-examples)", "sct-examples/t1/t1w.nii.gz", "sct-examples/t1/t1w_seg-manual.nii.gz", "sagittal"),
        ("real T2*w (gm-challenge)", "gm-challenge-bids/sub-9604/anat/sub-9604_run-1_T2starw.nii.gz", "gm-challenge-bids/derivatives/labels/sub-9604/anat/sub-9604_run-1_T2starw_seg-manual.nii.gz", "axial"),
        ("real T2*w (sct-t2w-bids)", "sct-t2w-bids/sub-errsm18/anat/sub-errsm18_T2starw.nii.gz", "sct-t2w-bids/derivatives/labels/sub-errsm18/anat/sub-errsm18_T2starw_seg-manual.nii.gz", "axial"),
    ]
    for title, img, seg, plane in reals:
        if (real / img).exists():
            data, zooms = _ras(real / img)
            mask = _ras(real / seg)[0] > 0
            panels.append((title, *_slice(data, zooms, mask, plane)))
    n = len(panels)
    fig, axes = plt.subplots(2, (n + 1) // 2, figsize=(4 * ((n + 1) // 2), 8))
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, sl, aspect) in zip(axes.ravel(), panels):
        lo, hi = np.percentile(sl, [0.5, 99.5])
        ax.imshow(sl, cmap="gray", origin="lower", aspect=aspect, vmin=lo, vmax=hi)
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=80)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
