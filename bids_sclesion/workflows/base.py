"""Top-level participant workflow: one sub-workflow per subject, one per image."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from nipype.pipeline import engine as pe

from ..config import RunSettings
from .anatomical import init_anat_lesion_wf


def _node_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text)


def image_workflow_name(image: str | Path) -> str:
    return f"anat_{_node_name(Path(image).name.split('.')[0])}_wf"


def init_single_subject_wf(subject: str, images: list[str], settings: RunSettings) -> pe.Workflow:
    """All anatomical images of one subject (all sessions)."""
    wf = pe.Workflow(name=f"single_subject_{_node_name(subject)}_wf")
    for image in images:
        wf.add_nodes([init_anat_lesion_wf(source_file=image, settings=settings, name=image_workflow_name(image))])
    return wf


def init_bids_sclesion_wf(subjects: dict[str, list[str]], settings: RunSettings) -> pe.Workflow:
    """The participant-level workflow for the selected ``subjects`` -> image lists."""
    wf = pe.Workflow(name="bids_sclesion_wf")
    wf.base_dir = settings.work_dir
    wf.config["execution"].update({"crashdump_dir": str(Path(settings.work_dir) / "crashes"),
                                   "crashfile_format": "txt", "stop_on_first_crash": "false",
                                   "remove_unnecessary_outputs": "false"})
    for subject, images in sorted(subjects.items()):
        wf.add_nodes([init_single_subject_wf(subject, images, settings)])
    return wf


def node_run_seconds(work_dir: str | Path) -> dict[str, float]:
    """Seconds each pipeline step ran, summed over images, from a work directory's Nipype result files."""
    from nipype.utils.filemanip import loadpkl

    totals: dict[str, float] = {}
    for result in Path(work_dir).rglob("result_*.pklz"):
        step = result.parent.name
        if "_wf" in step:
            continue
        try:
            duration = float(getattr(loadpkl(result).runtime, "duration", 0.0) or 0.0)
        except Exception:  # an unreadable result file only loses its timing
            continue
        totals[step] = totals.get(step, 0.0) + duration
    return totals


def straightened_work_folders(work_dir: str | Path) -> Iterator[tuple[str, str, Path]]:
    """(subject, image suffix, folder) of each image workflow in a cascade run's work directory
    that kept its straightened image (``segment_straightened_cord/straight_image.nii.gz``) and
    warps (``straightening_warps``): what the stage-2 diagnostics of ``experiments/analyses/`` rerun from.

    The folder name gives the subject and the suffix only; the caller finds the image.
    """
    for folder in sorted(Path(work_dir).glob("bids_sclesion_wf/single_subject_*_wf/anat_sub_*_wf")):
        if not (folder / "segment_straightened_cord/straight_image.nii.gz").exists():
            continue
        parts = folder.name[len("anat_"):-len("_wf")].split("_")  # sub, label, [entities...], suffix
        yield f"sub-{parts[1]}", parts[-1], folder
