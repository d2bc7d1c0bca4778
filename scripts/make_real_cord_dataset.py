#!/usr/bin/env python
"""Gather the real images of ../shared/data that have a cord mask into one BIDS
training layout (symbolic links, nothing copied into the repository).

Usage: python scripts/make_real_cord_dataset.py OUT_DIR [SHARED_DATA_DIR]

Writes ``OUT_DIR/sub-*/anat/*`` and ``OUT_DIR/derivatives/labels/...*_seg-manual``
plus ``participants.tsv`` whose ``source`` column names the original
collection, so that cross-validation can hold out a whole collection
(scanner, site and protocol) at a time. The PAM50 template image is listed
with source ``template``: it is anatomy averaged over many people, used for
training only, never for evaluation.
"""
from __future__ import annotations

import sys
from pathlib import Path

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# (source, subject, suffix stem, image path, cord mask path) relative to the shared data folder.
CASES = [
    ("sct-t2w", "errsm11", "T2w", "sct-t2w-bids/sub-errsm11/anat/sub-errsm11_T2w.nii.gz",
     "sct-t2w-bids/derivatives/labels/sub-errsm11/anat/sub-errsm11_T2w_seg-manual.nii.gz"),
    ("sct-t2w", "errsm18", "T2w", "sct-t2w-bids/sub-errsm18/anat/sub-errsm18_T2w.nii.gz",
     "sct-t2w-bids/derivatives/labels/sub-errsm18/anat/sub-errsm18_T2w_seg-manual.nii.gz"),
    ("sct-t2w", "errsm18", "T2starw", "sct-t2w-bids/sub-errsm18/anat/sub-errsm18_T2starw.nii.gz",
     "sct-t2w-bids/derivatives/labels/sub-errsm18/anat/sub-errsm18_T2starw_seg-manual.nii.gz"),
    ("sct-t2w", "errsm21", "T2w", "sct-t2w-bids/sub-errsm21/anat/sub-errsm21_T2w.nii.gz",
     "sct-t2w-bids/derivatives/labels/sub-errsm21/anat/sub-errsm21_T2w_seg-manual.nii.gz"),
    ("sct-t2w", "errsm23", "T2w", "sct-t2w-bids/sub-errsm23/anat/sub-errsm23_T2w.nii.gz",
     "sct-t2w-bids/derivatives/labels/sub-errsm23/anat/sub-errsm23_T2w_seg-manual.nii.gz"),
    ("gm-challenge", "9418", "run-1_T2starw", "gm-challenge-bids/sub-9418/anat/sub-9418_run-1_T2starw.nii.gz",
     "gm-challenge-bids/derivatives/labels/sub-9418/anat/sub-9418_run-1_T2starw_seg-manual.nii.gz"),
    ("gm-challenge", "9584", "run-1_T2starw", "gm-challenge-bids/sub-9584/anat/sub-9584_run-1_T2starw.nii.gz",
     "gm-challenge-bids/derivatives/labels/sub-9584/anat/sub-9584_run-1_T2starw_seg-manual.nii.gz"),
    ("gm-challenge", "9604", "run-1_T2starw", "gm-challenge-bids/sub-9604/anat/sub-9604_run-1_T2starw.nii.gz",
     "gm-challenge-bids/derivatives/labels/sub-9604/anat/sub-9604_run-1_T2starw_seg-manual.nii.gz"),
    ("spine-mini", "unf01", "T1w", "spine-mini-bids/sub-unf01/anat/sub-unf01_T1w.nii.gz",
     "spine-mini-bids/derivatives/labels/sub-unf01/anat/sub-unf01_T1w_seg-manual.nii.gz"),
    ("spine-mini", "unf01", "T2w", "spine-mini-bids/sub-unf01/anat/sub-unf01_T2w.nii.gz",
     "spine-mini-bids/derivatives/labels/sub-unf01/anat/sub-unf01_T2w_seg-manual.nii.gz"),
    ("spine-mini", "unf01", "T2starw", "spine-mini-bids/sub-unf01/anat/sub-unf01_T2star.nii.gz",
     "spine-mini-bids/derivatives/labels/sub-unf01/anat/sub-unf01_T2star_seg-manual.nii.gz"),
    ("sct-examples", "sctex", "T1w", "sct-examples/t1/t1w.nii.gz", "sct-examples/t1/t1w_seg-manual.nii.gz"),
    ("sct-examples", "sctex", "acq-MTon_MTS", "sct-examples/mt/mt1.nii.gz", "sct-examples/mt/mt1_seg.nii.gz"),
    ("sct-examples", "sctex", "acq-MToff_MTS", "sct-examples/mt/mt0.nii.gz", "sct-examples/mt/mt0_seg.nii.gz"),
    ("template", "pam50", "T2w", "sct-examples/template/template/PAM50_small_t2.nii.gz",
     "sct-examples/template/template/PAM50_small_cord.nii.gz"),
]


def build(out_dir: Path, shared: Path = SHARED) -> list[tuple[str, str, Path]]:
    """Create the layout; returns (source, subject, image link) for every case found."""
    made = []
    sources: dict[str, str] = {}
    for source, subject, stem, image, mask in CASES:
        image, mask = shared / image, shared / mask
        if not (image.exists() and mask.exists()):
            print(f"skipping {image}: image or mask missing", file=sys.stderr)
            continue
        name = f"sub-{subject}_{stem}"
        anat = out_dir / f"sub-{subject}" / "anat"
        labels = out_dir / "derivatives" / "labels" / f"sub-{subject}" / "anat"
        for folder in (anat, labels):
            folder.mkdir(parents=True, exist_ok=True)
        for link, target in ((anat / f"{name}.nii.gz", image), (labels / f"{name}_seg-manual.nii.gz", mask)):
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(target.resolve())
        sources[f"sub-{subject}"] = source
        made.append((source, f"sub-{subject}", anat / f"{name}.nii.gz"))
    rows = ["participant_id\tsource"] + [f"{s}\t{src}" for s, src in sorted(sources.items())]
    (out_dir / "participants.tsv").write_text("\n".join(rows) + "\n")
    (out_dir / "dataset_description.json").write_text(
        '{"Name": "real spinal cord images with manual cord masks", "BIDSVersion": "1.9.0"}\n')
    return made


def main(argv: list[str]) -> int:
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    shared = Path(argv[2]) if len(argv) > 2 else SHARED
    made = build(Path(argv[1]), shared)
    for source, subject, path in made:
        print(f"{source}\t{subject}\t{path.name}")
    return 0 if made else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
