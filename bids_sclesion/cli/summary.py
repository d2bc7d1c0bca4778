"""What a participant-level run tells its user at the end: images done and failed (with the reason
from Nipype's result files), missing vertebral levels, the subject reports."""
from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

from .parser import ExitCode

LOGGER = logging.getLogger("bids_sclesion")


def _sidecar(image: Path) -> dict:
    """The JSON sidecar of a derivative image, {} when it cannot be read."""
    try:
        return json.loads(image.with_name(image.name.replace(".nii.gz", ".json")).read_text())
    except (OSError, ValueError):
        return {}


def _fallback_warnings(done: list[Path], bids_dir: Path, out_dir: Path) -> None:
    """One warning per processed image whose cord the stage-1 fallback made."""
    from ..derivatives import SourceName

    for img in done:
        model = _sidecar(SourceName(img, bids_dir).outputs(out_dir)["cord_mask"]).get("Model", {})
        if model.get("Stage1FallbackUsed"):
            print(f"  WARNING: {img.name}: the first stage-1 model found no plausible spinal cord; the cord and "
                  f"lesions come from the stage-1 fallback ({model.get('Stage1', model.get('Name'))}): check the "
                  "report", flush=True)


def _level_warnings(done: list[Path], bids_dir: Path, out_dir: Path) -> None:
    """One warning per processed image that got no vertebral level, naming it and saying why."""
    from ..derivatives import SourceName

    for img in done:
        labelling = _sidecar(SourceName(img, bids_dir).outputs(out_dir)["level_map"]).get("VertebralLabelling", {})
        if labelling.get("Method") == "none":
            print(f"  WARNING: {img.name}: no vertebral level ({labelling.get('Reason', 'unknown')}); lesion "
                  "levels and per-level CSA are n/a", flush=True)


def summarise(subjects, bids_dir: Path, out_dir: Path, work_dir: Path, failed_run: bool, started: float,
               reports: bool = True) -> int:
    from ..derivatives import SourceName

    done, failed = [], []
    for imgs in subjects.values():
        for img in imgs:
            outputs = SourceName(img, bids_dir).outputs(out_dir)
            fresh = all(p.exists() and p.stat().st_mtime >= started for p in outputs.values())
            (done if fresh else failed).append(Path(img))
    reasons = failure_reasons(work_dir, failed, started)
    from ..failures import record_failures

    for sub, imgs in subjects.items():
        names = [Path(p).name for p in imgs]
        try:  # kept in OUT_DIR/logs/failed so the group level lists failed images with their reason
            record_failures(out_dir, sub, names, {p.name: reasons.get(p.name, "no result written")
                                                  for p in failed if p.name in names})
        except OSError as exc:
            LOGGER.error("sub-%s: the failure record could not be written (%s)", sub, exc)
    if reports:
        from ..reports.subject import write_subject_report

        for sub, imgs in subjects.items():
            try:
                page = write_subject_report(sub, [Path(p) for p in imgs], bids_dir, out_dir,
                                            {p.name: reasons[p.name] for p in failed if p.name in reasons})
                print(f"[sub-{sub}] report: {page}", flush=True)
            except Exception as exc:  # the segmentations are written; a report problem must not hide them
                LOGGER.error("sub-%s: the report could not be written (%s)", sub, exc)
    print(f"\nSummary: {len(done)} image(s) of {len(subjects)} participant(s) done, {len(failed)} failed. "
          f"Outputs: {out_dir}")
    _fallback_warnings(done, bids_dir, out_dir)
    _level_warnings(done, bids_dir, out_dir)
    for path in failed:
        print(f"  FAILED: {path.name}: {reasons.get(path.name, 'no result written')} "
              f"(crash files: {work_dir / 'crashes'})")
    return ExitCode.FAILURE if (failed or failed_run) else ExitCode.SUCCESS


def rebuild_reports(subjects, bids_dir: Path, out_dir: Path) -> int:
    """``--reports-only``: the subject reports written again from the outputs in ``out_dir``."""
    from ..derivatives import SourceName
    from ..reports.subject import write_subject_report

    from ..failures import read_failures

    code = ExitCode.SUCCESS
    for sub, imgs in subjects.items():
        failures = {name: rec.get("reason", "unknown") for name, rec in read_failures(out_dir, sub).items()}
        missing = [Path(p).name for p in imgs if Path(p).name not in failures
                   and not all(f.exists() for f in SourceName(p, bids_dir).outputs(out_dir).values())]
        if missing:
            print(f"bids_sclesion: sub-{sub}: no outputs in {out_dir} for {', '.join(missing)}; run the participant "
                  "level first", file=sys.stderr)
            code = ExitCode.FAILURE
            continue
        try:
            page = write_subject_report(sub, [Path(p) for p in imgs], bids_dir, out_dir, failures)
            print(f"[sub-{sub}] report: {page}", flush=True)
        except Exception as exc:
            print(f"bids_sclesion: sub-{sub}: the report could not be written ({exc})", file=sys.stderr)
            code = ExitCode.FAILURE
    return code


def failure_reasons(work_dir: Path, images: list[Path], since: float) -> dict[str, str]:
    """Why each failed image failed: its failed step and error, from Nipype's result files."""
    from ..workflows.base import step_failure

    reasons = {image.name: step_failure(work_dir, image, since) for image in images}
    return {name: reason for name, reason in reasons.items() if reason}
