"""The app on a real SLURM cluster: a job array over participants, then the group level; and Nipype's SLURM plugin.

Needs SLURM (Debian slurm-wlm + munge). When no cluster answers and the tests run as root, a single-node
cluster is started on localhost with scripts/slurm/start-local-cluster.sh; otherwise the tests skip.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bids_sclesion.cli.synth import main as synth_main

ROOT = Path(__file__).resolve().parents[1]
SLURM_DIR = ROOT / "scripts" / "slurm"

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def _cluster_answers() -> bool:
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return proc.returncode == 0 and any(s.strip() in ("idle", "mix", "alloc") for s in proc.stdout.split())


@pytest.fixture(scope="module")
def slurm_cluster():
    if shutil.which("sbatch") is None:
        pytest.skip("SLURM is not installed (Debian: apt-get install slurm-wlm munge)")
    if not _cluster_answers():
        if os.geteuid() != 0:
            pytest.skip("no SLURM cluster answers and starting a local one needs root")
        proc = subprocess.run(["bash", str(SLURM_DIR / "start-local-cluster.sh")], capture_output=True, text=True,
                              timeout=180)
        if proc.returncode != 0:
            pytest.skip(f"a local SLURM cluster could not be started: {proc.stderr.strip()[-300:]}")
    assert _cluster_answers()


def _app_command() -> str:
    # The jobs run the app from the interpreter of this test run (same code, same environment).
    return f"{sys.executable} -m bids_sclesion.cli.run"


@pytest.fixture(scope="module")
def three_subjects(tmp_path_factory) -> Path:
    bids = tmp_path_factory.mktemp("slurm_synth") / "bids"
    assert synth_main([str(bids), "--subjects", "3", "--contrasts", "T2w", "--seed", "21"]) == 0
    return bids


def _tree_digest(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def test_job_array_then_group_level(slurm_cluster, three_subjects, tmp_path):
    before = _tree_digest(three_subjects)
    out = tmp_path / "out"
    env = dict(os.environ, BIDS_SCLESION=_app_command(), WAIT="1", CPUS="1", MEM="2G", TIME="00:20:00",
               LOG_DIR=str(tmp_path / "logs"))
    proc = subprocess.run(["bash", str(SLURM_DIR / "submit.sh"), str(three_subjects), str(out),
                           "--skip-bids-validation", "--omp-nthreads", "1"],
                          env=env, capture_output=True, text=True, timeout=1500)
    logs = "\n".join(f"--- {p.name}\n{p.read_text()[-1500:]}" for p in sorted((tmp_path / "logs").glob("*.log")))
    assert proc.returncode == 0, proc.stdout + proc.stderr + logs
    assert "job array" in proc.stdout and "group level: job" in proc.stdout

    task_logs = sorted((tmp_path / "logs").glob("participant-*_*.log"))
    assert len(task_logs) == 3, logs
    for label in ("01", "02", "03"):
        anat = out / f"sub-{label}" / "anat"
        for name in ("space-orig_label-lesion_desc-T2w_mask.nii.gz", "space-orig_label-SC_desc-T2w_mask.nii.gz",
                     "space-orig_label-lesion_desc-T2w_probseg.nii.gz", "desc-T2w_lesions.tsv"):
            assert (anat / f"sub-{label}_{name}").stat().st_size > 0
        assert (out / f"sub-{label}.html").is_file()
        # every task ran on its own work directory
        assert (tmp_path / "work" / f"sub-{label}").is_dir()
    with open(out / "group_lesions.tsv", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    assert sorted(r["participant_id"] for r in rows) == ["sub-01", "sub-02", "sub-03"]
    assert (out / "group.html").is_file()
    assert not list(out.rglob(".*.tmp*")), "no temporary file left behind"
    assert _tree_digest(three_subjects) == before, "the input dataset is unchanged"


def test_nipype_slurm_plugin(slurm_cluster, three_subjects, tmp_path):
    """--use-plugin: every workflow step is a SLURM job."""
    plugin = tmp_path / "slurm.yml"
    plugin.write_text((SLURM_DIR / "nipype-slurm.yml").read_text().replace(
        "--cpus-per-task=1 --mem=4G --time=00:30:00", "--cpus-per-task=1 --mem=2G --time=00:20:00")
        .replace("poll_sleep_duration: 2", "poll_sleep_duration: 1"))
    out, work = tmp_path / "out", tmp_path / "work"
    proc = subprocess.run([*_app_command().split(), str(three_subjects), str(out), "participant",
                           "--participant-label", "02", "-w", str(work), "--use-plugin", str(plugin),
                           "--skip-bids-validation", "--omp-nthreads", "1"],
                          capture_output=True, text=True, timeout=1500, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "1 image(s) of 1 participant(s) done, 0 failed" in proc.stdout
    assert (out / "sub-02" / "anat" / "sub-02_desc-T2w_lesions.tsv").is_file()
    # the steps ran as batch jobs: Nipype leaves their submission scripts in the work directory
    batch_scripts = list(work.rglob("batch/batchscript_*.sh"))
    assert len(batch_scripts) >= 5, f"only {len(batch_scripts)} step(s) were submitted to SLURM"
