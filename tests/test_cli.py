"""Command-line behaviour: argument checks and exit codes (little processing)."""
import json
import shutil
from pathlib import Path

import pytest

from bids_sclesion.cli.parser import ExitCode
from bids_sclesion.cli.run import main
from bids_sclesion.cli.synth import main as synth_main


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert "bids_sclesion" in capsys.readouterr().out


def test_not_a_bids_dataset(tmp_path, capsys):
    (tmp_path / "in").mkdir()
    assert main([str(tmp_path / "in"), str(tmp_path / "out"), "participant"]) == ExitCode.INVALID_DATASET
    assert "dataset_description.json" in capsys.readouterr().err
    assert main([str(tmp_path / "nope"), str(tmp_path / "out"), "participant"]) == ExitCode.INVALID_DATASET


def test_output_inside_input_is_refused(synth_two_subjects, tmp_path, capsys):
    code = main([str(synth_two_subjects), str(synth_two_subjects / "out"), "participant", "--skip-bids-validation"])
    assert code == ExitCode.INVALID_ARGUMENTS
    assert "inside the input dataset" in capsys.readouterr().err
    code = main([str(synth_two_subjects), str(synth_two_subjects), "participant", "--skip-bids-validation"])
    assert code == ExitCode.INVALID_ARGUMENTS
    # derivatives/ itself, a folder deeper than derivatives/<name>, and a work directory inside are refused too.
    for out in ("derivatives", "derivatives/a/b", "sub-01/derivatives/x"):
        code = main([str(synth_two_subjects), str(synth_two_subjects / out), "participant", "--skip-bids-validation",
                     "-w", str(tmp_path / "work")])
        assert code == ExitCode.INVALID_ARGUMENTS, out
    code = main([str(synth_two_subjects), str(synth_two_subjects / "derivatives" / "bids_sclesion"), "participant",
                 "--skip-bids-validation", "-w", str(synth_two_subjects / "derivatives" / "work")])
    assert code == ExitCode.INVALID_ARGUMENTS
    written = [d for d in ("derivatives/bids_sclesion", "derivatives/work", "derivatives/a", "sub-01/derivatives")
               if (synth_two_subjects / d).exists()]
    assert not written, "nothing written into the input dataset"


def _snapshot(root: Path, skip: Path) -> dict[str, tuple[int, int]]:
    return {str(f.relative_to(root)): (f.stat().st_size, f.stat().st_mtime_ns)
            for f in root.rglob("*") if f.is_file() and skip not in f.parents}


