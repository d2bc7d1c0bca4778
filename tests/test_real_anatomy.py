"""The real-anatomy benchmark's scoring (benchmarks/real_anatomy.py) on tiny cases."""
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest

from bids_sclesion.evaluate import score_healthy_arrays, summarise_healthy

from .conftest import requires_shared

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
real_anatomy = pytest.importorskip("real_anatomy")


def _healthy_case():
    cord = np.zeros((10, 10, 10), bool)
    cord[2:8, 2:8, :] = True
    grey_matter = np.zeros_like(cord)
    grey_matter[4:6, 4:6, :] = True
    lesion = np.zeros_like(cord)
    lesion[4:6, 4:7, 1:3] = True  # 12 voxels, 8 of them in grey matter
    lesion[2, 2, 7] = True  # one voxel, in white matter
    return cord, grey_matter, lesion


def test_every_component_on_a_healthy_cord_is_a_false_lesion():
    cord, grey_matter, lesion = _healthy_case()
    score = score_healthy_arrays("sub-x_T2w.nii.gz", "T2w", cord, lesion, cord, grey_matter, voxel_mm3=0.5)
    assert score.false_lesions == 2
    assert score.false_volume_mm3 == pytest.approx(13 * 0.5)
    assert score.in_grey_matter_mm3 == pytest.approx(8 * 0.5)
    assert score.largest_in_grey_matter_mm3 == pytest.approx(8 * 0.5)
    assert score.cord_dice == pytest.approx(1.0)


def test_healthy_scores_without_labels_and_their_summary():
    cord, grey_matter, lesion = _healthy_case()
    clean = score_healthy_arrays("sub-y_T2w.nii.gz", "T2w", cord, np.zeros_like(cord), None, None, 1.0)
    assert clean.false_lesions == 0 and math.isnan(clean.cord_dice) and math.isnan(clean.in_grey_matter_mm3)
    half_cord = cord.copy()
    half_cord[5:8] = False
    dirty = score_healthy_arrays("sub-x_T2starw.nii.gz", "T2starw", half_cord, lesion, cord, grey_matter, 1.0)
    summary = summarise_healthy([clean, dirty])
    assert summary["all"]["images"] == 2
    assert summary["all"]["false_lesions_per_image"] == pytest.approx(1.0)
    assert summary["all"]["false_volume_per_image_mm3"] == pytest.approx(6.5)
    # The grey matter's share counts only images that have a grey matter mask.
    assert summary["all"]["images_with_grey_matter"] == 1
    assert summary["all"]["grey_matter_share"] == pytest.approx(8 / 13)
    assert summary["all"]["images_with_cord"] == 1
    assert summary["T2starw"]["cord_dice"] == pytest.approx(2 * 108 / (108 + 216))
    assert summary["T2w"]["false_lesions_per_image"] == 0


def test_targets_say_met_or_not_with_the_figure():
    cord, grey_matter, lesion = _healthy_case()
    dirty = score_healthy_arrays("sub-x_T2starw.nii.gz", "T2starw", cord, lesion, cord, grey_matter, 2.0)
    lesions = {"T2starw": {"images": 1, "lesion_dice": 0.7, "lesion_f1": 0.8}, "all": {"images": 1}}
    lines = real_anatomy.check_targets([dirty], summarise_healthy([dirty]), lesions)
    assert "NOT met: false lesions per healthy image 2.00 (<= 0.2)" in lines
    assert "NOT met: largest false lesion inside grey matter 16.0 mm3 (<= 10)" in lines
    assert "met: cord Dice >= 0.85 on every image: 1/1" in lines
    assert any(line.startswith("NOT met: T2starw inserted lesions: Dice 0.700") for line in lines)


def test_seen_subjects_follow_the_model_it_was_initialised_from(tmp_path):
    def model(name, subjects, validation=(), init=None):
        folder = tmp_path / name
        folder.mkdir()
        training = {"subjects": list(subjects), "validation_subjects": list(validation)}
        if init:
            training["init_from"] = str(init)
        (folder / "model.json").write_text(json.dumps({"name": name, "training": training}))
        return folder

    base = model("base", ["sub-a"])
    child = model("child", ["sub-b"], ["sub-c"], init=base)
    assert real_anatomy.seen_subjects(child) == {"sub-a", "sub-b", "sub-c"}
    looped = model("looped", ["sub-d"], init=tmp_path / "looped")  # initialised from itself: no endless loop
    assert real_anatomy.seen_subjects(looped) == {"sub-d"}


def test_bundled_stage2_saw_neither_held_out_collection():
    seen = real_anatomy.seen_subjects("stage2")
    assert not seen & {"sub-9418", "sub-9584", "sub-9604", "sub-unf01"}
    assert "sub-errsm11" in seen


