"""Segment one (canonical, bias-corrected) image with a loaded model."""
from __future__ import annotations

import itertools
import logging
from typing import Callable

import nibabel as nib
import numpy as np
import torch

from ..config import FLIP_ABOVE, STAGE1_FLIPS
from ..core.centerline import CenterlineError, plausible_centerline
from ..core.image import resample_to_grid
from ..core.preprocess import to_model_grid
from .inference import predict_probabilities
from .io import LoadedModel
from .network import OUTPUT_CHANNELS

LOGGER = logging.getLogger("bids_sclesion")

#: Room (mm) left around the locator's cord on every side: the box must hold the whole cord even where the
#: locator's coarse mask falls short of it, and give the model context at the box's edges.
LOCATOR_MARGIN_MM = 10.0


def segment_image(
    img: nib.Nifti1Image, model: LoadedModel, device: torch.device | str = "cpu", precision: str = "auto",
    locator: LoadedModel | None = None, flips: str = "all",
) -> tuple[np.ndarray, np.ndarray]:
    """Cord and lesion probabilities on ``img``'s own grid (``precision``: ``config.PRECISIONS``).

    With a ``locator`` (a coarser whole-image model), ``model`` runs only inside a box around the cord the
    locator finds (:func:`locate_cord`); outside it both probabilities are 0. Where the locator finds no
    cord, ``model`` runs on the whole image. ``flips`` (``config.STAGE1_FLIPS``): where the model's test-time
    flips run: in every window, only where its plain pass reaches ``config.FLIP_ABOVE``, or nowhere.
    """
    if flips not in STAGE1_FLIPS:
        raise ValueError(f"flips must be one of {STAGE1_FLIPS}, not {flips!r}")
    model_input = to_model_grid(img, model.spacing)
    box = None
    if locator is not None:
        box = locate_cord(img, locator, device, precision)
        if box is None:
            LOGGER.info("the cord locator found no cord; the whole image is segmented")
    shape = model_input.data.shape
    region = (at_least(box_on_grid(box, model_input.affine, shape), model.roi_size, shape) if box is not None
              else tuple(slice(0, n) for n in shape))
    prob_region = predict_probabilities(model.network, model_input.data[region], device, roi_size=model.roi_size,
                                        overlap=model.overlap, size_divisor=model.size_divisor,
                                        flip_axes=model.flip_axes if flips != "none" else (), precision=precision,
                                        flip_above=FLIP_ABOVE if flips == "unsure" else None)
    out = []
    for p in prob_region[: len(OUTPUT_CHANNELS)]:  # a grey matter output, if any, is not used
        full = p
        if box is not None:  # the box's probabilities into a zero map of the whole grid
            full = np.zeros(shape, np.float32)
            full[region] = p
        out.append(np.clip(resample_to_grid(full, model_input.affine, img.shape[:3], img.affine, order=1), 0.0, 1.0))
    return out[0], out[1]


def segment_with_fallback(
    img: nib.Nifti1Image, model: LoadedModel, fallback: LoadedModel | Callable[[], LoadedModel] | None = None,
    device: torch.device | str = "cpu", precision: str = "auto", locator: LoadedModel | None = None,
    flips: str = "all", threshold: float = 0.5,
) -> tuple[np.ndarray, np.ndarray, LoadedModel]:
    """:func:`segment_image` with ``model``; where its cord cannot be a spinal cord
    (:func:`core.centerline.plausible_centerline`), ``fallback`` segments the whole image again and its maps are
    kept if its cord can. Returns the cord and lesion probabilities and the model that made them.
    ``fallback`` may be a function that loads it: it is then loaded only for an image that needs it.

    The first model's maps are kept when the fallback's cord is no better: the image is then refused later with
    the first model's reason.
    """
    cord, lesion = segment_image(img, model, device, precision, locator=locator, flips=flips)
    if fallback is None:
        return cord, lesion, model
    reason = implausible_cord(cord, img.affine, threshold)
    if reason is None:
        return cord, lesion, model
    name = img.get_filename() or "image"
    if callable(fallback):  # a loader (a LoadedModel is not callable)
        fallback = fallback()
    LOGGER.warning("%s: %s's cord is not plausible (%s); segmenting again with %s", name, model.name, reason,
                   fallback.name)
    cord2, lesion2 = segment_image(img, fallback, device, precision, flips=flips)
    reason2 = implausible_cord(cord2, img.affine, threshold)
    if reason2 is not None:
        LOGGER.warning("%s: %s finds no plausible cord either (%s)", name, fallback.name, reason2)
        return cord, lesion, model
    return cord2, lesion2, fallback


