"""Lesion change between sessions: registration of straightened cords and lesion matching."""
import numpy as np
import nibabel as nib
import pytest

from bids_sclesion.core.longitudinal import compare_sessions, count_changes
from bids_sclesion.phantoms.acquisition import random_acquisition, render_image
from bids_sclesion.phantoms.anatomy import Lesion, random_anatomy


def _session(anatomy, lesions, seed: int, contrast: str):
    anatomy.lesions = lesions
    rng = np.random.default_rng(seed)
    acq = random_acquisition(rng, contrast, anatomy, 110.0, fov_scale=0.8)
    arrays = []
    for img in render_image(rng, anatomy, acq):
        img = nib.as_closest_canonical(img)
        arrays.append(np.asarray(img.dataobj, np.float32))
    return arrays[0], arrays[1] > 0, arrays[2] > 0, img.affine


@pytest.mark.parametrize("contrast,seed", [("T1w", 3), ("T2w", 4)])
def test_changes_between_sessions_match_what_was_drawn(contrast, seed):
    """Five separate lesions; between sessions the patient moves (new scanner position,
    resolution and field of view): one stays, one grows, one shrinks, one goes, one appears."""
    anatomy = random_anatomy(np.random.default_rng(seed))
    top = min(anatomy.foramen_z - 25, 110.0 - 20)  # inside the cord and the field of view (top at 110 mm)

    def lesion(k, scale=1.0, status="baseline"):
        return Lesion(k, top - 18.0 * k, 0.3, 0.0, 4.0, 2.5, 2.2, 1.0, status).scaled(scale, status)

    before = [lesion(k) for k in range(4)]
    after = [lesion(0, 1.0, "stable"), lesion(1, 1.4, "enlarging"), lesion(2, 0.7, "shrinking"),
             lesion(4, 1.0, "new")]
    changes, shift_mm = compare_sessions(_session(anatomy, before, seed * 10, contrast),
                                         _session(anatomy, after, seed * 10 + 1, contrast))
    counts = count_changes(changes)
    assert counts == {"new": 1, "enlarging": 1, "stable": 1, "shrinking": 1, "disappeared": 1}, (counts, shift_mm)
    # Positions come out in the order the lesions were drawn (from the top down).
    assert [c.status for c in changes] == ["stable", "enlarging", "shrinking", "disappeared", "new"]


@pytest.mark.slow
def test_group_level_reports_new_and_enlarging_lesions(tmp_path):
    """Both levels of the app on a two-session subject drawn with known changes."""
    import csv
    import json

    from bids_sclesion.cli.run import main

    anatomy = random_anatomy(np.random.default_rng(3))
    top = min(anatomy.foramen_z - 25, 110.0 - 20)

    def lesion(k, scale=1.0, status="baseline"):
        return Lesion(k, top - 18.0 * k, 0.3, 0.0, 4.5, 2.6, 2.3, 1.1, status).scaled(scale, status)

    sessions = {"01": [lesion(0), lesion(1), lesion(2)],
                "02": [lesion(0, 1.0, "stable"), lesion(1, 1.45, "enlarging"), lesion(2, 1.0, "stable"),
                       lesion(3, 1.0, "new")]}
    bids = tmp_path / "bids"
    (bids).mkdir()
    (bids / "dataset_description.json").write_text(json.dumps({"Name": "two sessions", "BIDSVersion": "1.9.0"}))
    for k, (ses, lesions) in enumerate(sessions.items()):
        image, _, _, affine = _session(anatomy, lesions, 30 + k, "T1w")
        path = bids / "sub-01" / f"ses-{ses}" / "anat" / f"sub-01_ses-{ses}_T1w.nii.gz"
        path.parent.mkdir(parents=True)
        nib.save(nib.Nifti1Image(image, affine), str(path))
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--nprocs", "2",
                 "--skip-bids-validation", "--no-reports"]) == 0
    assert main([str(bids), str(out), "group"]) == 0
    rows = list(csv.DictReader((out / "group_longitudinal.tsv").open(), delimiter="\t"))
    assert len(rows) == 1 and rows[0]["image"] == "T1w"
    assert (rows[0]["session_earlier"], rows[0]["session_later"]) == ("ses-01", "ses-02")
    assert int(rows[0]["n_enlarging"]) == 1 and int(rows[0]["n_stable"]) == 2, rows[0]
    changes = list(csv.DictReader((out / "group_lesion_changes.tsv").open(), delimiter="\t"))
    # Every drawn lesion (>= 100 mm3) is matched; a false speck of the model's (a few mm3, seen in one
    # session only) is reported as new or disappeared, as it should be, and is not one of them.
    drawn = [c for c in changes if max(float(c["earlier_volume_mm3"]), float(c["later_volume_mm3"])) >= 50]
    specks = [c for c in changes if c not in drawn]
    assert sorted(c["status"] for c in drawn) == ["enlarging", "new", "stable", "stable"], changes
    assert all(c["status"] in ("new", "disappeared") for c in specks), specks
    assert int(rows[0]["n_new"]) == 1 + sum(c["status"] == "new" for c in specks), rows[0]
    assert int(rows[0]["n_disappeared"]) == sum(c["status"] == "disappeared" for c in specks), rows[0]
    page = (out / "group.html").read_text()
    assert "Change between sessions" in page and (out / "figures" / "group_lesion_positions.png").exists()
    # the C2-C3 CSA change: computed from each session's own C2-C3 figure in the group table, or n/a
    by_session = {r["session_id"]: r["csa_c2c3_mm2"]
                  for r in csv.DictReader((out / "group_lesions.tsv").open(), delimiter="\t")}
    assert rows[0]["csa_c2c3_earlier_mm2"] == by_session["ses-01"]
    assert rows[0]["csa_c2c3_later_mm2"] == by_session["ses-02"]
    if "n/a" in by_session.values():
        assert rows[0]["csa_c2c3_change_percent"] == "n/a"
    else:
        a, b = float(by_session["ses-01"]), float(by_session["ses-02"])
        assert float(rows[0]["csa_c2c3_change_percent"]) == pytest.approx(100 * (b - a) / a, abs=0.01)
