"""Bad and hostile inputs: a named error, a non-zero exit for that subject only, no partial output, input unchanged."""
from __future__ import annotations

import csv
import gzip
import hashlib
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_sclesion.cli.run import main
from bids_sclesion.core.image import ImageError, load_image

pytestmark = pytest.mark.slow


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}


def _nifti(data, affine=None) -> nib.Nifti1Image:
    return nib.Nifti1Image(np.asarray(data), np.diag([0.7, 0.7, 3.0, 1.0]) if affine is None else affine)


def _good_image(synth: Path) -> nib.Nifti1Image:
    return nib.load(str(synth / "sub-01" / "anat" / "sub-01_T2w.nii.gz"))


def _write_bad_cases(synth: Path, bids: Path) -> dict[str, str]:
    """Subjects 02.. each get one bad T2w; returns {subject: regex the failure reason must match}."""
    good = _good_image(synth)
    data = np.asarray(good.dataobj).astype(np.float32)
    cases: dict[str, tuple[callable, str]] = {}

    def add(label, writer, reason):
        path = bids / f"sub-{label}" / "anat" / f"sub-{label}_T2w.nii.gz"
        path.parent.mkdir(parents=True)
        writer(path)
        cases[label] = reason

    add("02", lambda p: p.write_bytes(b""), r"empty \(0 bytes\)")
    full = gzip.compress(nib.Nifti1Image(data, good.affine).to_bytes())
    add("03", lambda p: p.write_bytes(full[: len(full) // 3]), r"truncated|corrupt|cannot read")
    add("04", lambda p: nib.save(_nifti(data[:, :, 3]), str(p)), r"expected a 3D image")
    add("05", lambda p: nib.save(_nifti(np.stack([data] * 3, -1), good.affine), str(p)), r"expected a 3D image.*split")
    nan = data.copy()
    nan[5, 5, 2] = np.nan
    add("06", lambda p: nib.save(_nifti(nan, good.affine), str(p)), r"NaN or infinite values \(1 voxels\)")
    inf = data.copy()
    inf[:3, :3, :] = np.inf
    add("07", lambda p: nib.save(_nifti(inf, good.affine), str(p)), r"NaN or infinite")
    add("08", lambda p: nib.save(_nifti(np.zeros_like(data), good.affine), str(p)), r"constant")

    def zero_voxel(p):
        img = _nifti(data, good.affine)
        img.header.set_qform(None, code=0)
        img.header.set_sform(None, code=0)
        raw = bytearray(img.to_bytes())
        raw[88:92] = np.float32(0.0).tobytes()  # pixdim[3], patched in the file: nibabel would not write it
        p.write_bytes(gzip.compress(bytes(raw)))

    add("09", zero_voxel, r"invalid voxel size|singular")

    def qform_sform(p):
        img = _nifti(data, good.affine)
        shifted = good.affine.copy()
        shifted[:3, 3] += [0, 0, 40.0]
        img.header.set_sform(good.affine, code=1)
        img.header.set_qform(shifted, code=1)
        nib.save(img, str(p))

    add("10", qform_sform, r"qform and sform disagree")

    def huge(p):
        header = nib.Nifti1Header()
        header.set_data_shape((4000, 4000, 2000))
        header.set_data_dtype(np.float32)
        header.set_zooms((0.1, 0.1, 0.1))
        # The header claims 128 GB; the file holds 1 MB: nothing may try to read or allocate it all.
        p.write_bytes(gzip.compress(header.binaryblock + b"\0" * 4 + b"\0" * (1 << 20)))

    add("11", huge, r"image too large.*M voxels")

    def singular(p):
        affine = good.affine.copy()
        affine[:3, 2] = 0.0
        header = _nifti(data, good.affine).header.copy()
        header.set_qform(None, code=0)
        header.set_sform(affine, code=1)  # written as is: nibabel would refuse to make it from an affine
        nib.save(nib.Nifti1Image(data, None, header), str(p))

    add("12", singular, r"invalid voxel size|singular")
    return cases


def test_every_bad_image_fails_alone_with_a_named_reason(synth_two_subjects, tmp_path, capsys):
    bids = tmp_path / "bids"
    shutil.copytree(synth_two_subjects, bids, ignore=shutil.ignore_patterns("sub-02"))
    for f in (bids / "sub-01" / "anat").glob("*PSIR*"):
        f.unlink()
    cases = _write_bad_cases(synth_two_subjects, bids)
    before = _digest(bids)
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--skip-bids-validation",
                 "--nprocs", "2", "--omp-nthreads", "1"])
    printed = capsys.readouterr().out
    assert code == 1
    assert f"1 image(s) of {1 + len(cases)} participant(s) done, {len(cases)} failed" in printed
    for label, reason in cases.items():
        line = next((ln for ln in printed.splitlines() if f"FAILED: sub-{label}_T2w.nii.gz" in ln), None)
        assert line is not None, f"sub-{label} not reported:\n{printed}"
        assert f"sub-{label}_T2w.nii.gz" in line.split(":", 2)[2], "the reason names the file"
        assert re.search(reason, line), line
        # no derivative at all for the failed image (its report says why)
        assert not (out / f"sub-{label}").exists() or not [p for p in (out / f"sub-{label}").rglob("*")
                                                            if p.is_file() and "figures" not in p.parts]
        page = (out / f"sub-{label}.html").read_text()
        errors = page[page.index("id='errors'"):page.index("</section>", page.index("id='errors'"))]
        assert re.search(reason, errors), "the failure is listed under Errors with its reason"
    assert (out / "sub-01" / "anat" / "sub-01_space-orig_label-lesion_desc-T2w_mask.nii.gz").is_file()
    assert not list(out.rglob(".*.tmp*")), "no temporary file left"
    # the group level lists every failed image with its reason, beside the processed one
    assert main([str(bids), str(out), "group", "--skip-bids-validation"]) == 0
    rows = {r["source"]: r for r in csv.DictReader((out / "group_lesions.tsv").open(), delimiter="\t")}
    assert rows["sub-01_T2w"]["status"] == "ok" and rows["sub-01_T2w"]["failure_reason"] == "n/a"
    for label, reason in cases.items():
        row = rows[f"sub-{label}_T2w"]
        assert row["status"] == "failed" and row["n_lesions"] == "n/a", row
        assert re.search(reason, row["failure_reason"]), row
    page = (out / "group.html").read_text()
    assert f"<span id='n-failed'>{len(cases)}</span>" in page
    assert _digest(bids) == before, "the input dataset is unchanged"


def test_oblique_and_anisotropic_images_are_processed_on_their_own_grid(synth_two_subjects, tmp_path):
    """An oblique acquisition (15 degrees about two axes) with 0.5 x 0.5 x 4 mm voxels works, masks on its grid."""
    good = _good_image(synth_two_subjects)
    angle = np.deg2rad(15)
    rot_x = np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    rot_z = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = good.affine.copy()
    affine[:3, :3] = rot_z @ rot_x @ good.affine[:3, :3]
    bids = tmp_path / "bids"
    shutil.copytree(synth_two_subjects, bids, ignore=shutil.ignore_patterns("sub-02", "derivatives"))
    for f in (bids / "sub-01" / "anat").glob("*PSIR*"):
        f.unlink()
    src = bids / "sub-01" / "anat" / "sub-01_T2w.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(good.dataobj), affine), str(src))
    out = tmp_path / "out"
    assert main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--skip-bids-validation",
                 "--nprocs", "1", "--no-reports"]) == 0
    mask = nib.load(str(out / "sub-01" / "anat" / "sub-01_space-orig_label-SC_desc-T2w_mask.nii.gz"))
    assert np.allclose(mask.affine, affine, atol=1e-4) and mask.shape == good.shape
    assert np.count_nonzero(np.asarray(mask.dataobj)) > 500, "the cord is found on the oblique image"


