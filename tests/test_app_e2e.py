"""End to end: participant and group levels on synthetic subjects with the bundled model."""
import csv
import json
import subprocess
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_sclesion.cli.parser import DEFAULT_STAGE1, DEFAULT_STAGE2
from bids_sclesion.cli.run import main
from bids_sclesion.evaluate import evaluate_outputs

from .conftest import validator_available

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def app_run(synth_two_subjects, tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    out, work = root / "out", root / "work"
    before = {p: p.stat().st_mtime_ns for p in synth_two_subjects.rglob("*") if p.is_file()}
    code = main([str(synth_two_subjects), str(out), "participant", "-w", str(work), "--nprocs", "2",
                 "--omp-nthreads", "1"])
    after = {p: p.stat().st_mtime_ns for p in synth_two_subjects.rglob("*") if p.is_file()}
    return code, out, work, before, after


def test_participant_level_finds_the_lesions(app_run, synth_two_subjects):
    code, out, work, before, after = app_run
    assert code == 0
    assert before == after, "the input dataset must not change"
    scores, summary = evaluate_outputs(synth_two_subjects, out)
    assert len(scores) == 4  # 2 subjects x (T2w, PSIR)
    overall = summary["all"]
    assert overall["cord_dice"] > 0.8, summary
    assert overall["true_lesions"] > 0
    assert overall["lesion_tpr"] >= 0.5, summary
    assert overall["lesion_dice"] > 0.4, summary


def test_outputs_are_on_the_native_grid_with_sidecars(app_run, synth_two_subjects):
    _, out, _, _, _ = app_run
    for src in sorted(synth_two_subjects.glob("sub-*/anat/*.nii.gz")):
        src_img = nib.load(str(src))
        stem, suffix = src.name.split(".")[0].rsplit("_", 1)
        for label, kind in (("lesion", "mask"), ("SC", "mask"), ("lesion", "probseg")):
            path = out / src.parent.relative_to(synth_two_subjects) / f"{stem}_space-orig_label-{label}_desc-{suffix}_{kind}.nii.gz"
            img = nib.load(str(path))
            assert img.shape == src_img.shape and np.allclose(img.affine, src_img.affine, atol=1e-4)
            meta = json.loads(path.with_name(path.name.replace(".nii.gz", ".json")).read_text())
            assert meta["Sources"] == [f"bids:raw:{src.relative_to(synth_two_subjects).as_posix()}"]
            assert meta["Model"]["Stage1"] == DEFAULT_STAGE1 and meta["Model"]["Stage2"] == DEFAULT_STAGE2
            # what the networks computed in on this machine (--precision auto: bfloat16 only where it is native)
            assert meta["Model"]["Precision"] in ("float32", "bfloat16", "float16")
        lesion = np.asarray(nib.load(str(out / src.parent.relative_to(synth_two_subjects) / f"{stem}_space-orig_label-lesion_desc-{suffix}_mask.nii.gz")).dataobj) > 0
        cord = np.asarray(nib.load(str(out / src.parent.relative_to(synth_two_subjects) / f"{stem}_space-orig_label-SC_desc-{suffix}_mask.nii.gz")).dataobj) > 0
        assert not np.any(lesion & ~cord), "no lesion outside the cord"
        table = out / src.parent.relative_to(synth_two_subjects) / f"{stem}_desc-{suffix}_lesions.tsv"
        rows = list(csv.DictReader(table.open(), delimiter="\t"))
        vox = abs(np.linalg.det(src_img.affine[:3, :3]))
        assert sum(float(r["volume_mm3"]) for r in rows) == pytest.approx(lesion.sum() * vox, rel=1e-3, abs=0.1)
    desc = json.loads((out / "dataset_description.json").read_text())
    assert desc["DatasetType"] == "derivative" and desc["GeneratedBy"][0]["Name"] == "bids_sclesion"


@pytest.mark.skipif(not validator_available(), reason="bids-validator-deno is not installed")
def test_output_dataset_is_bids_valid(app_run):
    _, out, _, _, _ = app_run
    proc = subprocess.run(["bids-validator-deno", "--format", "json", str(out)], capture_output=True, text=True)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors = [i for i in issues if i["severity"] == "error"]
    assert errors == [], errors


def test_rerun_reuses_the_work_directory(app_run, synth_two_subjects, capsys):
    _, out, work, _, _ = app_run
    seg_results = sorted(work.rglob("segment_cord_lesion/result_segment_cord_lesion.pklz"))
    seg_results += sorted(work.rglob("segment_straightened_cord/result_segment_straightened_cord.pklz"))
    assert len(seg_results) == 8, "both stages ran for the 4 images"
    stamps = [p.stat().st_mtime_ns for p in seg_results]
    code = main([str(synth_two_subjects), str(out), "participant", "-w", str(work), "--nprocs", "1",
                 "--participant-label", "sub-01", "--skip-bids-validation"])
    assert code == 0
    assert [p.stat().st_mtime_ns for p in seg_results] == stamps, "finished nodes are not run again"
    assert "2 image(s) of 1 participant(s) done, 0 failed" in capsys.readouterr().out


def test_group_level(app_run, synth_two_subjects):
    _, out, _, _, _ = app_run
    assert main([str(synth_two_subjects), str(out), "group"]) == 0
    rows = list(csv.DictReader((out / "group_lesions.tsv").open(), delimiter="\t"))
    assert len(rows) == 4
    for row in rows:
        sub, suffix = row["participant_id"], row["suffix"]
        table = out / sub / "anat" / f"{sub}_desc-{suffix}_lesions.tsv"
        lesions = list(csv.DictReader(table.open(), delimiter="\t"))
        assert int(row["n_lesions"]) == len(lesions)
        assert float(row["total_lesion_volume_mm3"]) == pytest.approx(sum(float(r["volume_mm3"]) for r in lesions), abs=0.05)
        assert float(row["cord_volume_mm3"]) > 1000
        # levels and CSA: what the image's own tables say, carried into the group tables
        csa = list(csv.DictReader((out / sub / "anat" / f"{sub}_desc-{suffix}_csa.tsv").open(), delimiter="\t"))
        inner = csa[len(csa) // 10: -(len(csa) // 10)]  # the mask's capped ends are partial slices
        assert inner and all(20 < float(r["csa_mm2"]) < 150 for r in inner), "cord-sized areas"
        levels = list(csv.DictReader((out / sub / "anat" / f"{sub}_desc-{suffix}_levels.tsv").open(),
                                     delimiter="\t"))
        c2c3 = [float(r["csa_mm2"]) for r in csa if r["vertebral_level"] in ("C2", "C3")]
        assert row["csa_c2c3_mm2"] == (f"{np.mean(c2c3):.2f}".rstrip("0").rstrip(".") if c2c3 else "n/a") or \
            float(row["csa_c2c3_mm2"]) == pytest.approx(np.mean(c2c3), abs=0.01)
        assert row["levels"] == (f"{levels[0]['vertebral_level']}-{levels[-1]['vertebral_level']}" if levels else "n/a")
        assert sum(int(r["n_lesions"]) for r in levels) == sum(1 for r in lesions if r["vertebral_level"] != "n/a")
        assert all(r["vertebral_levels_spanned"] for r in lesions)
    per_level = list(csv.DictReader((out / "group_levels.tsv").open(), delimiter="\t"))
    assert per_level, "the bundled synthetic subjects have levels in at least one image"
    page = (out / "group.html").read_text()
    assert "figures/group_lesions_by_level.png" in page and "C2-C3 CSA" in page
    subject_page = (out / "sub-02.html").read_text()
    assert "_levels.png" in subject_page


def test_one_bad_image_does_not_stop_the_others(synth_two_subjects, tmp_path, capsys):
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(synth_two_subjects, bids)
    bad = bids / "sub-02" / "anat" / "sub-02_T2w.nii.gz"
    bad.write_bytes(bad.read_bytes()[:2000])  # truncated download
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--contrast", "T2w",
                 "--skip-bids-validation", "--nprocs", "2"])
    assert code == 1
    printed = capsys.readouterr().out
    assert "1 image(s) of 2 participant(s) done, 1 failed" in printed
    # The reason is printed with the failed image, and shown in its subject's report.
    failed_line = next(line for line in printed.splitlines() if "FAILED: sub-02_T2w.nii.gz" in line)
    assert "cannot read image" in failed_line, failed_line
    assert "cannot read image" in (out / "sub-02.html").read_text()
    assert (out / "sub-01" / "anat" / "sub-01_space-orig_label-lesion_desc-T2w_mask.nii.gz").exists()
    assert not list((out / "sub-02").rglob("*.nii.gz")) if (out / "sub-02").exists() else True
    crash = "".join(p.read_text() for p in (tmp_path / "work" / "crashes").glob("*.txt"))
    assert "sub-02_T2w.nii.gz" in crash and "cannot read image" in crash


