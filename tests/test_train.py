"""Training entry point on a tiny synthetic dataset (a few iterations on the CPU)."""
import csv
import json

import numpy as np

from bids_sclesion.cli.train import main as train_main
from bids_sclesion.model.io import load_model
from bids_sclesion.model.train import find_training_cases, split_by_subject


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