def _brain_only_image(shape=(96, 96, 40), seed=0) -> nib.Nifti1Image:
    """A head without a spinal cord: a bright ellipsoid 'brain' with folded texture inside a dark skull."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij"))
    r = np.sqrt((grid[0] / 0.8) ** 2 + (grid[1] / 0.9) ** 2 + (grid[2] / 0.95) ** 2)
    from scipy import ndimage

    texture = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    data = np.where(r < 0.85, 600 + 800 * (texture > 0), 0) + np.where((r >= 0.85) & (r < 0.95), 150, 0)
    data = data + rng.normal(0, 20, size=shape)
    return nib.Nifti1Image(np.clip(data, 0, None).astype(np.float32), np.diag([2.0, 2.0, 4.0, 1.0]))


@pytest.mark.parametrize("mode", [[], ["--single-stage"]], ids=["cascade", "single-stage"])
def test_brain_only_image_gets_no_invented_lesions_and_a_warning(tmp_path, capsys, mode):
    bids = tmp_path / "bids"
    (bids / "sub-01" / "anat").mkdir(parents=True)
    (bids / "dataset_description.json").write_text('{"Name": "brain only", "BIDSVersion": "1.10.0"}')
    nib.save(_brain_only_image(), str(bids / "sub-01" / "anat" / "sub-01_T2w.nii.gz"))
    out = tmp_path / "out"
    code = main([str(bids), str(out), "participant", "-w", str(tmp_path / "work"), "--skip-bids-validation",
                 "--nprocs", "1", *mode])
    printed = capsys.readouterr()
    text = printed.out + printed.err
    assert re.search(r"no spinal cord", text, re.I), text
    lesions = out / "sub-01" / "anat" / "sub-01_space-orig_label-lesion_desc-T2w_mask.nii.gz"
    if code == 0:
        assert np.count_nonzero(np.asarray(nib.load(str(lesions)).dataobj)) == 0, "no lesion without a cord"
        table = (out / "sub-01" / "anat" / "sub-01_desc-T2w_lesions.tsv").read_text().splitlines()
        assert len(table) == 1, "header only"
    else:
        assert code == 1 and not lesions.exists()
    assert re.search(r"no spinal cord", (out / "sub-01.html").read_text(), re.I)


class _Exploit:
    """A pickle that creates a file when unpickled: loading a model must never do that."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _model_copy(tmp_path: Path, name: str) -> Path:
    from bids_sclesion.model.io import bundled_model_dir

    target = tmp_path / name
    shutil.copytree(bundled_model_dir("stage2"), target)
    return target


