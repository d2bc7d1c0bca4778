"""Shared fixtures: small synthetic datasets generated once per test session."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from bids_sclesion.phantoms import generate_dataset

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def requires_shared(subdir: str) -> Path:
    path = SHARED_DATA / subdir
    if not path.is_dir():
        pytest.skip(f"real data not available: {path} is absent (it lives beside the repository in ../shared)")
    return path


def validator_available() -> bool:
    return shutil.which("bids-validator-deno") is not None


@pytest.fixture(scope="session")
def synth_two_subjects(tmp_path_factory) -> Path:
    """Two subjects, T2w + PSIR, seed never used for training the bundled model; vertebrae drawn after real
    anatomy, so that the disc finder numbers some of them (the default blocks are mostly refused)."""
    out = tmp_path_factory.mktemp("synth") / "bids"
    generate_dataset(out, n_subjects=2, contrasts=("T2w", "PSIR"), seed=7, fov_scale=0.7, realistic_spine=True)
    return out


@pytest.fixture(scope="session")
def synth_longitudinal(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_long") / "bids"
    generate_dataset(out, n_subjects=1, n_sessions=2, contrasts=("T2w",), seed=11, fov_scale=0.5)
    return out