@pytest.mark.slow
def test_output_in_the_datasets_derivatives_folder(synth_two_subjects, tmp_path, monkeypatch):
    """BIDS_DIR/derivatives/<name> is accepted, the work directory then defaults to ./work, and nothing else
    in the input dataset changes."""
    bids = tmp_path / "bids"
    shutil.copytree(synth_two_subjects, bids)
    out = bids / "derivatives" / "bids_sclesion"
    before = _snapshot(bids, out)
    monkeypatch.chdir(tmp_path)
    code = main([str(bids), str(out), "participant", "--participant-label", "01", "--skip-bids-validation",
                 "--nprocs", "2", "--omp-nthreads", "1", "--no-reports"])
    assert code == ExitCode.SUCCESS
    assert (out / "dataset_description.json").is_file() and list(out.glob("sub-01/anat/*_lesions.tsv"))
    assert (tmp_path / "work").is_dir(), "the work directory defaults to ./work"
    assert _snapshot(bids, out) == before, "the input dataset is unchanged outside derivatives/bids_sclesion"
    # Provenance: every sidecar and dataset_description.json say which models (version, weights SHA-256), which
    # settings and which results revision made them; the run's settings and a methods text are in logs/.
    import hashlib
    import tomllib

    from bids_sclesion.model.io import resolve_model

    sidecar = json.loads(next(out.glob("sub-01/anat/*label-lesion*_mask.json")).read_text())
    stage2 = sidecar["Provenance"]["Models"]["Stage2"]
    assert stage2["SHA256"] == hashlib.sha256((resolve_model("stage2") / "model.safetensors").read_bytes()).hexdigest()
    assert sidecar["Provenance"]["Settings"]["Threshold"] == sidecar["Threshold"]
    description = json.loads((out / "dataset_description.json").read_text())
    assert description["Provenance"]["Models"] == sidecar["Provenance"]["Models"]
    config = tomllib.loads(next((out / "logs").glob("config-*.toml")).read_text())
    assert config["execution"]["participant_label"] == ["01"] and config["models"]["Stage2"]["Version"]
    assert "References" in (out / "logs" / "CITATION.md").read_text()
    # --reports-only rebuilds the report from these outputs, indexing the dataset into --bids-database-dir.
    report = out / "sub-01.html"
    assert not report.exists(), "--no-reports"
    code = main([str(bids), str(out), "participant", "--participant-label", "01", "--skip-bids-validation",
                 "--reports-only", "--bids-database-dir", str(tmp_path / "db")])
    assert code == ExitCode.SUCCESS and report.is_file()
    assert list((tmp_path / "db").rglob("layout_index.sqlite")), "the index is kept where asked"
    code = main([str(bids), str(out), "participant", "--participant-label", "02", "--skip-bids-validation",
                 "--reports-only"])
    assert code == ExitCode.FAILURE, "no outputs to report on"


def test_scheduler_and_crash_options(tmp_path):
    from bids_sclesion.cli.parser import get_parser
    from bids_sclesion.cli.execution import nipype_settings, plugin_for as _plugin

    args = get_parser().parse_args(["in", "out", "participant", "--mem", "3072", "--stop-on-first-crash"])
    assert _plugin(args, 4)[1]["memory_gb"] == 3.0
    assert nipype_settings(args, tmp_path)["execution"]["stop_on_first_crash"] == "true"
    args = get_parser().parse_args(["in", "out", "participant"])
    assert nipype_settings(args, tmp_path)["execution"]["stop_on_first_crash"] == "false"
    assert "memory_gb" not in _plugin(args, 4)[1]
    with pytest.raises(SystemExit) as exc:  # one memory limit, in one unit
        get_parser().parse_args(["in", "out", "participant", "--mem", "3072", "--mem-gb", "3"])
    assert exc.value.code == ExitCode.USAGE


@pytest.mark.parametrize("label,message", [("99", "not found"), ("../01", "invalid participant label"),
                                           ("0*", "invalid participant label"), ("a/b", "invalid participant label")])
def test_bad_participant_labels(synth_two_subjects, tmp_path, capsys, label, message):
    code = main([str(synth_two_subjects), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "-w", str(tmp_path / "work"), "--participant-label", label])
    assert code == ExitCode.INVALID_ARGUMENTS
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "out").exists(), "nothing is written when the selection is invalid"


@pytest.mark.parametrize("option", ["--cord-locator", "--stage1-fallback"])
def test_a_cord_locator_or_fallback_that_is_not_a_model_is_refused(synth_two_subjects, tmp_path, capsys, option):
    code = main([str(synth_two_subjects), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "-w", str(tmp_path / "work"), option, str(tmp_path / "no_model")])
    assert code == ExitCode.INVALID_ARGUMENTS
    assert str(tmp_path / "no_model") in capsys.readouterr().err
    assert not (tmp_path / "out").exists(), "nothing is written when a model is missing"


