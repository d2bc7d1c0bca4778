"""Delivery: the CircleCI config, the Dockerfile, the documentation site and the container image."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import bids_sclesion

ROOT = Path(__file__).resolve().parents[1]
CIRCLECI = ROOT / ".circleci" / "config.yml"


def _check_jsonschema() -> list[str]:
    exe = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
    if not Path(exe).exists():
        pytest.skip("check-jsonschema is not installed (pip install check-jsonschema; it is in the test extras)")
    return [exe]


def test_circleci_config_is_valid_against_circleci_schema(tmp_path):
    exe = _check_jsonschema()
    proc = subprocess.run([*exe, "--builtin-schema", "vendor.circle-ci", str(CIRCLECI)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The schema does reject a broken config: a job whose steps are not a list.
    broken = yaml.safe_load(CIRCLECI.read_text())
    broken["jobs"]["build"]["steps"] = "checkout"
    bad = tmp_path / "config.yml"
    bad.write_text(yaml.safe_dump(broken))
    proc = subprocess.run([*exe, "--builtin-schema", "vendor.circle-ci", str(bad)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode != 0


def test_circleci_pipeline_builds_tests_runs_both_levels_and_deploys_on_tags():
    config = yaml.safe_load(CIRCLECI.read_text())
    jobs = config["jobs"]
    assert {"build", "test", "smoke", "deploy_docker"} <= set(jobs)
    commands = {name: "\n".join(str(s["run"]["command"]) for s in job["steps"] if isinstance(s, dict) and "run" in s)
                for name, job in jobs.items()}
    assert "docker build" in commands["build"]
    assert "pytest" in commands["test"]
    assert re.search(r" participant ", commands["smoke"]) and re.search(r" group ", commands["smoke"])
    assert ".circleci/check_outputs.sh" in commands["smoke"] and ".circleci/expected_outputs.txt" in commands["smoke"]
    assert "docker push" in commands["deploy_docker"]
    workflow = next(iter(config["workflows"].values()))["jobs"]
    deploy = next(j["deploy_docker"] for j in workflow if isinstance(j, dict) and "deploy_docker" in j)
    assert deploy["filters"]["branches"]["ignore"] == "/.*/" and "tags" in deploy["filters"]
    assert set(deploy["requires"]) == {"test", "smoke"}


def test_check_outputs_script_detects_a_missing_and_an_extra_file(tmp_path):
    out = tmp_path / "out"
    (out / "sub-01").mkdir(parents=True)
    (out / "a.txt").write_text("x")
    (out / "sub-01" / "b.txt").write_text("x")
    expected = tmp_path / "expected.txt"
    expected.write_text("# comment\na.txt\nsub-01/b.txt\n")
    script = ROOT / ".circleci" / "check_outputs.sh"
    assert subprocess.run(["bash", str(script), str(out), str(expected)], capture_output=True).returncode == 0
    (out / "extra.txt").write_text("x")
    assert subprocess.run(["bash", str(script), str(out), str(expected)], capture_output=True).returncode != 0
    (out / "extra.txt").unlink()
    (out / "a.txt").unlink()
    assert subprocess.run(["bash", str(script), str(out), str(expected)], capture_output=True).returncode != 0


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_follows_the_bids_app_image_conventions():
    instructions = _dockerfile_instructions()
    froms = [rest for word, rest in instructions if word == "FROM"]
    assert len(froms) >= 2, "multi-stage build"
    args = " ".join(rest for word, rest in instructions if word == "ARG")
    assert "TORCH_VARIANT=cpu" in args, "CPU by default, CUDA through a build argument"
    runtime = instructions[max(i for i, (w, _) in enumerate(instructions) if w == "FROM"):]
    users = [rest for word, rest in runtime if word == "USER"]
    assert users and users[-1] not in ("root", "0"), "runs as a non-root user"
    runs = " ".join(rest for word, rest in runtime if word == "RUN")
    assert "chmod" in runs and "go=u" in runs, "HOME usable by any user id (Singularity)"
    env = " ".join(rest for word, rest in runtime if word == "ENV")
    assert "OMP_NUM_THREADS=" in env and "HOME=" in env and "NIPYPE_NO_ET=1" in env
    assert ("ENTRYPOINT", '["bids_sclesion"]') in runtime
    labels = " ".join(rest for word, rest in runtime if word == "LABEL")
    for key in ("title", "version", "revision", "created", "licenses", "source"):
        assert f"org.opencontainers.image.{key}=" in labels
    # Everything the build copies must exist (a COPY of a missing path fails the build).
    for word, rest in instructions:
        if word == "COPY" and "--from" not in rest:
            for src in rest.split()[:-1]:
                assert (ROOT / src).exists(), src
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and ".git" in ignored


def test_documentation_builds_without_warnings(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed (it is in the test extras)")
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "WARNING" not in proc.stderr, proc.stderr
    site = tmp_path / "site"
    for page in ("installation", "usage", "outputs", "training", "hpc", "faq", "models/stage2"):
        assert (site / page / "index.html").is_file(), page
    assert "Lesion Dice" in (site / "models" / "stage2" / "index.html").read_text() or \
        "lesion Dice" in (site / "models" / "stage2" / "index.html").read_text()


def _documented_block(page: Path, heading: str) -> str:
    """The first ```bash block under ``heading`` in a Markdown page."""
    text = page.read_text()
    section = text[text.index(heading):]
    return re.search(r"```bash\n(.*?)```", section, re.S).group(1)


@pytest.mark.slow
def test_the_documented_pip_install_from_a_checkout_works(tmp_path):
    """docs/installation.md's CPU commands, run as written, in a new virtual environment and a copy of the checkout."""
    block = _documented_block(ROOT / "docs" / "installation.md", "## With pip, from a checkout (CPU only)")
    assert "pip install \".[validator]\"" in block and "~/venvs/sclesion" in block
    checkout = tmp_path / "checkout"
    shutil.copytree(ROOT, checkout, ignore=shutil.ignore_patterns(".venv", ".git", "build", "site", "*.egg-info",
                                                                   "__pycache__", ".pytest_cache"))
    script = "set -euo pipefail\n" + block.replace("~/venvs/sclesion", str(tmp_path / "venv"))
    proc = subprocess.run(["bash", "-c", script], cwd=checkout, capture_output=True, text=True, timeout=900,
                          env={k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")})
    if proc.returncode != 0 and re.search(r"NewConnectionError|Temporary failure in name resolution|Network is "
                                          r"unreachable", proc.stderr):
        pytest.skip(f"the package indexes cannot be reached from here: {proc.stderr.strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"bids_sclesion {bids_sclesion.__version__}"
    validator = subprocess.run([str(tmp_path / "venv" / "bin" / "python"), "-c",
                                "import bids_validator_deno, torch; print(torch.__version__)"],
                               capture_output=True, text=True, timeout=120)
    assert validator.returncode == 0 and "+cpu" in validator.stdout, validator.stderr


@pytest.mark.container
@pytest.mark.slow
def test_image_builds_and_runs_the_app_with_a_read_only_root(tmp_path):
    if os.environ.get("BIDS_SCLESION_TEST_CONTAINER") != "1":
        pytest.skip("set BIDS_SCLESION_TEST_CONTAINER=1 to build the image (a few minutes; .ci/run does where "
                    "podman can be installed)")
    if os.geteuid() != 0 or shutil.which("podman") is None:
        pytest.skip("building the image needs root and podman (apt-get install podman debootstrap)")
    env = dict(os.environ, BUILD_DIR=str(tmp_path / "image"))
    tag = "localhost/bids_sclesion:test"
    try:
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "build-image.sh"), "--tag", tag],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=2400)
        if proc.returncode == 0:
            # docs/hpc.md's route to Apptainer: the image saved as an OCI archive (apptainer build reads it).
            archive = tmp_path / "bids_sclesion.tar"
            saved = subprocess.run(["podman", "save", "--format", "oci-archive", "-o", str(archive), tag],
                                   capture_output=True, text=True, timeout=900)
            assert saved.returncode == 0 and archive.stat().st_size > 100_000_000, saved.stderr[-2000:]
            archive.unlink()
    finally:
        subprocess.run(["podman", "rmi", "-f", tag], capture_output=True)  # 2 GB: do not keep it
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "bids_sclesion --version: bids_sclesion" in proc.stdout
    report = (tmp_path / "image" / "image-report.tsv").read_text().splitlines()
    row = dict(zip(report[0].split("\t"), report[1].split("\t")))
    assert int(row["size_mb"]) > 0 and int(row["build_seconds"]) > 0
    print(f"image build: {row}")
