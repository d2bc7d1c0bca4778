"""Training entry point on a tiny synthetic dataset (a few iterations on the CPU)."""
import csv
import json

import numpy as np
import pytest

from bids_sclesion.cli.train import main as train_main
from bids_sclesion.model.io import load_model
from bids_sclesion.training import find_training_cases, split_by_subject


def test_cases_and_subject_split(synth_two_subjects):
    cases = find_training_cases(synth_two_subjects, ("T2w", "PSIR"))
    assert len(cases) == 4
    train, val = split_by_subject(cases, 0.5, seed=0)
    assert {c.subject for c in train}.isdisjoint({c.subject for c in val})
    assert len(train) == 2 and len(val) == 2


def test_train_writes_a_loadable_model(synth_two_subjects, tmp_path):
    out = tmp_path / "model"
    code = train_main([str(synth_two_subjects), str(out), "--contrast", "T2w", "--iterations", "4",
                       "--val-every", "2", "--val-fraction", "0.5", "--channels", "4", "8", "16",
                       "--patch-size", "32", "32", "32", "-w", str(tmp_path / "cache"), "--nthreads", "1"])
    assert code == 0
    model = load_model(out)
    meta = model.metadata
    assert meta["contrasts"] == ["T2w"]
    assert meta["training"]["iterations_done"] == 4
    assert len(meta["training"]["validation_subjects"]) == 1
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [2, 4]
    assert all(np.isfinite(float(r["loss"])) for r in rows)
    assert 0.0 <= float(rows[-1]["val_cord_dice"]) <= 1.0
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2, "preprocessing is cached"
    json.dumps(meta)  # metadata is plain JSON


def test_train_without_labels_fails_clearly(tmp_path, capsys):
    (tmp_path / "ds").mkdir()
    assert train_main([str(tmp_path / "ds"), str(tmp_path / "m")]) == 1
    assert "not a BIDS dataset (no dataset_description.json)" in capsys.readouterr().err
    (tmp_path / "ds" / "dataset_description.json").write_text('{"Name": "x", "BIDSVersion": "1.9.0"}')
    assert train_main([str(tmp_path / "ds"), str(tmp_path / "m")]) == 1
    assert "no image" in capsys.readouterr().err


def test_fine_tune_on_two_datasets_with_lesion_free_cases(synth_two_subjects, tmp_path):
    base = tmp_path / "base"
    assert train_main([str(synth_two_subjects), str(base), "--contrast", "T2w", "--iterations", "2",
                       "--val-fraction", "0", "--channels", "4", "8", "16", "--patch-size", "32", "32", "32",
                       "-w", str(tmp_path / "cache"), "--nthreads", "1"]) == 0
    # A second dataset with cord labels only (a healthy cord): allowed with the flag.
    import shutil

    healthy = tmp_path / "healthy"
    shutil.copytree(synth_two_subjects, healthy)
    for les in (healthy / "derivatives" / "labels").rglob("*_lesion-manual.nii.gz"):
        les.unlink()
    assert find_training_cases(healthy, ("T2w",)) == []
    cases = find_training_cases(healthy, ("T2w",), require_lesion=False)
    assert len(cases) == 2 and all(c.lesion_path is None for c in cases)
    out = tmp_path / "tuned"
    code = train_main([str(synth_two_subjects), str(out), "--add-dataset", str(healthy), "--contrast", "T2w",
                       "--allow-missing-lesion-labels", "--init-from", str(base), "--exclude-subjects", "sub-02",
                       "--augmentation", "domain", "--iterations", "2", "--val-fraction", "0",
                       "--patch-size", "32", "32", "32", "-w", str(tmp_path / "cache"), "--nthreads", "1"])
    assert code == 0
    meta = load_model(out).metadata
    assert meta["network"]["channels"] == [4, 8, 16], "the architecture comes from the initial model"
    assert meta["training"]["init_from"] == "base"
    assert meta["training"]["subjects"] == ["sub-01"]
    assert len(meta["training"]["bids_dir"]) == 2


