"""Failure records of the output directory: written by a participant run, read by the group level."""
from __future__ import annotations

from bids_sclesion.failures import all_failures, failure_file, read_failures, record_failures
from bids_sclesion.group import collect_rows


def test_a_failure_lives_until_the_image_is_processed_again(tmp_path):
    record_failures(tmp_path, "01", ["sub-01_T2w.nii.gz", "sub-01_PSIR.nii.gz"],
                    {"sub-01_T2w.nii.gz": "step n4: ImageError: sub-01_T2w.nii.gz: singular affine"})
    assert set(read_failures(tmp_path, "01")) == {"sub-01_T2w.nii.gz"}
    # a run on the PSIR only keeps the T2w record; a failed PSIR is added
    record_failures(tmp_path, "01", ["sub-01_PSIR.nii.gz"], {"sub-01_PSIR.nii.gz": "out of memory"})
    assert [r["image"] for r in all_failures(tmp_path)] == ["sub-01_PSIR.nii.gz", "sub-01_T2w.nii.gz"]
    # both processed successfully: no record and no file left
    assert record_failures(tmp_path, "01", ["sub-01_T2w.nii.gz", "sub-01_PSIR.nii.gz"], {}) is None
    assert not failure_file(tmp_path, "01").exists()
    assert all_failures(tmp_path) == []


def test_a_damaged_record_file_counts_as_none(tmp_path):
    path = failure_file(tmp_path, "02")
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert read_failures(tmp_path, "02") == {}
    record_failures(tmp_path, "02", ["sub-02_ses-1_T2w.nii.gz"], {"sub-02_ses-1_T2w.nii.gz": "bad\theader\n"})
    assert read_failures(tmp_path, "02")["sub-02_ses-1_T2w.nii.gz"]["reason"] == "bad\theader\n"


def test_group_rows_carry_failed_images_and_honour_the_selection(tmp_path):
    record_failures(tmp_path, "02", ["sub-02_ses-1_T2w.nii.gz", "sub-02_ses-2_T2w.nii.gz"],
                    {"sub-02_ses-1_T2w.nii.gz": "bad\theader", "sub-02_ses-2_T2w.nii.gz": "no cord"})
    rows = collect_rows(tmp_path)
    assert [(r["source"], r["session_id"], r["suffix"], r["status"]) for r in rows] == [
        ("sub-02_ses-1_T2w", "ses-1", "T2w", "failed"), ("sub-02_ses-2_T2w", "ses-2", "T2w", "failed")]
    assert rows[0]["failure_reason"] == "bad header", "no tab can break the TSV"
    assert [r["source"] for r in collect_rows(tmp_path, session_label=["2"])] == ["sub-02_ses-2_T2w"]
    assert collect_rows(tmp_path, participant_label=["01"]) == []