@pytest.mark.parametrize("grow", ["0.7", "0"])
def test_a_grow_threshold_outside_zero_to_the_threshold_is_refused(synth_two_subjects, tmp_path, capsys, grow):
    code = main([str(synth_two_subjects), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "-w", str(tmp_path / "work"), "--grow-threshold", grow])
    assert code == ExitCode.INVALID_ARGUMENTS
    assert f"--grow-threshold {float(grow)}: must be above 0 and at most --threshold (0.5)" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_filters_that_select_nothing_exit_18(synth_two_subjects, tmp_path, capsys):
    filt = tmp_path / "filter.json"
    filt.write_text(json.dumps({"t2w": {"acquisition": "doesnotexist"}}))
    code = main([str(synth_two_subjects), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "-w", str(tmp_path / "work"), "--bids-filter-file", str(filt), "--contrast", "T2w"])
    assert code == ExitCode.NO_DATA
    assert "no image matches" in capsys.readouterr().err
    code = main([str(synth_two_subjects), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "-w", str(tmp_path / "work"), "--session-label", "05"])
    assert code == ExitCode.NO_DATA


def test_group_without_participant_outputs(tmp_path, synth_two_subjects, capsys):
    assert main([str(synth_two_subjects), str(tmp_path / "empty"), "group"]) == ExitCode.NO_DATA
    assert "participant level first" in capsys.readouterr().err


def test_synth_rejects_unknown_contrast(tmp_path, capsys):
    assert synth_main([str(tmp_path / "x"), "--contrasts", "FLAIR"]) == 2
    assert "unknown contrast" in capsys.readouterr().err


def test_parallel_workers_do_not_inherit_this_process_thread_pools(tmp_path):
    """Forked workers of a process that has used PyTorch can hang in OpenMP: MultiProc workers must not be forks."""
    import argparse

    from bids_sclesion.cli.execution import plugin_for as _plugin

    args = argparse.Namespace(use_plugin=None, mem_gb=None, mem=None)
    plugin, plugin_args = _plugin(args, nprocs=2)
    assert (plugin, plugin_args["mp_context"]) == ("MultiProc", "forkserver")
    assert plugin_args["poll_sleep_duration"] <= 0.5, "finished steps are noticed quickly (Nipype's default: 2 s)"
    conf = tmp_path / "plugin.yml"
    conf.write_text("plugin: MultiProc\nplugin_args: {n_procs: 3}\n")
    args.use_plugin = str(conf)
    assert _plugin(args, nprocs=1) == ("MultiProc", {"n_procs": 3, "mp_context": "forkserver",
                                                     "poll_sleep_duration": 0.2})


def test_straightened_work_folders_name_subject_and_suffix(tmp_path):
    """The helper the stage-2 analyses of experiments/ rerun from (it lives beside them, outside the package)."""
    import importlib.util

    from bids_sclesion.workflows.base import image_workflow_name

    path = Path(__file__).parents[1] / "experiments" / "analyses" / "work_folders.py"
    spec = importlib.util.spec_from_file_location("work_folders", path)
    work_folders = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(work_folders)
    subject_wf = tmp_path / "bids_sclesion_wf" / "single_subject_01_wf"
    kept = subject_wf / image_workflow_name("sub-01_acq-sag_T2w.nii.gz")
    (kept / "segment_straightened_cord").mkdir(parents=True)
    (kept / "segment_straightened_cord" / "straight_image.nii.gz").write_bytes(b"")
    (subject_wf / image_workflow_name("sub-01_T1w.nii.gz")).mkdir()  # single stage: no straightened image
    assert list(work_folders.straightened_work_folders(tmp_path)) == [("sub-01", "T2w", kept)]


def test_step_failure_is_read_from_nipype_result_files(tmp_path):
    """The reason a failed image prints comes from the failed step's Nipype result, not from crash-file text."""
    import time

    from nipype.interfaces.utility import Function
    from nipype.pipeline import engine as pe

    from bids_sclesion.workflows.base import image_workflow_name, step_failure

    def refuse(path):
        raise ValueError(f"{path}: singular affine")

    started = time.time() - 1
    image = "sub-01_acq-sag_T2w.nii.gz"
    top, subject = pe.Workflow("bids_sclesion_wf", base_dir=str(tmp_path)), pe.Workflow("single_subject_01_wf")
    image_wf = pe.Workflow(image_workflow_name(image))
    step = pe.Node(Function(input_names=["path"], function=refuse), name="n4")
    step.inputs.path = image
    image_wf.add_nodes([step])
    subject.add_nodes([image_wf])
    top.add_nodes([subject])
    top.config["execution"]["crashdump_dir"] = str(tmp_path / "crashes")
    with pytest.raises(RuntimeError):
        top.run()
    assert step_failure(tmp_path, image, started) == f"step n4: ValueError: {image}: singular affine"
    assert step_failure(tmp_path, image, time.time() + 60) is None, "results older than the run are not its own"
    assert step_failure(tmp_path, "sub-02_T2w.nii.gz", started) is None