def test_train_on_straightened_cord(synth_two_subjects, tmp_path):
    out = tmp_path / "straight"
    code = train_main([str(synth_two_subjects), str(out), "--contrast", "T2w", "--space", "straight",
                       "--iterations", "2", "--val-fraction", "0", "--channels", "4", "8", "16",
                       "--patch-size", "32", "32", "32", "-w", str(tmp_path / "cache"), "--nthreads", "1"])
    assert code == 0
    meta = load_model(out).metadata
    assert meta["space"] == "straight"
    assert meta["straight_space"]["spacing_mm"] == [0.5, 0.5, 1.0]
    assert len(list((tmp_path / "cache").glob("*_straight_*.npz"))) == 2


def test_fine_lesion_maps_label_the_straightened_cord(synth_two_subjects, tmp_path, capsys):
    fine = sorted((synth_two_subjects / "derivatives/labels").rglob("*_T2w_res-fine_lesion-manual.nii.gz"))
    assert fine, "the phantoms come with fine lesion maps"
    cases = find_training_cases(synth_two_subjects, ("T2w",), fine_lesion_label="res-fine_lesion-manual")
    assert sum(c.fine_lesion_path is not None for c in cases) == len(fine)
    out = tmp_path / "fine"
    assert _tiny(synth_two_subjects, out, tmp_path / "cache", "--space", "straight", "--iterations", "2",
                 "--val-fraction", "0", "--fine-lesion-label", "res-fine_lesion-manual") == 0
    meta = load_model(out).metadata
    assert meta["inference"]["voxel_average"] is True
    assert meta["training"]["fine_lesion_images"] == len(fine)
    assert len(list((tmp_path / "cache").glob("*_straight_fine_*.npz"))) == len(fine)
    assert load_model(out).voxel_average
    # Fine-tuning without the maps keeps the way back the model was trained for.
    tuned = tmp_path / "tuned"
    assert _tiny(synth_two_subjects, tuned, tmp_path / "cache", "--space", "straight", "--iterations", "1",
                 "--val-fraction", "0", "--init-from", str(out)) == 0
    assert load_model(tuned).voxel_average
    assert _tiny(synth_two_subjects, tmp_path / "native", tmp_path / "c2", "--iterations", "1",
                 "--fine-lesion-label", "res-fine_lesion-manual") == 1
    assert "--fine-lesion-label needs --space straight" in capsys.readouterr().err
    assert not (tmp_path / "c2").exists()


def _tiny(bids, out, cache, *extra):
    return train_main([str(bids), str(out), "--contrast", "T2w", "--channels", "4", "8", "16",
                       "--patch-size", "32", "32", "32", "-w", str(cache), "--nthreads", "1", *extra])


def test_resume_continues_from_the_checkpoint(synth_two_subjects, tmp_path):
    import torch

    out = tmp_path / "m"
    # --max-minutes 0 stops after the first iteration, like a crash after a checkpoint.
    assert _tiny(synth_two_subjects, out, tmp_path / "c", "--iterations", "4", "--val-every", "1",
                 "--val-fraction", "0.5", "--max-minutes", "0") == 0
    ckpt = torch.load(out / "checkpoint.pt", weights_only=True)  # loads without executing code
    assert ckpt["iteration"] == 1
    assert _tiny(synth_two_subjects, out, tmp_path / "c", "--iterations", "4", "--val-every", "1",
                 "--val-fraction", "0.5", "--resume") == 0
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [1, 2, 3, 4], "the log goes on where it stopped"
    assert load_model(out).metadata["training"]["iterations_done"] == 4
    assert _tiny(synth_two_subjects, out, tmp_path / "c", "--iterations", "9", "--resume") == 1


def test_same_seed_same_model_for_any_workers_and_after_a_resume(synth_two_subjects, tmp_path):
    """Each batch has a random stream of its own: worker processes and a resume change nothing."""
    import torch
    from safetensors.torch import load_file

    common = ("--iterations", "4", "--val-every", "1", "--val-fraction", "0", "--seed", "3")
    assert _tiny(synth_two_subjects, tmp_path / "plain", tmp_path / "c", *common) == 0
    # Its own cache: the images are preprocessed by the worker processes too.
    assert _tiny(synth_two_subjects, tmp_path / "workers", tmp_path / "c2", *common, "--workers", "2") == 0
    resumed = tmp_path / "resumed"
    assert _tiny(synth_two_subjects, resumed, tmp_path / "c", *common, "--max-minutes", "0") == 0
    assert _tiny(synth_two_subjects, resumed, tmp_path / "c", *common, "--resume") == 0
    assert _tiny(synth_two_subjects, tmp_path / "other_seed", tmp_path / "c", *common[:-1], "4") == 0
    weights = {name: load_file(str(tmp_path / name / "model.safetensors"))
               for name in ("plain", "workers", "resumed", "other_seed")}
    for name in ("workers", "resumed"):
        assert weights[name].keys() == weights["plain"].keys()
        for key, value in weights["plain"].items():
            assert torch.equal(weights[name][key], value), f"{name}: {key} differs"
    assert any(not torch.equal(weights["other_seed"][k], v) for k, v in weights["plain"].items()), \
        "another seed trains another model"