@pytest.mark.parametrize("kind", ["pickle", "tampered", "architecture"])
def test_bad_model_files_are_refused_before_anything_runs(synth_two_subjects, tmp_path, capsys, kind):
    model = _model_copy(tmp_path, kind)
    marker = tmp_path / "executed"
    weights = model / "model.safetensors"
    if kind == "pickle":
        weights.write_bytes(pickle.dumps({"state_dict": _Exploit(marker)}))
        expected = "not a valid safetensors file"
    elif kind == "tampered":
        raw = bytearray(weights.read_bytes())
        raw[8:40] = b"\xff" * 32  # the JSON header of the file
        weights.write_bytes(bytes(raw))
        expected = "not a valid safetensors file"
    else:
        import json

        meta = json.loads((model / "model.json").read_text())
        meta["network"]["channels"] = [c * 2 for c in meta["network"]["channels"]]
        (model / "model.json").write_text(json.dumps(meta))
        expected = "do not match the architecture"
    out = tmp_path / "out"
    code = main([str(synth_two_subjects), str(out), "participant", "-w", str(tmp_path / "work"),
                 "--skip-bids-validation", "--stage2-model", str(model)])
    err = capsys.readouterr().err
    assert code == 17
    assert str(weights) in err and expected in err, err
    assert not marker.exists(), "nothing in the model file was executed"
    assert not (out / "sub-01").exists()


def _app(args: list[str], **kwargs) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "bids_sclesion.cli.run", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, **kwargs)


def test_killed_run_leaves_no_corrupt_file_and_a_rerun_completes(synth_two_subjects, tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    args = [str(synth_two_subjects), str(out), "participant", "-w", str(work), "--skip-bids-validation",
            "--nprocs", "1", "--participant-label", "01"]
    proc = _app(args, start_new_session=True)
    # Kill (SIGKILL, the whole process group) once the first derivative is being written.
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if list(out.glob("sub-01/anat/*.nii.gz")):
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    for path in out.rglob("*.nii.gz"):
        if not path.name.startswith("."):
            np.asarray(nib.load(str(path)).dataobj)  # every visible image is complete
    rerun = _app(args)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stdout + stderr
    assert "2 image(s) of 1 participant(s) done, 0 failed" in stdout
    assert not list(out.rglob(".*.tmp*")), "partial files of the killed run are removed"
    for path in out.rglob("*.nii.gz"):
        np.asarray(nib.load(str(path)).dataobj)


def test_two_runs_on_one_output_directory(synth_two_subjects, tmp_path):
    """Different participants: both complete. The same participant: the second says who holds it, and stops."""
    from bids_sclesion.utils.locks import ParticipantLocks

    out = tmp_path / "out"
    common = [str(synth_two_subjects), str(out), "participant", "--skip-bids-validation", "--nprocs", "1",
              "--contrast", "T2w", "--no-reports"]
    first = _app([*common, "-w", str(tmp_path / "w1"), "--participant-label", "01"])
    second = _app([*common, "-w", str(tmp_path / "w2"), "--participant-label", "02"])
    first_out, first_err = first.communicate(timeout=600)
    second_out, second_err = second.communicate(timeout=600)
    assert first.returncode == 0, first_out + first_err
    assert second.returncode == 0, second_out + second_err
    for label in ("01", "02"):
        for path in (out / f"sub-{label}" / "anat").glob("*.nii.gz"):
            np.asarray(nib.load(str(path)).dataobj)
        assert (out / f"sub-{label}" / "anat" / f"sub-{label}_desc-T2w_lesions.tsv").is_file()
    # Another run holds sub-01 (here this process, with the app's own lock): a run of sub-01 names it and stops.
    # Holding the lock here, rather than racing a run that may finish first, keeps the test deterministic.
    with ParticipantLocks(out) as holder:
        assert holder.acquire(["01"]) == {}
        clash = _app([*common, "-w", str(tmp_path / "w3"), "--participant-label", "01"])
        clash_out, clash_err = clash.communicate(timeout=300)
    assert clash.returncode == 75, clash_out + clash_err  # EX_TEMPFAIL: run again later
    assert re.search(rf"sub-01 skipped: another bids_sclesion run \(pid {os.getpid()} on .*\) is writing it",
                     clash_err), clash_err
    # the lock dies with its holder: a later run of sub-01 proceeds (everything cached: fast)
    again = _app([*common, "-w", str(tmp_path / "w1"), "--participant-label", "01"])
    again_out, again_err = again.communicate(timeout=600)
    assert again.returncode == 0, again_out + again_err


def test_load_image_reads_only_the_header_of_a_huge_file(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((3000, 3000, 3000))
    header.set_data_dtype(np.float32)
    path = tmp_path / "huge.nii"
    path.write_bytes(header.binaryblock + b"\0" * 4 + b"\0" * 1000)
    with pytest.raises(ImageError, match=r"huge.nii: image too large \(3000x3000x3000"):
        load_image(path)
