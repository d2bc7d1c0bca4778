"""The image folders of a cascade run's work directory that the stage-2 analyses rerun from, and the inputs of an
image's post-processing node (its probability maps) that the re-thresholding analyses read."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator


def straightened_work_folders(work_dir: str | Path) -> Iterator[tuple[str, str, Path]]:
    """(subject, image suffix, folder) of each image workflow in a cascade run's work directory
    that kept its straightened image (``segment_straightened_cord/straight_image.nii.gz``) and
    warps (``straightening_warps``).

    The folder name gives the subject and the suffix only; the caller finds the image.
    """
    for folder in sorted(Path(work_dir).glob("bids_sclesion_wf/single_subject_*_wf/anat_sub_*_wf")):
        if not (folder / "segment_straightened_cord/straight_image.nii.gz").exists():
            continue
        parts = folder.name[len("anat_"):-len("_wf")].split("_")  # sub, label, [entities...], suffix
        yield f"sub-{parts[1]}", parts[-1], folder


def work_warp(folder: Path, name: str) -> Path:
    """A straightening field (``to_straight_xfm`` or ``to_orig_xfm``) of an image folder: ``.nii`` since
    0.2.0's work folders, ``.nii.gz`` in older ones."""
    warps = Path(folder) / "straightening_warps"
    plain = warps / f"{name}.nii"
    return plain if plain.exists() else warps / f"{name}.nii.gz"


def lesion_label_file(bids_dir: str | Path, subject: str, suffix: str, label: str = "lesion-manual"):
    """The one ``<subject>_*<suffix>_<label>.nii.gz`` of ``bids_dir``'s labels, or None when there is none or
    several (sessions or runs of one suffix: the work folder name does not tell them apart)."""
    labels = sorted((Path(bids_dir) / "derivatives" / "labels" / subject).glob(f"**/{subject}_*{suffix}_{label}.nii.gz"))
    return labels[0] if len(labels) == 1 else None


def postprocess_inputs(work_dir: str | Path, image: str | Path) -> dict | None:
    """The inputs of ``image``'s post-processing node in a work directory (``cord_prob``, ``lesion_prob``,
    ``extra_cord_prob``, the thresholds), or None when the image was not processed there."""
    from nipype.utils.filemanip import loadpkl

    from bids_sclesion.workflows.base import image_workflow_name

    pattern = f"**/{image_workflow_name(image)}/postprocess_lesions/result_postprocess_lesions.pklz"
    nodes = sorted(Path(work_dir).glob(pattern))
    return loadpkl(nodes[0]).inputs if nodes else None
