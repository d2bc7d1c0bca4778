"""``bids_sclesion``: the BIDS App entry point (participant and group levels)."""
from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path

from .. import __version__
from .execution import AppError, nipype_settings, plugin_for, progress_callback, user_name
from .parser import SUPPORTED_SUFFIXES, ExitCode, get_parser
from .summary import rebuild_reports, summarise

LOGGER = logging.getLogger("bids_sclesion")


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    _setup_logging(args.verbose)
    try:
        if args.analysis_level == "participant":
            return run_participant(args)
        return run_group(args)
    except AppError as exc:
        print(f"bids_sclesion: error: {exc}", file=sys.stderr)
        return exc.code


def _setup_logging(verbose: int) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s: %(message)s"))
    LOGGER.addHandler(handler)
    LOGGER.setLevel([logging.INFO, logging.INFO, logging.DEBUG][min(2, verbose)])
    LOGGER.propagate = False


def _check_paths(args) -> tuple[Path, Path, Path]:
    bids_dir = args.bids_dir.resolve()
    out_dir = args.output_dir.resolve()
    if not bids_dir.is_dir():
        raise AppError(f"{bids_dir}: BIDS directory does not exist", ExitCode.INVALID_DATASET)
    if not (bids_dir / "dataset_description.json").is_file():
        raise AppError(f"{bids_dir}: not a BIDS dataset (no dataset_description.json)", ExitCode.INVALID_DATASET)
    in_derivatives = out_dir.parent == bids_dir / "derivatives"
    if (out_dir == bids_dir or bids_dir in out_dir.parents) and not in_derivatives:
        # The layout the BIDS specification recommends, BIDS_DIR/derivatives/<pipeline>/, is the one place of the
        # input dataset the app writes to (the dataset's index ignores derivatives/).
        raise AppError(f"output directory {out_dir} is inside the input dataset {bids_dir}; choose a directory "
                       f"outside it, or {bids_dir / 'derivatives' / 'bids_sclesion'}", ExitCode.INVALID_ARGUMENTS)
    if args.work_dir is not None:
        work_dir = args.work_dir.resolve()
    else:
        # Beside the outputs; for outputs in BIDS_DIR/derivatives/ that would be inside the dataset, so the
        # current directory takes it (as fMRIPrep does).
        work_dir = (Path.cwd() / "work" if in_derivatives else out_dir.parent / "work").resolve()
    if work_dir == bids_dir or bids_dir in work_dir.parents:
        raise AppError(f"work directory {work_dir} is inside the input dataset {bids_dir}; give one outside it "
                       "with -w", ExitCode.INVALID_ARGUMENTS)
    return bids_dir, out_dir, work_dir


def _prepare_work_dir(work_dir: Path, required: bool = True) -> None:
    """Create the work directory and keep scratch files inside it when HOME or /tmp are read-only."""
    from ..utils.environment import confine_scratch

    try:
        work_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if not required:
            return
        raise AppError(f"work directory {work_dir} cannot be created ({exc}); choose another with -w",
                       ExitCode.CANNOT_CREATE) from exc
    for line in confine_scratch(work_dir):
        LOGGER.info("%s", line)


def _validate_bids(bids_dir: Path) -> None:
    from ..bids import validate_dataset

    problems = validate_dataset(bids_dir)
    if problems:
        raise AppError(
            f"{bids_dir}: the BIDS validator found errors:\n  " + "\n  ".join(problems)
            + "\nFix them or run with --skip-bids-validation.", ExitCode.INVALID_DATASET)


#: Other names MS datasets use for the same contrast.
_ALIASES = {"T2starw": ("T2star",)}


def _model_suffixes(model: str) -> list[str]:
    """Suffixes the model was trained on (from its metadata), with their aliases."""
    from ..model.io import ModelError, resolve_model
    from ..model.metadata import read_metadata

    try:
        contrasts = read_metadata(resolve_model(model)).get("contrasts") or list(SUPPORTED_SUFFIXES)
    except ModelError as exc:
        raise AppError(f"model '{model}': {exc}", ExitCode.INVALID_ARGUMENTS) from exc
    out = []
    for c in contrasts:
        out += [c, *_ALIASES.get(c, ())]
    return out


def default_suffixes(stage1: str, stage2: str | None) -> list[str]:
    """The suffixes processed without ``--contrast``: those every model of the run was trained on
    (a cascade's stage 2 has never seen, e.g., the MT images stage 1 was trained on)."""
    suffixes = _model_suffixes(stage1)
    if stage2:
        known = set(_model_suffixes(stage2))
        suffixes = [s for s in suffixes if s in known]
    return suffixes