def implausible_cord(cord_prob: np.ndarray, affine: np.ndarray, threshold: float = 0.5) -> str | None:
    """Why ``cord_prob`` cannot be a spinal cord (:func:`core.centerline.plausible_centerline`), or None.

    On the map's own grid, as the straightening checks it later: on a coarser grid a thin blob keeps too few
    voxels per slice for its length to be measured, and passed (seen on a held-out 3D T1w).
    """
    try:
        plausible_centerline(cord_prob, affine, threshold)
    except CenterlineError as exc:
        return str(exc)
    return None


def locate_cord(img: nib.Nifti1Image, locator: LoadedModel, device: torch.device | str = "cpu",
                precision: str = "auto", margin_mm: float = LOCATOR_MARGIN_MM) -> np.ndarray | None:
    """Scanner-space corners (2, 3) of a box around the cord that ``locator`` finds, ``margin_mm`` wider on
    every side; None when it finds no cord (no voxel of cord probability >= 0.5).

    One pass without test-time flips: the box only needs to hold the cord, and the margin absorbs the
    locator's coarser edges.
    """
    model_input = to_model_grid(img, locator.spacing)
    prob = predict_probabilities(locator.network, model_input.data, device, roi_size=locator.roi_size,
                                 overlap=locator.overlap, size_divisor=locator.size_divisor, precision=precision)
    cord = np.argwhere(prob[0] >= 0.5)
    if len(cord) == 0:
        return None
    # The box in voxel edges (half a voxel out from the outermost centres), then its eight corners in mm.
    lo, hi = cord.min(axis=0) - 0.5, cord.max(axis=0) + 0.5
    mm = nib.affines.apply_affine(model_input.affine, box_corners(lo, hi))
    return np.stack([mm.min(axis=0) - margin_mm, mm.max(axis=0) + margin_mm])


def at_least(region: tuple[slice, ...], size: tuple[int, ...], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """``region`` grown about its centre to ``size`` voxels along every axis where the grid ``shape`` allows.

    The whole-image models normalise each sliding window by its own statistics (instance norm) and were
    trained on windows of the inference window's size: a smaller box would give them smaller windows than
    they have ever seen.
    """
    out = []
    for s, n, total in zip(region, size, shape):
        n = min(int(n), total)
        if s.stop - s.start >= n:
            out.append(s)
            continue
        start = min(max(0, (s.start + s.stop - n) // 2), total - n)
        out.append(slice(start, start + n))
    return tuple(out)


def box_corners(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """The eight corners (8, 3) of the axis-aligned box from ``lo`` to ``hi``."""
    return np.array([[(lo, hi)[b][a] for a, b in enumerate(bits)] for bits in itertools.product((0, 1), repeat=3)])


def box_on_grid(box: np.ndarray, affine: np.ndarray, shape: tuple[int, ...]) -> tuple[slice, slice, slice]:
    """The voxels of the grid ``shape``/``affine`` that a scanner-space box (2, 3) overlaps, as slices."""
    ijk = nib.affines.apply_affine(np.linalg.inv(affine), box_corners(box[0], box[1]))
    lo = np.clip(np.floor(ijk.min(axis=0) + 0.5).astype(int), 0, np.asarray(shape[:3]))
    hi = np.clip(np.ceil(ijk.max(axis=0) + 0.5).astype(int), 0, np.asarray(shape[:3]))
    hi = np.maximum(hi, np.minimum(lo + 1, shape[:3]))  # never an empty region inside the grid
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
