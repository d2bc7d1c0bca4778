"""Preprocessed training cases (model grid or straightened cord), cached on disk as float16/uint8."""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Sequence

import nibabel as nib
import numpy as np
import torch

from .. import __version__
from ..__about__ import __results_revision__
from ..core.image import load_image, to_canonical
from ..core.preprocess import bias_correct_image, mask_to_model_grid, prepare_for_model
from .cases import TrainingCase

LOGGER = logging.getLogger("bids_sclesion.train")


def preprocess_case(case: TrainingCase, spacing, cache_dir: Path | None,
                    space: str = "native") -> tuple[np.ndarray, np.ndarray]:
    """Model-grid image and labels (2, ...) for a case, cached on disk.

    ``space="straight"``: the image and labels are resampled on the cord's
    straightened grid, the centreline taken from the manual cord mask; a
    case's fine lesion map, if any, labels the lesions there instead of its
    lesion mask.
    """
    if space == "straight":
        return _preprocess_straight(case, cache_dir)
    cache = _cache_path(case, cache_dir, "_gm" if case.grey_matter_path else "", spacing)
    if cache and cache.exists():
        return _load_cache(cache)
    img = load_image(case.image_path)
    canonical, model_input = prepare_for_model(img, spacing)
    cord = _label_on_model_grid(case.cord_path, canonical, spacing)
    if case.lesion_path is not None:
        lesion = _label_on_model_grid(case.lesion_path, canonical, spacing)
    else:
        lesion = np.zeros_like(cord)
    extra = [_label_on_model_grid(case.grey_matter_path, canonical, spacing)] if case.grey_matter_path else []
    labels = np.stack([cord | lesion, lesion, *extra]).astype(np.uint8)
    return _save_cache(cache, model_input.data, labels)


def _cache_path(case: TrainingCase, cache_dir: Path | None, tag: str, params) -> Path | None:
    """Cache file of a case, keyed by the image (path, mtime), the parameters, the version and results revision."""
    if not cache_dir:
        return None
    key = hashlib.sha1(
        f"{case.image_path.resolve()}|{case.image_path.stat().st_mtime_ns}|{params}|{__version__}"
        f"+r{__results_revision__}".encode()
    ).hexdigest()[:16]
    return cache_dir / f"{case.image_path.name.split('.')[0]}{tag}_{key}.npz"


def _label_on_model_grid(path: Path, canonical: nib.Nifti1Image, spacing) -> np.ndarray:
    try:
        return mask_to_model_grid(nib.load(str(path)), canonical, spacing)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc


def _preprocess_into_cache(args) -> str | None:
    case, spacing, cache_dir, space = args
    torch.set_num_threads(1)
    try:
        preprocess_case(case, spacing, cache_dir, space)
    except Exception as exc:  # the serial pass that follows meets it again and reports it with the file's name
        return f"{case.image_path}: {exc}"
    return None


def fill_cache(cases: Sequence[TrainingCase], spacing, cache_dir: Path, space: str, workers: int) -> None:
    """Preprocess the cases in ``workers`` processes (their results land in the cache, read back afterwards)."""
    from concurrent.futures import ProcessPoolExecutor

    from ..utils.environment import process_context

    jobs = [(case, spacing, cache_dir, space) for case in cases]
    with ProcessPoolExecutor(max_workers=workers, mp_context=process_context()) as pool:
        failed = [message for message in pool.map(_preprocess_into_cache, jobs) if message]
    for message in failed:
        LOGGER.warning("preprocessing failed: %s", message)


def _load_cache(cache: Path) -> tuple[np.ndarray, np.ndarray]:
    with np.load(cache) as z:
        return z["image"].astype(np.float32), z["labels"].astype(np.float32)


def _save_cache(cache: Path | None, image: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Store a preprocessed case; returns it as stored, so that the run that fills the cache trains on
    the same values as the runs that read it."""
    stored = image.astype(np.float16), labels.astype(np.uint8)
    if cache:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, image=stored[0], labels=stored[1])
        tmp.replace(cache)
    return stored[0].astype(np.float32), stored[1].astype(np.float32)


def _preprocess_straight(case: TrainingCase, cache_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    from ..model.cascade import StraightSpace, straighten_labels

    space = StraightSpace()
    tag = "_straight" + ("_gm" if case.grey_matter_path else "") + ("_fine" if case.fine_lesion_path else "")
    cache = _cache_path(case, cache_dir, tag, space)
    if cache and cache.exists():
        return _load_cache(cache)
    canonical = bias_correct_image(to_canonical(load_image(case.image_path)))
    masks = []
    for path in (case.cord_path, case.lesion_path) + ((case.grey_matter_path,) if case.grey_matter_path else ()):
        if path is None:
            masks.append(np.zeros(canonical.shape, bool))
            continue
        mask = to_canonical(nib.load(str(path)))
        if mask.shape != canonical.shape or not np.allclose(mask.affine, canonical.affine, atol=1e-3):
            raise ValueError(f"{path}: mask and image grids differ")
        masks.append(np.asarray(mask.dataobj, np.float32) > 0.5)
    fine = nib.load(str(case.fine_lesion_path)) if case.fine_lesion_path else None
    image, labels = straighten_labels(canonical, masks[0], masks[1], space, extra=masks[2:], lesion_fraction=fine)
    labels = np.stack([labels[0] | labels[1], *labels[1:]]).astype(np.uint8)
    return _save_cache(cache, image, labels)