def _model_hash(model: str) -> str:
    """Check that the model loads (safetensors only: nothing in it is executed) and hash its weights."""
    from ..model.io import WEIGHTS, ModelError, load_model, resolve_model
    from ..utils.io import sha256_of

    path = resolve_model(model) / WEIGHTS
    if not path.is_file():
        raise AppError(f"model '{model}': {path} not found", ExitCode.INVALID_ARGUMENTS)
    try:
        load_model(model, device="cpu")
    except ModelError as exc:
        raise AppError(f"model '{model}' refused: {exc}", ExitCode.INVALID_ARGUMENTS) from exc
    return sha256_of(path)[:16]


def absolute_model(model: str | None) -> str | None:
    """A model directory given relative to where the command runs, made absolute: the workflow's
    nodes run inside the work directory, where a relative path would name nothing."""
    from ..model.io import BUNDLED

    if model is None or str(model) in BUNDLED:
        return model
    return str(Path(model).absolute())


def optional_model(model: str | None) -> str | None:
    """An optional model of the command line as an absolute path; None for none given or 'none'."""
    return None if model in (None, "", "none") else absolute_model(model)


def fallback_model(args) -> str | None:
    """The stage-1 fallback of the command line, as an absolute model path; None for 'none' or when it is the
    whole-image model itself (``args.model``, already absolute): a second try with it would give the same cord."""
    fallback = optional_model(getattr(args, "stage1_fallback", None))
    return None if fallback == args.model else fallback