def test_straightening_warps_are_written_and_usable_with_ants(app_run, synth_two_subjects, tmp_path):
    ants = pytest.importorskip("ants")
    from bids_sclesion.core.metrics import dice

    _, out, _, _, _ = app_run
    anat = out / "sub-01" / "anat"
    to_straight = anat / "sub-01_from-T2w_to-T2wstraight_mode-image_xfm.nii.gz"
    to_orig = anat / "sub-01_from-T2wstraight_to-T2w_mode-image_xfm.nii.gz"
    assert json.loads(to_straight.with_name(to_straight.name.replace(".nii.gz", ".json")).read_text())["CordLengthMM"] > 50
    # The work folder keeps them uncompressed; the derivatives are gzip files, as their name says.
    assert all(path.read_bytes()[:2] == b"\x1f\x8b" for path in (to_straight, to_orig))
    truth = synth_two_subjects / "derivatives/labels/sub-01/anat/sub-01_T2w_seg-manual.nii.gz"
    field = nib.load(str(to_straight))
    ref = tmp_path / "straight_ref.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(field.shape[:3], np.float32), field.affine), str(ref))
    moving = ants.image_read(str(truth))
    straight = ants.apply_transforms(ants.image_read(str(ref)), moving, [str(to_straight)], interpolator="linear")
    back = ants.apply_transforms(moving, straight, [str(to_orig)], interpolator="linear")
    assert dice(back.numpy() >= 0.5, moving.numpy() > 0.5) >= 0.97
    # In straight space the cord runs along the last axis, centred in the cross-section.
    s = straight.numpy() >= 0.5
    centre = (np.array(s.shape[:2]) - 1) / 2
    rows = [k for k in range(s.shape[2]) if s[:, :, k].sum() > 20]
    offsets = [np.linalg.norm((np.argwhere(s[:, :, k]).mean(0) - centre) * 0.5) for k in rows[5:-5]]
    assert np.median(offsets) < 1.0