def test_benchmark_dataset_links_every_clinical_real_image(tmp_path):
    shared = requires_shared("")
    sources = real_anatomy.build_real_dataset(tmp_path / "real", shared)
    assert set(sources.values()) == {"sct-t2w", "gm-challenge", "spine-mini", "sct-examples"}
    images = sorted(p.name for p in (tmp_path / "real").glob("sub-*/anat/*.nii.gz"))
    assert "sub-errsm20_T2w.nii.gz" in images and "sub-9418_run-2_T2starw.nii.gz" in images
    assert not any("MTS" in name or "pam50" in name for name in images)
    grey = list((tmp_path / "real" / "derivatives" / "labels").glob("sub-*/anat/*_gmseg-manual.nii.gz"))
    assert len(grey) == 3
    for image in (tmp_path / "real").glob("sub-*/anat/*.nii.gz"):
        assert image.resolve().is_relative_to(shared.resolve())  # linked, never copied or written


def test_compare_tables_put_model_sets_side_by_side():
    cord, grey_matter, lesion = _healthy_case()
    a = summarise_healthy([score_healthy_arrays("sub-x_T2w.nii.gz", "T2w", cord, lesion, cord, grey_matter, 1.0)])
    b = summarise_healthy([score_healthy_arrays("sub-x_T2w.nii.gz", "T2w", cord, 0 * lesion, cord, grey_matter, 1.0)])
    lesions = {"T2w": {"images": 1, "lesion_dice": 0.5, "lesion_tpr": 1.0, "lesion_ppv": 0.5, "lesion_f1": 0.667,
                       "false_positives": 1}}
    table = real_anatomy.compare_tables([{"name": "before", "healthy_summary": a, "lesion_summary": lesions},
                                         {"name": "after", "healthy_summary": b, "lesion_summary": {}}])
    rows = table.splitlines()[2:]
    assert rows[0].startswith("| before | T2w | 1 | 2.000 | 13 |") and rows[0].endswith("| 1 | 0.500 | 1.000 | 0.500 | 0.667 | 1 |")
    assert rows[2].startswith("| after | T2w | 1 | 0.000 | 0 |") and rows[2].endswith("| 0 | - | - | - | - | - |")
    assert [r.split(" | ")[1] for r in rows] == ["T2w", "all", "T2w", "all"]


def test_model_card_leads_with_the_real_anatomy_section_and_replaces_an_old_one():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from card_real_anatomy import HEADING, splice

    card = "# Model card: `x`\n\n## What it does\nA U-Net.\n"
    once = splice(card, f"{HEADING}\nold figures\n\n")
    assert once.index(HEADING) < once.index("## What it does")
    twice = splice(once, f"{HEADING}\nnew figures\n\n")
    assert "old figures" not in twice and twice.count(HEADING) == 1
    assert twice.startswith("# Model card: `x`\n\n" + HEADING + "\nnew figures") and twice.endswith("A U-Net.\n")


def test_a_collection_is_measured_only_by_models_that_never_saw_it():
    status = real_anatomy.collection_status
    subjects = ["sub-9418", "sub-9584"]
    refused = status(subjects, "stage1", "stage2", [], False)
    assert refused.startswith("no: trained on by stage 1 (sub-9418") and not real_anatomy.is_measured(refused)
    assert status(["sub-unf01"], "default", "stage2", [], False) == "yes"
    assert status(["sub-unf01"], "default", "stage2", [], False, selected=False) == "not run (--collections)"
    assert status(["sub-unf01"], "default", "nowhere", ["nowhere"], False) == "no: no model at nowhere"
    allowed = status(subjects, "stage1", "stage2", [], True)
    assert allowed.startswith("seen by stage 1") and real_anatomy.is_measured(allowed)
    assert real_anatomy.is_measured(status(["sub-unf01"], "default", "stage2", [], False))




def test_the_stage1_fallback_is_a_fold_model_or_off_when_stage1_is():
    from argparse import Namespace

    from bids_sclesion.config import DEFAULT_STAGE1_FALLBACK

    folds = Path("cv")
    fallback_for = real_anatomy.fallback_for
    assert fallback_for("spine-mini", Namespace(fallback_folds=folds, stage1_fallback=None)) == "cv/fold-spine-mini"
    # Fold models for stage 1 and none for the fallback: no fallback, so no model that saw the image makes its cord.
    assert fallback_for("spine-mini", Namespace(stage1_folds=folds, fallback_folds=None, stage1_fallback=None)) is None
    assert fallback_for("spine-mini", Namespace(stage1_folds=None, fallback_folds=None, stage1_fallback=None)) \
        == DEFAULT_STAGE1_FALLBACK
    assert fallback_for("spine-mini", Namespace(stage1_folds=None, fallback_folds=None, stage1_fallback="none")) is None
    options = real_anatomy.app_model_options("spine-mini", Namespace(stage1_folds=folds, fallback_folds=None,
                                                                     stage1_fallback=None, locator="none"))
    assert options == ("--stage1-fallback", "none")
    # A fallback that saw the collection keeps it from being measured, as any other model would.
    refused = real_anatomy.collection_status(["sub-9418"], "default", "stage2", [], False, fallback="stage1")
    assert refused.startswith("no: trained on by the stage-1 fallback (sub-9418")