def test_workers_below_zero_are_refused(synth_two_subjects, tmp_path, capsys):
    assert _tiny(synth_two_subjects, tmp_path / "m", tmp_path / "c", "--workers", "-1") == 1
    assert "--workers must be >= 0" in capsys.readouterr().err


def test_a_bad_label_preprocessed_by_a_worker_is_named(synth_two_subjects, tmp_path, capsys):
    import shutil

    import nibabel as nib

    bids = tmp_path / "bids"
    shutil.copytree(synth_two_subjects, bids)
    label = next((bids / "derivatives" / "labels").rglob("sub-02_T2w_seg-manual.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((5, 5, 5), np.uint8), np.eye(4)), str(label))
    assert _tiny(bids, tmp_path / "m", tmp_path / "c", "--iterations", "1", "--workers", "2") == 1
    err = capsys.readouterr().err
    assert "sub-02_T2w_seg-manual.nii.gz" in err and "grids differ" in err
    assert not (tmp_path / "m" / "model.safetensors").exists()


def test_early_stopping_and_frozen_encoder(synth_two_subjects, tmp_path):
    import torch

    from bids_sclesion.training.network_setup import is_encoder_parameter

    base = tmp_path / "base"
    assert _tiny(synth_two_subjects, base, tmp_path / "c", "--iterations", "1", "--val-fraction", "0") == 0
    before = load_model(base).network.state_dict()
    out = tmp_path / "tuned"
    # Patience 1 with a validation every iteration stops long before 50 iterations
    # unless every check improves, which a tiny network on noise does not do for long.
    assert _tiny(synth_two_subjects, out, tmp_path / "c", "--init-from", str(base), "--freeze", "encoder",
                 "--iterations", "50", "--val-every", "1", "--val-fraction", "0.5", "--patience", "1") == 0
    meta = load_model(out).metadata
    assert meta["training"]["iterations_done"] < 50
    after = load_model(out).network.state_dict()
    enc = [k for k in before if is_encoder_parameter(k) and not k.endswith("num_batches_tracked")]
    dec = [k for k in before if not is_encoder_parameter(k)]
    assert enc and dec
    assert all(torch.equal(before[k], after[k]) for k in enc), "the frozen encoder does not change"
    assert not all(torch.equal(before[k], after[k]) for k in dec)


def test_negative_dice_weight_is_refused_before_any_work(synth_two_subjects, tmp_path, capsys):
    assert train_main([str(synth_two_subjects), str(tmp_path / "m"), "--dice-weight", "-1",
                       "-w", str(tmp_path / "c")]) == 1
    assert "--dice-weight must be >= 0, got -1.0" in capsys.readouterr().err
    assert not (tmp_path / "m").exists() and not (tmp_path / "c").exists()


def test_freeze_needs_a_pretrained_model(synth_two_subjects, tmp_path, capsys):
    assert _tiny(synth_two_subjects, tmp_path / "m", tmp_path / "c", "--freeze", "encoder", "--iterations", "1") == 1
    assert "--freeze needs --init-from" in capsys.readouterr().err


def test_config_file_with_command_line_override(synth_two_subjects, tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("contrast: T2w\niterations: 3\nval-fraction: 0\nchannels: [4, 8, 16]\n"
                   "patch_size: [32, 32, 32]\nnthreads: 1\nlearning-rate: 0.01\ndice-weight: 0.3\n")
    out = tmp_path / "m"
    assert train_main([str(synth_two_subjects), str(out), "--config", str(cfg), "--iterations", "2",
                       "-w", str(tmp_path / "c")]) == 0
    meta = load_model(out).metadata
    assert meta["training"]["iterations_done"] == 2, "the command line wins over the file"
    assert meta["training"]["config"]["learning_rate"] == 0.01, "the file wins over the defaults"
    assert meta["training"]["config"]["dice_weight"] == 0.3
    assert meta["network"]["channels"] == [4, 8, 16]
    saved = json.loads((out / "training_config.json").read_text())
    assert saved["iterations"] == 2 and saved["contrast"] == ["T2w"] and saved["patch_size"] == [32, 32, 32]


def test_bad_config_files_are_named_with_the_problem(synth_two_subjects, tmp_path, capsys):
    cases = {
        "unknown.yaml": ("iterationz: 3\n", "unknown option 'iterationz'"),
        "type.json": ('{"iterations": "many"}', "'iterations': 'many' is not a valid value"),
        "choice.yaml": ("space: sideways\n", "'space' must be one of"),
        "shape.yaml": ("patch-size: [32, 32]\n", "'patch-size' needs 3 values"),
        "list.yaml": ("- iterations\n", "expected a mapping"),
        "syntax.json": ("{iterations: 3", "not valid JSON"),
    }
    for name, (text, message) in cases.items():
        cfg = tmp_path / name
        cfg.write_text(text)
        assert train_main([str(synth_two_subjects), str(tmp_path / "m"), "--config", str(cfg)]) == 2
        err = capsys.readouterr().err
        assert str(cfg) in err and message in err, (name, err)
    assert not (tmp_path / "m").exists(), "nothing is written for a bad configuration"


def test_k_fold_split_covers_every_subject_once(synth_two_subjects):
    cases = find_training_cases(synth_two_subjects, ("T2w", "PSIR"))
    seen = []
    for fold in range(2):
        train, val = split_by_subject(cases, 0.0, seed=3, folds=2, fold=fold)
        assert {c.subject for c in train}.isdisjoint({c.subject for c in val})
        seen.extend(sorted({c.subject for c in val}))
    assert sorted(seen) == ["sub-01", "sub-02"]
    import pytest

    with pytest.raises(ValueError, match="3 folds need at least 3 subjects"):
        split_by_subject(cases, 0.0, seed=3, folds=3)


def test_other_label_naming_styles(synth_two_subjects, tmp_path):
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(synth_two_subjects, bids)
    for f in (bids / "derivatives" / "labels").rglob("*.nii.gz"):
        f.rename(f.with_name(f.name.replace("_seg-manual", "_label-SC_seg").replace("_lesion-manual", "_label-lesion_mask")))
    assert find_training_cases(bids, ("T2w",)) == []
    cases = find_training_cases(bids, ("T2w",), cord_label="label-SC_seg", lesion_label="label-lesion_mask")
    assert len(cases) == 2
    out = tmp_path / "m"
    assert _tiny(bids, out, tmp_path / "c", "--cord-label", "label-SC_seg", "--lesion-label", "label-lesion_mask",
                 "--iterations", "1", "--folds", "2", "--fold", "1") == 0
    assert len(load_model(out).metadata["training"]["validation_subjects"]) == 1


def test_images_selected_like_the_app(synth_two_subjects, tmp_path, capsys):
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(synth_two_subjects, bids)
    # sub-02's T2w becomes an axial acquisition; labels follow the image name.
    for f in list(bids.rglob("sub-02_T2w*")):
        f.rename(f.with_name(f.name.replace("sub-02_T2w", "sub-02_acq-ax_T2w")))
    cases = find_training_cases(bids, ("T2w", "PSIR"), filters={"t2w": {"acquisition": "ax"}})
    assert sorted(c.image_path.name for c in cases) == ["sub-01_PSIR.nii.gz", "sub-02_PSIR.nii.gz",
                                                        "sub-02_acq-ax_T2w.nii.gz"]
    assert [c.subject for c in find_training_cases(bids, ("T2w",), participant_label=["01"])] == ["sub-01"]
    filters = tmp_path / "filters.json"
    filters.write_text('{"acquisition": "ax"}')
    out = tmp_path / "m"
    assert _tiny(bids, out, tmp_path / "c", "--bids-filter-file", str(filters), "--iterations", "1",
                 "--val-fraction", "0") == 0
    assert load_model(out).metadata["training"]["subjects"] == ["sub-02"]
    assert _tiny(bids, tmp_path / "m2", tmp_path / "c", "--participant-label", "sub-01", "--iterations", "1",
                 "--val-fraction", "0") == 0
    assert load_model(tmp_path / "m2").metadata["training"]["subjects"] == ["sub-01"]
    filters.write_text('{"acquisition": "sag"}')
    assert _tiny(bids, tmp_path / "m3", tmp_path / "c", "--bids-filter-file", str(filters)) == 1
    assert 'matching {"acquisition": "sag"}' in capsys.readouterr().err
    filters.write_text("[1, 2]")
    assert _tiny(bids, tmp_path / "m3", tmp_path / "c", "--bids-filter-file", str(filters)) == 2
    assert "must hold a JSON object" in capsys.readouterr().err


def test_validation_scores_come_from_the_evaluation_code(synth_two_subjects, tmp_path):
    """The log carries the scores of bids_sclesion-eval; the saved model is the best by --monitor."""
    from bids_sclesion.training.config import monitored_score

    out = tmp_path / "m"
    assert _tiny(synth_two_subjects, out, tmp_path / "c", "--iterations", "3", "--val-every", "1",
                 "--val-fraction", "0.5", "--monitor", "cord_dice") == 0
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert {"val_cord_dice", "val_lesion_dice", "val_lesion_f1", "val_lesion_f1_10pct",
            "val_false_positives"} <= set(rows[0])
    best_row = max(rows, key=lambda r: (float(r["val_cord_dice"]), -int(r["iteration"])))
    meta = load_model(out).metadata["training"]
    assert meta["best_validation"]["val_cord_dice"] == float(best_row["val_cord_dice"])
    assert meta["config"]["monitor"] == "cord_dice"
    # The monitored metric decides; undefined metrics count as 0 and only break ties.
    assert monitored_score({"val_lesion_f1": 0.9, "val_lesion_dice": 0.1}, "lesion_f1") > \
        monitored_score({"val_lesion_f1": 0.8, "val_lesion_dice": 0.9}, "lesion_f1")
    assert monitored_score({"val_lesion_f1": float("nan"), "val_cord_dice": 0.8}, "lesion_f1") > \
        monitored_score({"val_lesion_f1": float("nan"), "val_cord_dice": 0.7}, "lesion_f1")


def test_tensorboard_scalars(synth_two_subjects, tmp_path):
    import pytest

    pytest.importorskip("tensorboard", reason="tensorboard is an optional dependency")
    out = tmp_path / "m"
    assert _tiny(synth_two_subjects, out, tmp_path / "c", "--iterations", "2", "--val-every", "1",
                 "--val-fraction", "0.5", "--tensorboard") == 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "validation/lesion_f1", "validation/cord_dice"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2]


def test_torchrun_data_parallel(synth_two_subjects, tmp_path):
    """Two processes under torchrun (gloo on the CPU): one model, one log, no code change."""
    import os
    import shutil
    import subprocess
    import sys

    import pytest

    torchrun = shutil.which("torchrun", path=os.path.dirname(sys.executable)) or shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not installed")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "bids_sclesion.cli.train",
         str(synth_two_subjects), str(out), "--contrast", "T2w", "--channels", "4", "8", "16",
         "--patch-size", "32", "32", "32", "-w", str(tmp_path / "c"), "--nthreads", "1", "--iterations", "3",
         "--val-every", "2", "--val-fraction", "0.5"],
        capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = load_model(out).metadata["training"]
    assert meta["processes"] == 2 and meta["iterations_done"] == 3
    rows = list(csv.DictReader((out / "training_log.csv").open()))
    assert [int(r["iteration"]) for r in rows] == [2, 3], "one process writes the log"
    assert json.loads((out / "training_config.json").read_text())["iterations"] == 3


def test_dataset_weights_are_checked_and_honoured(synth_two_subjects, tmp_path, capsys):
    from bids_sclesion.training.config import draw_probabilities

    np.testing.assert_allclose(draw_probabilities(np.array([3.0, 1.0]), [5, 2]), [0.75, 0.25])
    # A dataset with no training image left gives its share to the others.
    np.testing.assert_allclose(draw_probabilities(np.array([3.0, 1.0, 1.0]), [5, 0, 2]), [0.75, 0.0, 0.25])
    code = _tiny(synth_two_subjects, tmp_path / "m", tmp_path / "c", "--add-dataset", str(synth_two_subjects),
                 "--dataset-weights", "1", "--iterations", "1")
    assert code == 1
    assert "--dataset-weights: 1 weights for 2 datasets" in capsys.readouterr().err
    code = _tiny(synth_two_subjects, tmp_path / "m", tmp_path / "c", "--add-dataset", str(synth_two_subjects),
                 "--dataset-weights", "0", "0", "--iterations", "1")
    assert code == 1
    assert "not all 0" in capsys.readouterr().err
    out = tmp_path / "weighted"
    assert _tiny(synth_two_subjects, out, tmp_path / "c", "--add-dataset", str(synth_two_subjects),
                 "--dataset-weights", "4", "1", "--iterations", "2", "--val-fraction", "0") == 0
    assert load_model(out).metadata["training"]["config"]["dataset_weights"] == [4.0, 1.0]


def test_validation_limit_returns_unused_subjects_to_training(tmp_path):
    from bids_sclesion.training.cases import TrainingCase, limit_validation

    def case(subject, suffix):
        return TrainingCase(subject, tmp_path / f"{subject}_{suffix}.nii.gz", tmp_path / "cord.nii.gz", None)

    train = [case("sub-01", "T2w")]
    val = [case(s, x) for s in ("sub-02", "sub-03", "sub-04") for x in ("T2w", "T1w")]
    new_train, kept = limit_validation(train, val, 3)
    assert len(kept) == 3 and {c.suffix for c in kept} == {"T2w", "T1w"}
    validating = {c.subject for c in kept}
    # The split stays by subject, and no subject is left out of both.
    assert validating.isdisjoint({c.subject for c in new_train})
    assert validating | {c.subject for c in new_train} == {"sub-01", "sub-02", "sub-03", "sub-04"}
    new_train, kept = limit_validation(train, val, 100)
    assert new_train == train and len(kept) == 6, "nothing is returned when every image validates"


def test_split_keeps_subjects_of_the_pretrained_model_out_of_validation(tmp_path):
    from bids_sclesion.training.cases import TrainingCase, limit_validation

    cases = [TrainingCase(f"sub-{i:02d}", tmp_path / f"sub-{i:02d}_T2w.nii.gz", tmp_path / "cord.nii.gz", None)
             for i in range(1, 11)]
    seen = {f"sub-{i:02d}" for i in range(1, 9)}  # the pretrained model trained on sub-01..08
    for seed in range(5):
        train, val = split_by_subject(cases, 0.2, seed=seed, seen_before=seen)
        assert {c.subject for c in val} == {"sub-09", "sub-10"}, seed
        assert {c.subject for c in train} == seen
    # More validation subjects than unseen ones: every unseen subject validates, then seen ones.
    train, val = split_by_subject(cases, 0.3, seed=0, seen_before=seen)
    validating = {c.subject for c in val}
    assert len(validating) == 3 and {"sub-09", "sub-10"} < validating
    assert validating.isdisjoint({c.subject for c in train})
    # Capping the validation images keeps the unseen subjects, not the first ones in dataset order.
    train, val = split_by_subject(cases, 0.5, seed=0, seen_before=seen)
    _, kept = limit_validation(train, val, 2)
    assert {c.subject for c in kept} == {"sub-09", "sub-10"}


def test_fine_tuning_validates_on_subjects_the_pretrained_model_never_saw(synth_two_subjects, tmp_path, caplog):
    def tiny(out, *extra):
        return _tiny(synth_two_subjects, out, tmp_path / "c", "--iterations", "2", *extra)

    base = tmp_path / "base"
    assert tiny(base, "--exclude-subjects", "sub-02", "--val-fraction", "0") == 0
    assert load_model(base).metadata["training"]["subjects"] == ["sub-01"]
    for seed in ("0", "1", "2"):
        out = tmp_path / f"tuned{seed}"
        assert tiny(out, "--init-from", str(base), "--val-fraction", "0.5", "--seed", seed) == 0
        training = load_model(out).metadata["training"]
        assert training["validation_subjects"] == ["sub-02"] and training["subjects"] == ["sub-01"], seed
    # A pretrained model that saw every subject: one of them validates, with a warning.
    seen_all = tmp_path / "seen_all"
    assert tiny(seen_all, "--val-fraction", "0") == 0
    with caplog.at_level("WARNING", logger="bids_sclesion.train"):
        assert tiny(tmp_path / "tuned_seen", "--init-from", str(seen_all), "--val-fraction", "0.5") == 0
    assert "were in the training of" in caplog.text


def test_a_grey_matter_output_leaves_the_pretrained_outputs_unchanged():
    import torch

    from bids_sclesion.model.network import NetworkConfig, build_network, load_pretrained

    torch.manual_seed(0)
    small = NetworkConfig(channels=(4, 8, 16), strides=(2, 2))
    old = build_network(small).eval()
    new = build_network(NetworkConfig(channels=(4, 8, 16), strides=(2, 2), out_channels=3)).eval()
    load_pretrained(new, old.state_dict())
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        a, b = old(x), new(x)
    assert b.shape[1] == 3
    assert torch.allclose(a, b[:, :2], atol=1e-5), "the cord and lesion outputs must not change"
    with pytest.raises(ValueError, match="does not fit"):
        load_pretrained(old, new.state_dict())


@pytest.mark.parametrize("channels, outputs", [((8, 16, 32), 2), ((4, 12, 16), 3), ((6, 8, 24), 2)])
def test_a_wider_network_starts_out_computing_what_the_pretrained_one_does(channels, outputs):
    import torch

    from bids_sclesion.model.network import NetworkConfig, build_network, load_pretrained

    torch.manual_seed(0)
    old = build_network(NetworkConfig(channels=(4, 8, 16), strides=(2, 2))).eval()
    new = build_network(NetworkConfig(channels=channels, strides=(2, 2), out_channels=outputs)).eval()
    load_pretrained(new, old.state_dict(), pretrained=old)
    x = torch.randn(2, 1, 32, 32, 24)
    with torch.no_grad():
        a, b = old(x), new(x)
    assert torch.allclose(a, b[:, :2], atol=1e-5), "widening must not change what the network computes"
    # The new channels are live: the loss reaches the weights that connect them to the old outputs.
    new.train()
    new(x)[:, :2].sum().backward()
    grads = [p.grad for name, p in new.named_parameters() if name.endswith("weight") and p.dim() > 1]
    assert all(g is not None and g.abs().sum() > 0 for g in grads)
    with pytest.raises(ValueError, match="the pretrained network is needed"):
        load_pretrained(build_network(NetworkConfig(channels=channels, strides=(2, 2))), old.state_dict())


def test_fine_tuning_into_a_wider_network(synth_two_subjects, tmp_path, capsys):
    base = tmp_path / "base"
    assert _tiny(synth_two_subjects, base, tmp_path / "c", "--iterations", "1", "--val-fraction", "0") == 0
    wide = tmp_path / "wide"
    assert _tiny(synth_two_subjects, wide, tmp_path / "c", "--iterations", "2", "--val-fraction", "0",
                 "--init-from", str(base), "--channels", "8", "16", "32") == 0
    assert load_model(wide).metadata["network"]["channels"] == [8, 16, 32]
    assert json.loads((wide / "training_config.json").read_text())["channels"] == [8, 16, 32]
    # Without --channels a fine-tuned model keeps the pretrained network, and its configuration says so.
    same = tmp_path / "same"
    assert train_main([str(synth_two_subjects), str(same), "--contrast", "T2w", "--patch-size", "32", "32", "32",
                       "-w", str(tmp_path / "c"), "--nthreads", "1", "--iterations", "1", "--val-fraction", "0",
                       "--init-from", str(wide)]) == 0
    assert json.loads((same / "training_config.json").read_text())["channels"] == [8, 16, 32]
    capsys.readouterr()
    assert _tiny(synth_two_subjects, tmp_path / "narrow", tmp_path / "c", "--iterations", "1",
                 "--init-from", str(base), "--channels", "4", "4", "16") == 1
    assert "may be wider at each level" in capsys.readouterr().err
    assert _tiny(synth_two_subjects, tmp_path / "frozen", tmp_path / "c", "--iterations", "1",
                 "--init-from", str(base), "--channels", "8", "16", "32", "--freeze", "encoder") == 1
    assert "new encoder channels" in capsys.readouterr().err
    assert not (tmp_path / "narrow" / "model.safetensors").exists()


@pytest.fixture(scope="module")
def synth_grey_matter(tmp_path_factory):
    from bids_sclesion.phantoms import generate_dataset

    out = tmp_path_factory.mktemp("synth_gm") / "bids"
    generate_dataset(out, n_subjects=2, contrasts=("T2w",), seed=7, fov_scale=0.5, grey_matter=True)
    # sub-02 has no grey matter label: its samples train cord and lesion only.
    for f in (out / "derivatives/labels/sub-02/anat").glob("*_gmseg-manual.*"):
        f.unlink()
    return out


def test_training_with_grey_matter_labels(synth_grey_matter, tmp_path):
    from bids_sclesion.model.cascade import segment_straightened
    from bids_sclesion.model.inference import predict_probabilities

    out = tmp_path / "gm"
    assert _tiny(synth_grey_matter, out, tmp_path / "c", "--iterations", "3", "--val-fraction", "0",
                 "--space", "straight", "--grey-matter-label", "gmseg-manual") == 0
    model = load_model(out)
    assert model.metadata["outputs"] == ["cord", "lesion", "grey_matter"]
    assert model.metadata["network"]["out_channels"] == 3
    assert model.metadata["training"]["grey_matter_images"] == 1
    volume = np.random.default_rng(0).random((64, 64, 40)).astype(np.float32)
    assert predict_probabilities(model.network, volume, roi_size=model.roi_size).shape == (3, 64, 64, 40)
    assert segment_straightened(volume, model).shape == (2, 64, 64, 40), "the app reads cord and lesion only"
    assert segment_straightened(volume, model, tta=True).shape == (4, 2, 64, 64, 40)
    # Fine-tuning a two-output model adds the grey matter output.
    base = tmp_path / "base"
    assert _tiny(synth_grey_matter, base, tmp_path / "c", "--iterations", "2", "--val-fraction", "0",
                 "--space", "straight") == 0
    assert load_model(base).metadata["outputs"] == ["cord", "lesion"]
    tuned = tmp_path / "tuned"
    assert _tiny(synth_grey_matter, tuned, tmp_path / "c", "--iterations", "2", "--val-fraction", "0",
                 "--space", "straight", "--init-from", str(base), "--grey-matter-label", "gmseg-manual") == 0
    assert load_model(tuned).metadata["outputs"] == ["cord", "lesion", "grey_matter"]


def test_grey_matter_label_that_matches_nothing_is_an_error(synth_two_subjects, tmp_path, capsys):
    assert _tiny(synth_two_subjects, tmp_path / "m", tmp_path / "c", "--iterations", "1",
                 "--grey-matter-label", "gmseg-manual") == 1
    assert "no image has a grey matter label <stem>_gmseg-manual.nii.gz" in capsys.readouterr().err


def test_batch_logs_get_progress_lines_between_validations(synth_two_subjects, tmp_path, capsys, monkeypatch):
    import bids_sclesion.training.trainer as train_module

    # Under SLURM or nohup there is no terminal for the progress bar: progress comes as timed lines.
    monkeypatch.setattr(train_module, "BATCH_REPORT_SECONDS", 0.0)
    assert _tiny(synth_two_subjects, tmp_path / "m", tmp_path / "c", "--iterations", "3", "--val-every", "3",
                 "--val-fraction", "0.5") == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "it/s, about" in line]
    assert [line.split()[2] for line in lines] == ["1/3", "2/3", "3/3"], lines
    assert all(line.startswith("[train] it ") and " min left" in line for line in lines)


def test_bfloat16_on_the_cpu_trains_and_is_recorded(synth_two_subjects, tmp_path, capsys, monkeypatch):
    """--cpu-bf16 trains and says so in the model; a CPU without native bfloat16 is refused before any work."""
    import torch

    from bids_sclesion.model import inference

    common = ("--iterations", "3", "--val-every", "3", "--val-fraction", "0.5", "--seed", "1")
    if inference.cpu_has_native_bfloat16():
        assert _tiny(synth_two_subjects, tmp_path / "bf16", tmp_path / "c", *common, "--cpu-bf16") == 0
        model = load_model(tmp_path / "bf16")
        assert model.metadata["training"]["config"]["cpu_bf16"] is True
        assert all(p.dtype == torch.float32 for p in model.network.parameters()), "weights stay float32"
        assert all(torch.isfinite(p).all() for p in model.network.parameters())
    monkeypatch.setattr(inference, "cpu_has_native_bfloat16", lambda: False)
    capsys.readouterr()
    assert _tiny(synth_two_subjects, tmp_path / "refused", tmp_path / "c", *common, "--cpu-bf16") == 1
    assert "no native bfloat16" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists(), "refused before any work"