def test_single_stage_option(synth_two_subjects, tmp_path):
    out = tmp_path / "out"
    code = main([str(synth_two_subjects), str(out), "participant", "-w", str(tmp_path / "work"),
                 "--participant-label", "01", "--contrast", "T2w", "--single-stage", "--skip-bids-validation",
                 "--nprocs", "1"])
    assert code == 0
    assert not list((tmp_path / "work").rglob("segment_straightened_cord"))
    mask = out / "sub-01" / "anat" / "sub-01_space-orig_label-SC_desc-T2w_mask.json"
    assert json.loads(mask.read_text())["Model"]["Name"] == DEFAULT_STAGE1


def test_a_model_directory_relative_to_the_current_directory_works(synth_two_subjects, tmp_path, monkeypatch):
    """The workflow's nodes run inside the work directory: a relative --model must still name the user's model."""
    import shutil

    from bids_sclesion.model.io import bundled_model_dir

    shutil.copytree(bundled_model_dir(DEFAULT_STAGE1), tmp_path / "my_model")
    monkeypatch.chdir(tmp_path)
    code = main([str(synth_two_subjects), "out", "participant", "-w", "work", "--participant-label", "01",
                 "--contrast", "T2w", "--single-stage", "--model", "my_model", "--skip-bids-validation",
                 "--nprocs", "1"])
    assert code == 0
    mask = tmp_path / "out" / "sub-01" / "anat" / "sub-01_space-orig_label-SC_desc-T2w_mask.nii.gz"
    assert (np.asarray(nib.load(str(mask)).dataobj) > 0).any()


