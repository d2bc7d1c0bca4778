"""Top-level participant workflow: one sub-workflow per subject, one per image."""
from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from nipype.pipeline import engine as pe

from ..core.lesions import DEFAULT_MIN_LESION_MM3
from .anatomical import init_anat_lesion_wf


def _node_name(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "_", text)


def image_workflow_name(image: str | Path) -> str:
    return f"anat_{_node_name(Path(image).name.split('.')[0])}_wf"


def init_single_subject_wf(
    subject: str, images: list[str], *, bids_dir: str, output_dir: str, model: str, model_hash: str,
    device: str, omp_nthreads: int, threshold: float = 0.5, min_lesion_mm3: float = DEFAULT_MIN_LESION_MM3,
    stage2_model: str | None = None, stage2_model_hash: str = "", cord_fusion: str = "mean", tta: bool = False,
    provenance: str = "", disc_labels: dict[str, str] | None = None,
) -> pe.Workflow:
    """All anatomical images of one subject (all sessions); ``provenance`` (JSON) goes into every sidecar.

    ``disc_labels`` maps an image to the user's disc labels for it."""
    wf = pe.Workflow(name=f"single_subject_{_node_name(subject)}_wf")
    for image in images:
        wf.add_nodes([
            init_anat_lesion_wf(
                source_file=image, bids_dir=bids_dir, output_dir=output_dir, model=model, model_hash=model_hash,
                device=device, omp_nthreads=omp_nthreads, threshold=threshold, min_lesion_mm3=min_lesion_mm3,
                stage2_model=stage2_model, stage2_model_hash=stage2_model_hash, cord_fusion=cord_fusion,
                tta=tta, provenance=provenance, disc_labels=(disc_labels or {}).get(image),
                name=image_workflow_name(image),
            )
        ])
    return wf


def init_bids_sclesion_wf(
    subjects: dict[str, list[str]], *, bids_dir: str, output_dir: str, work_dir: str, model: str,
    model_hash: str, device: str = "auto", omp_nthreads: int = 1, threshold: float = 0.5,
    min_lesion_mm3: float = DEFAULT_MIN_LESION_MM3, stage2_model: str | None = None, stage2_model_hash: str = "",
    cord_fusion: str = "mean", tta: bool = False, provenance: str = "", disc_labels: dict[str, str] | None = None,
) -> pe.Workflow:
    """The participant-level workflow for the selected ``subjects`` -> image lists."""
    wf = pe.Workflow(name="bids_sclesion_wf")
    wf.base_dir = work_dir
    wf.config["execution"].update({"crashdump_dir": str(Path(work_dir) / "crashes"), "crashfile_format": "txt",
                                   "stop_on_first_crash": "false", "remove_unnecessary_outputs": "false"})
    for subject, images in sorted(subjects.items()):
        wf.add_nodes([
            init_single_subject_wf(subject, images, bids_dir=bids_dir, output_dir=output_dir, model=model,
                                   model_hash=model_hash, device=device, omp_nthreads=omp_nthreads,
                                   threshold=threshold, min_lesion_mm3=min_lesion_mm3,
                                   stage2_model=stage2_model, stage2_model_hash=stage2_model_hash,
                                   cord_fusion=cord_fusion, tta=tta, provenance=provenance,
                                   disc_labels=disc_labels)
        ])
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
    warps (``straightening_warps``): what the stage-2 diagnostics of ``scripts/`` rerun from.

    The folder name gives the subject and the suffix only; the caller finds the image.
    """
    for folder in sorted(Path(work_dir).glob("bids_sclesion_wf/single_subject_*_wf/anat_sub_*_wf")):
        if not (folder / "segment_straightened_cord/straight_image.nii.gz").exists():
            continue
        parts = folder.name[len("anat_"):-len("_wf")].split("_")  # sub, label, [entities...], suffix
        yield f"sub-{parts[1]}", parts[-1], folder