def run_participant(args) -> int:
    from ..bids import collect_images
    from ..derivatives import write_dataset_description

    started = time.time() - 1.0
    bids_dir, out_dir, work_dir = _check_paths(args)
    _prepare_work_dir(work_dir)
    # Only now: naming the bundled models imports the network (MONAI, matplotlib), which needs the scratch
    # directories that _prepare_work_dir moves into the work directory when HOME is read-only.
    args.model, args.stage2_model = absolute_model(args.model), absolute_model(args.stage2_model)
    args.cord_locator = optional_model(getattr(args, "cord_locator", None))
    args.stage1_fallback = fallback_model(args)
    if not args.skip_bids_validation:
        _validate_bids(bids_dir)
    filters = _load_filters(args.bids_filter_file)
    cascade_stage2 = None if args.single_stage or not args.stage2_model else str(args.stage2_model)
    suffixes = args.contrast or default_suffixes(args.model, cascade_stage2)
    LOGGER.info("contrasts processed: %s%s", ", ".join(suffixes), "" if args.contrast else
                " (those every model of the run was trained on; --contrast chooses others)")
    try:
        subjects = collect_images(
            bids_dir, args.bids_database_dir or work_dir / "bids_db", participant_label=args.participant_label,
            session_label=args.session_label,
            suffixes=suffixes, filters=filters,
        )
    except LookupError as exc:
        raise AppError(str(exc), ExitCode.INVALID_ARGUMENTS) from exc
    except ValueError as exc:
        raise AppError(str(exc), ExitCode.INVALID_ARGUMENTS) from exc
    n_images = sum(len(v) for v in subjects.values())
    if n_images == 0:
        raise AppError(
            f"{bids_dir}: no image matches the selection (participants {args.participant_label or 'all'}, "
            f"sessions {args.session_label or 'all'}, suffixes {suffixes}, filters {filters or 'none'})",
            ExitCode.NO_DATA)
    if args.reports_only:
        return rebuild_reports(subjects, bids_dir, out_dir)
    disc_labels = _disc_labels(subjects, bids_dir, getattr(args, "derivatives", None) or [])
    nprocs = args.nprocs or os.cpu_count() or 1
    omp = args.omp_nthreads or max(1, min(nprocs, 8) if nprocs < 4 else nprocs // 2)
    segmentation = _segmentation_settings(args, cascade_stage2, omp)
    print(f"bids_sclesion {__version__}: {n_images} image(s) of {len(subjects)} participant(s); work dir {work_dir}",
          flush=True)

    from nipype import config as ncfg

    ncfg.update_config(nipype_settings(args, work_dir))
    from nipype import logging as nlogging

    nlogging.update_logging(ncfg)
    from ..config import RunSettings
    from ..provenance import write_run_logs
    from ..workflows.base import init_bids_sclesion_wf

    provenance = _provenance(segmentation, suffixes)
    settings = RunSettings(str(bids_dir), str(out_dir), str(work_dir), segmentation, json.dumps(provenance),
                           disc_labels)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_dataset_description(out_dir, bids_dir, provenance)
        execution = {"bids_dir": str(bids_dir), "output_dir": str(out_dir), "work_dir": str(work_dir),
                     "participant_label": sorted(subjects), "session_label": args.session_label or [],
                     "nprocs": nprocs, "omp_nthreads": omp, "plugin": str(args.use_plugin or ""),
                     "bids_database_dir": str(args.bids_database_dir or work_dir / "bids_db")}
        for path in write_run_logs(out_dir, provenance, execution, settings.to_dict()["segmentation"]):
            LOGGER.info("wrote %s", path)
    except OSError as exc:
        raise AppError(f"output directory {out_dir} cannot be written ({exc})", ExitCode.CANNOT_CREATE) from exc
    from ..utils.locks import ParticipantLocks, remove_partial_files

    with ParticipantLocks(out_dir) as locks:
        # Another run writing a participant into this OUT_DIR keeps it: this run leaves that one alone.
        busy = locks.acquire(subjects)
        for label, holder in busy.items():
            print(f"bids_sclesion: sub-{label} skipped: {holder} is writing it into {out_dir}. "
                  "Wait for that run to end, or write to another output directory.", file=sys.stderr, flush=True)
        subjects = {s: v for s, v in subjects.items() if s not in busy}
        if not subjects:
            return ExitCode.TEMPORARY_FAILURE
        for label in subjects:
            for path in remove_partial_files(out_dir, label):
                LOGGER.info("removed %s, left by an interrupted run", path)
        wf = init_bids_sclesion_wf({s: [str(p) for p in imgs] for s, imgs in subjects.items()}, settings)
        # The workflow keeps its own copy of Nipype's execution settings, which wins over the global one.
        wf.config["execution"]["stop_on_first_crash"] = nipype_settings(args, work_dir)["execution"]["stop_on_first_crash"]
        plugin, plugin_args = plugin_for(args, nprocs)
        if plugin not in ("Linear", "MultiProc"):
            # Nipype's batch plugins name jobs after LOGNAME, which containers and cron jobs often lack.
            os.environ.setdefault("LOGNAME", user_name())
        if "poll_sleep_duration" in plugin_args:  # batch plugins (SLURM...): how often the queue is looked at
            # The workflow keeps a copy of Nipype's settings from when it was made, and that copy wins.
            wf.config["execution"]["poll_sleep_duration"] = str(plugin_args.pop("poll_sleep_duration"))
        if plugin in ("Linear", "MultiProc"):
            from ..workflows.base import image_workflow_name

            names = {image_workflow_name(p): Path(p).name.split(".")[0] for imgs in subjects.values() for p in imgs}
            plugin_args["status_callback"] = progress_callback(sum(len(v) for v in subjects.values()), names)
        try:
            wf.run(plugin=plugin, plugin_args=plugin_args)
            failed_run = False
        except RuntimeError as exc:
            LOGGER.error("%s", exc)
            failed_run = True
        code = summarise(subjects, bids_dir, out_dir, work_dir, failed_run, started, reports=not args.no_reports)
    # Images that failed outrank participants left to another run: a retry would not mend them.
    return ExitCode.TEMPORARY_FAILURE if busy and code == ExitCode.SUCCESS else code


def _provenance(segmentation, suffixes) -> dict:
    """The run's provenance record: its models' identities and the settings that decide its results."""
    from ..model.io import resolve_model
    from ..model.metadata import model_identity
    from ..provenance import run_provenance

    stage2 = segmentation.stage2_model
    identity = lambda model: model_identity(resolve_model(model)) if model else None  # noqa: E731
    run_settings = {"Threshold": segmentation.threshold, "LesionGrowThreshold": segmentation.grow_threshold,
                    "MinLesionVolumeMM3": segmentation.min_lesion_mm3,
                    "Cascade": segmentation.cascade, "CascadeCord": segmentation.cord_fusion if stage2 else None,
                    "TTA": segmentation.tta, "Contrasts": list(suffixes), "Device": segmentation.device,
                    "Precision": segmentation.precision, "Stage1Flips": segmentation.stage1_flips}
    return run_provenance(identity(segmentation.model), identity(stage2),
                          {k: v for k, v in run_settings.items() if v is not None},
                          locator=identity(segmentation.locator), fallback=identity(segmentation.fallback))


def _segmentation_settings(args, stage2: str | None, omp_nthreads: int):
    """The models (checked and hashed) and post-processing of this run, from the command line."""
    from ..config import SegmentationSettings

    if not 0.0 < args.grow_threshold <= args.threshold:
        raise AppError(f"--grow-threshold {args.grow_threshold}: must be above 0 and at most --threshold "
                       f"({args.threshold})", ExitCode.INVALID_ARGUMENTS)
    if args.tta and not stage2:
        raise AppError("--tta works on the cascade's stage 2: it cannot be combined with --single-stage",
                       ExitCode.INVALID_ARGUMENTS)
    if stage2:
        from ..workflows.anatomical import straight_space_of

        try:
            straight_space_of(stage2)
        except (ValueError, OSError) as exc:
            raise AppError(str(exc), ExitCode.INVALID_ARGUMENTS) from exc
    fallback = getattr(args, "stage1_fallback", None)
    return SegmentationSettings(
        model=str(args.model), model_hash=_model_hash(args.model),
        locator=args.cord_locator, locator_hash=_model_hash(args.cord_locator) if args.cord_locator else "",
        fallback=fallback, fallback_hash=_model_hash(fallback) if fallback else "",
        stage1_flips=getattr(args, "stage1_flips", "unsure"),
        stage2_model=stage2,
        stage2_model_hash=_model_hash(stage2) if stage2 else "", threshold=args.threshold,
        min_lesion_mm3=args.min_lesion_volume, grow_threshold=args.grow_threshold, cord_fusion=args.cascade_cord,
        tta=args.tta, device=args.device, precision=args.precision,
        omp_nthreads=omp_nthreads)


def _disc_labels(subjects, bids_dir: Path, derivative_dirs) -> dict[str, str]:
    """Image -> the user's disc-label file for it, from the ``--derivatives`` folders."""
    from ..bids import find_disc_labels

    for folder in derivative_dirs:
        if not Path(folder).is_dir():
            raise AppError(f"{folder}: --derivatives folder not found", ExitCode.INVALID_ARGUMENTS)
    found = {}
    for imgs in subjects.values():
        for img in imgs:
            try:
                path = find_disc_labels(img, bids_dir, derivative_dirs)
            except ValueError as exc:
                raise AppError(str(exc), ExitCode.INVALID_ARGUMENTS) from exc
            if path:
                found[str(img)] = str(path.resolve())
    if derivative_dirs:
        LOGGER.info("disc labels given for %d of %d image(s); the others are matched with the template",
                    len(found), sum(len(v) for v in subjects.values()))
    return found


def _load_filters(path: Path | None) -> dict:
    from ..bids import read_filter_file

    if path is None:
        return {}
    try:
        return read_filter_file(path)
    except ValueError as exc:
        raise AppError(str(exc), ExitCode.INVALID_ARGUMENTS) from exc


def run_group(args) -> int:
    from ..group import write_group_table, write_longitudinal_tables
    from ..reports.group import write_group_report

    out_dir = args.output_dir.resolve()
    if not (out_dir / "dataset_description.json").is_file():
        raise AppError(f"{out_dir}: no participant-level results (run the participant level first)", ExitCode.NO_DATA)
    # The group level needs no work directory; it only borrows one for scratch files when HOME is read-only.
    _prepare_work_dir((args.work_dir or out_dir.parent / "work").resolve(), required=args.work_dir is not None)
    table, rows, level_rows = write_group_table(out_dir, participant_label=args.participant_label,
                                                session_label=args.session_label)
    if not rows:
        raise AppError(f"{out_dir}: no lesion table matches the selection", ExitCode.NO_DATA)
    print(f"group table: {table} ({len(rows)} image(s))")
    for row in rows:
        if row["status"] == "failed":
            LOGGER.warning("%s: failed at the participant level (%s); listed in the group table without results",
                           row["source"], row["failure_reason"])
    longitudinal, problems = write_longitudinal_tables(out_dir, args.bids_dir.resolve(), args.participant_label)
    for problem in problems:
        LOGGER.warning("%s", problem)
    if longitudinal:
        print(f"longitudinal: {out_dir / 'group_longitudinal.tsv'} ({len(longitudinal)} pair(s) of sessions)")
    page = write_group_report(out_dir, rows, level_rows, longitudinal, problems)
    print(f"group report: {page}")
    return ExitCode.SUCCESS


if __name__ == "__main__":
    sys.exit(main())
