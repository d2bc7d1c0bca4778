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