def test_stage2_model_must_be_a_straight_space_model(synth_two_subjects, tmp_path, capsys):
    code = main([str(synth_two_subjects), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--stage2-model", DEFAULT_STAGE1, "--skip-bids-validation"])
    assert code == 17
    assert "not trained on the straightened cord" in capsys.readouterr().err


def test_eval_command_matches_the_library_scores(app_run, synth_two_subjects, tmp_path, capsys):
    from bids_sclesion.cli.evaluate import main as eval_main

    _, out, _, _, _ = app_run
    tsv, js = tmp_path / "scores.tsv", tmp_path / "summary.json"
    assert eval_main([str(out), str(synth_two_subjects), "--tsv", str(tsv), "--json", str(js)]) == 0
    printed = capsys.readouterr().out
    assert "lesion_f1_10pct" in printed and "rel_volume_diff" in printed
    summary = json.loads(js.read_text())
    _, reference = evaluate_outputs(synth_two_subjects, out)
    for key in ("cord_dice", "lesion_dice", "lesion_f1", "true_lesions"):
        assert summary["all"][key] == pytest.approx(reference["all"][key])
    rows = list(csv.DictReader(tsv.open(), delimiter="\t"))
    assert len(rows) == 4
    for row in rows:
        assert float(row["abs_volume_diff_mm3"]) == pytest.approx(
            abs(float(row["predicted_volume_mm3"]) - float(row["true_volume_mm3"])), abs=1e-3)
    # No label found: a clear error, not an empty table.
    assert eval_main([str(out), str(tmp_path)]) == 1
    assert "no output" in capsys.readouterr().err


def test_tta_writes_uncertainty_and_lesion_confidence(synth_two_subjects, tmp_path):
    out = tmp_path / "out"
    code = main([str(synth_two_subjects), str(out), "participant", "-w", str(tmp_path / "work"),
                 "--participant-label", "01", "--contrast", "T2w", "--tta", "--skip-bids-validation", "--nprocs", "1"])
    assert code == 0
    anat = out / "sub-01" / "anat"
    src = nib.load(str(synth_two_subjects / "sub-01" / "anat" / "sub-01_T2w.nii.gz"))
    unc = nib.load(str(anat / "sub-01_space-orig_label-lesion_desc-T2w_uncertainty.nii.gz"))
    assert unc.shape == src.shape and np.allclose(unc.affine, src.affine, atol=1e-4)
    u = np.asarray(unc.dataobj)
    assert 0.0 <= u.min() and u.max() <= 0.5 + 1e-6 and u.max() > 0
    assert "Standard deviation" in json.loads((anat / "sub-01_space-orig_label-lesion_desc-T2w_uncertainty.json").read_text())["Description"]
    rows = list(csv.DictReader((anat / "sub-01_desc-T2w_lesions.tsv").open(), delimiter="\t"))
    assert rows, "the phantom has lesions"
    assert all(0.0 <= float(r["confidence"]) <= 1.0 for r in rows)
    if validator_available():
        proc = subprocess.run(["bids-validator-deno", "--format", "json", str(out)], capture_output=True, text=True)
        errors = [i for i in json.loads(proc.stdout)["issues"]["issues"] if i["severity"] == "error"]
        assert errors == [], errors


def test_tta_needs_the_cascade(synth_two_subjects, tmp_path, capsys):
    code = main([str(synth_two_subjects), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work"),
                 "--tta", "--single-stage", "--skip-bids-validation"])
    assert code == 17 and "--tta" in capsys.readouterr().err


def _browser():
    import shutil

    selenium = pytest.importorskip("selenium", reason="selenium is not installed")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    chromium = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("headless Chromium and chromedriver are not installed (Debian: chromium chromium-driver)")
    options = Options()
    options.binary_location = chromium
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    return selenium.webdriver.Chrome(service=Service(driver), options=options)


def test_subject_reports_render_in_a_browser(app_run, synth_two_subjects):
    """Each sub-XX.html opens offline in Chromium, every figure loads, lesion counts equal the TSVs."""
    _, out, _, _, _ = app_run
    browser = _browser()
    try:
        for subject in ("01", "02"):
            page = out / f"sub-{subject}.html"
            assert page.exists()
            html_text = page.read_text()
            assert "http://" not in html_text and "https://" not in html_text, "the page needs no network"
            # About (what made it) and Errors (none here) sections
            assert "id='about'" in html_text and "weights SHA-256" in html_text and "command line" in html_text
            assert "id='errors'" in html_text and "No errors" in html_text
            browser.get(page.as_uri())
            assert browser.title.startswith(f"sub-{subject}")
            images = browser.execute_script(
                "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
            assert len(images) >= 2 * 2, images  # at least sagittal + axial for T2w and PSIR
            assert all(done and width > 0 for _, done, width in images), images
            assert all((out / src).is_file() and src.startswith(f"sub-{subject}/figures/") for src, _, _ in images)
            shown = browser.execute_script(
                "return Array.from(document.querySelectorAll('section.image')).map("
                "s => [s.dataset.source, s.querySelector('.lesion-count').textContent, "
                "s.querySelectorAll('table.lesions tr').length])")
            assert len(shown) == 2
            for source, count, table_rows in shown:
                stem, suffix = source.split(".")[0].rsplit("_", 1)
                tsv = out / f"sub-{subject}" / "anat" / f"{stem}_desc-{suffix}_lesions.tsv"
                n = len(list(csv.DictReader(tsv.open(), delimiter="\t")))
                assert int(count) == n and table_rows == (n + 1 if n else 0), (source, count, n)
    finally:
        browser.quit()


def test_output_tree_is_the_one_circleci_expects(app_run, synth_two_subjects):
    """The CircleCI smoke job runs both levels on this same dataset and diffs the tree with this list."""
    _, out, _, _, _ = app_run
    assert main([str(synth_two_subjects), str(out), "group"]) == 0
    script = Path(__file__).resolve().parents[1] / ".circleci" / "check_outputs.sh"
    expected = script.with_name("expected_outputs.txt")
    proc = subprocess.run(["bash", str(script), str(out), str(expected)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_user_disc_labels_replace_the_template_and_another_grid_is_refused(synth_two_subjects, tmp_path, capsys):
    """--derivatives: SCT-style disc labels set the levels; a label file on another grid fails that image only."""
    import shutil

    bids = tmp_path / "bids"
    shutil.copytree(synth_two_subjects, bids)
    labels = tmp_path / "discs"
    for sub, grid_ok in (("01", True), ("02", False)):
        src = nib.load(str(bids / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w.nii.gz"))
        cord = np.asarray(nib.load(str(bids / "derivatives" / "labels" / f"sub-{sub}" / "anat" /
                                       f"sub-{sub}_T2w_seg-manual.nii.gz")).dataobj) > 0
        idx = np.argwhere(cord)
        axis = int(np.argmax(idx.max(0) - idx.min(0)))  # the cord's long voxel axis
        data = np.zeros(src.shape, np.uint8)
        lo, hi = idx[:, axis].min(), idx[:, axis].max()
        for value, frac in ((4, 0.25), (5, 0.5), (6, 0.75)):
            k = int(lo + frac * (hi - lo))
            data[tuple(idx[np.argmin(np.abs(idx[:, axis] - k))])] = value
        affine = src.affine if grid_ok else src.affine @ np.diag([2.0, 2.0, 2.0, 1.0])
        target = labels / f"sub-{sub}" / "anat" / f"sub-{sub}_T2w_labels-disc-manual.nii.gz"
        target.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(data, affine), str(target))
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--contrast", "T2w",
                 "--skip-bids-validation", "--nprocs", "2", "--derivatives", str(labels)])
    printed = capsys.readouterr().out
    assert code == 1
    line = next(ln for ln in printed.splitlines() if "FAILED: sub-02_T2w.nii.gz" in ln)
    assert "sub-02_T2w_labels-disc-manual.nii.gz" in line and "voxel grid" in line, line
    anat = out / "sub-01" / "anat"
    sidecar = json.loads((anat / "sub-01_space-orig_seg-vertebral_desc-T2w_dseg.json").read_text())
    assert sidecar["VertebralLabelling"]["Method"] == "user"
    discs = list(csv.DictReader((anat / "sub-01_desc-T2w_discs.tsv").open(), delimiter="\t"))
    assert [d["name"] for d in discs] == ["C3/C4", "C4/C5", "C5/C6"] and {d["method"] for d in discs} == {"user"}
    levels = [r["vertebral_level"] for r in csv.DictReader((anat / "sub-01_desc-T2w_levels.tsv").open(),
                                                            delimiter="\t")]
    assert levels == ["C3", "C4", "C5", "C6"]