def test_default_contrasts_are_those_every_model_of_the_run_knows(tmp_path):
    """Stage 1 was trained on MT images, stage 2 never was: the cascade does not process them unless asked."""
    import json as _json
    from bids_sclesion.cli.run import default_suffixes
    from bids_sclesion.model.io import bundled_model_dir

    assert "MTS" in default_suffixes("stage1", None)
    cascade = default_suffixes("stage1", "stage2")
    assert "MTS" not in cascade and {"T2w", "T1w", "PSIR", "STIR", "T2starw", "T2star"} <= set(cascade)
    narrow = tmp_path / "narrow"
    shutil.copytree(bundled_model_dir("stage2"), narrow)
    meta = _json.loads((narrow / "model.json").read_text())
    meta["contrasts"] = ["T2w"]
    (narrow / "model.json").write_text(_json.dumps(meta))
    assert default_suffixes("stage1", str(narrow)) == ["T2w"]


@pytest.mark.parametrize("make_parser", ["app", "train"])
def test_every_option_has_help_and_says_its_default_once(make_parser):
    import argparse

    from bids_sclesion.cli import parser as app_parser
    from bids_sclesion.cli import train as train_cli

    p = app_parser.get_parser() if make_parser == "app" else train_cli.get_parser()
    formatter = p._get_formatter()
    for action in p._actions:
        if not action.option_strings or isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        text = formatter._get_help_string(action)
        assert action.help, f"{action.option_strings[0]} has no help"
        assert text.lower().count("default") <= 1, f"{action.option_strings[0]}: {text}"
        if action.default not in (None, False, []) and action.nargs != 0:
            assert "default" in text.lower(), f"{action.option_strings[0]} does not say its default: {text}"


def test_exit_codes_of_the_bids_execution_conventions(synth_two_subjects, tmp_path, capsys):
    from bids_sclesion.utils.locks import ParticipantLocks

    # 64: a command line that cannot be parsed.
    with pytest.raises(SystemExit) as exc:
        main([str(synth_two_subjects)])
    assert exc.value.code == ExitCode.USAGE == 64
    # 73: an output or work directory that cannot be created (a file stands where a folder should be).
    blocker = tmp_path / "file"
    blocker.write_text("")
    code = main([str(synth_two_subjects), str(blocker / "out"), "participant", "--skip-bids-validation",
                 "-w", str(tmp_path / "work")])
    assert code == ExitCode.CANNOT_CREATE == 73
    assert str(blocker / "out") in capsys.readouterr().err
    code = main([str(synth_two_subjects), str(tmp_path / "out"), "participant", "--skip-bids-validation",
                 "-w", str(blocker / "work")])
    assert code == ExitCode.CANNOT_CREATE
    # 75: the only participant selected is being written by another run: nothing is done, try again later.
    out = tmp_path / "out_locked"
    out.mkdir()
    with ParticipantLocks(out) as other_run:
        assert other_run.acquire(["01"]) == {}
        code = main([str(synth_two_subjects), str(out), "participant", "--skip-bids-validation",
                     "-w", str(tmp_path / "work"), "--participant-label", "01"])
    assert code == ExitCode.TEMPORARY_FAILURE == 75
    assert "sub-01 skipped" in capsys.readouterr().err
    assert not list(out.glob("sub-01/anat/*"))
