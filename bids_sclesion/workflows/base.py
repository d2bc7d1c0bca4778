"""Top-level participant workflow: one sub-workflow per subject, one per image."""
from __future__ import annotations

import re
from pathlib import Path

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


def step_failure(work_dir: str | Path, image: str | Path, since: float) -> str | None:
    """``step <name>: <ErrorType>: <message>`` of the newest step of ``image``'s workflow that failed since
    ``since`` (seconds since the epoch), read from Nipype's result files; None when no step recorded a failure
    (e.g. a step killed from outside, which leaves only a crash file)."""
    from nipype.utils.filemanip import loadpkl

    newest: tuple[float, str] | None = None
    for folder in Path(work_dir).glob(f"bids_sclesion_wf/*/{image_workflow_name(image)}"):
        for result in folder.rglob("result_*.pklz"):
            modified = result.stat().st_mtime
            if modified < since or (newest and modified <= newest[0]):
                continue
            try:
                runtime = loadpkl(result).runtime
            except Exception:  # an unreadable result file cannot say why its step failed
                continue
            recorded = getattr(runtime, "traceback_args", None)
            if not getattr(runtime, "traceback", None) or not recorded:
                continue
            # Nipype records the exception's arguments, then a line naming the exception's type.
            *message, origin = str(recorded[0]).splitlines()
            kind = origin.split("exception of type ", 1)[-1].split(" ", 1)[0]
            newest = (modified, f"step {result.parent.name}: {kind}: {' '.join(message).strip()}"[:300])
    return newest[1] if newest else None
