"""Sliding-window inference of cord and lesion probabilities."""
from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from monai.inferers import sliding_window_inference

from ..config import PRECISIONS

LOGGER = logging.getLogger("bids_sclesion.inference")
#: Test-time flips: along each axis of the volume (for stage 2: left-right, anterior-posterior, along the cord).
TTA_FLIPS = ((0,), (1,), (2,))


def cpu_has_native_bfloat16() -> bool:
    """Whether this CPU computes bfloat16 in hardware (AMX tiles or AVX512-BF16); emulated bfloat16 is slower."""
    probes = [getattr(torch.cpu, name, None) for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported")]
    return any(probe() for probe in probes if probe is not None)


def inference_dtype(device: torch.device | str, precision: str = "auto") -> torch.dtype:
    """The dtype the network computes in on ``device`` for ``precision`` (one of ``PRECISIONS``)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, not {precision!r}")
    kind = torch.device(device).type
    if precision == "float32":
        return torch.float32
    if kind == "cuda":
        return torch.float16
    return torch.bfloat16 if kind == "cpu" and cpu_has_native_bfloat16() else torch.float32


def select_device(requested: str = "auto") -> torch.device:
    """'auto' picks CUDA when available; 'cuda' without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was requested but no CUDA device is available")
    return torch.device(requested)


def predict_probabilities(
    network: torch.nn.Module,
    volume: np.ndarray,
    device: torch.device | str = "cpu",
    roi_size: tuple[int, int, int] = (64, 64, 64),
    overlap: float = 0.25,
    size_divisor: int = 16,
    flip_axes: tuple[tuple[int, ...], ...] = (),
    return_copies: bool = False,
    precision: str = "auto",
    flip_above: float | None = None,
) -> np.ndarray:
    """Return sigmoid probabilities, shape (outputs, *spatial shape): cord, lesion (then grey matter, if trained).

    ``volume`` is one image (D, H, W) or the network's input channels (C, D, H, W).

    The volume is padded to a multiple of the network's down-sampling factor
    and windows are blended with Gaussian weights. ``flip_axes`` adds
    test-time augmentation: the probabilities of each flipped copy (axes of
    the volume) are flipped back and averaged with the plain prediction;
    ``return_copies`` returns every copy instead, shape (copies, outputs, ...). ``precision``: see
    ``PRECISIONS`` (probabilities are float32 either way). ``flip_above``: the flipped copies are computed
    only in the windows where the plain prediction reaches this probability in some output (see
    :func:`flips_where_unsure`); None: in every window.
    """
    device = torch.device(device)
    dtype = inference_dtype(device, precision)
    channels = volume.astype(np.float32)[None] if volume.ndim == 3 else volume.astype(np.float32)
    shape = np.asarray(channels.shape[1:])
    padded = np.maximum(np.ceil(shape / size_divisor).astype(int) * size_divisor, size_divisor)
    pad = [(0, int(p - s)) for s, p in zip(shape, padded)]
    # Each channel is padded with its own minimum (the image's background, a prior's zero).
    x = np.stack([np.pad(c, pad, mode="constant", constant_values=float(np.min(c))) for c in channels])
    roi = tuple(int(min(r, p)) for r, p in zip(roi_size, padded))
    tensor = torch.from_numpy(x)[None].to(device)
    with torch.inference_mode():
        autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32
                    else contextlib.nullcontext())
        if flip_above is not None and flip_axes and not return_copies:
            with autocast:
                plain = torch.sigmoid(sliding_window_with_fallback(network, tensor, roi, overlap).float()).cpu()
                prob = flips_where_unsure(network, tensor, plain, roi, overlap, flip_axes, flip_above)
            return prob[0, :, : shape[0], : shape[1], : shape[2]].numpy()
        prob, copies = None, []
        for axes in ((),) + tuple(tuple(a) for a in flip_axes):
            dims = [a + 2 for a in axes]
            x_in = torch.flip(tensor, dims) if dims else tensor
            with autocast:
                logits = sliding_window_with_fallback(network, x_in, roi, overlap)
            p = torch.sigmoid(logits.float()).cpu()  # the copies are summed in CPU memory
            p = torch.flip(p, dims) if dims else p
            if return_copies:
                copies.append(p[0, :, : shape[0], : shape[1], : shape[2]].numpy())
            prob = p if prob is None else prob + p
        if return_copies:
            return np.stack(copies)
        prob = (prob / (1 + len(flip_axes)))[0].numpy()
    return prob[:, : shape[0], : shape[1], : shape[2]]


def flips_where_unsure(network: torch.nn.Module, x: torch.Tensor, plain: torch.Tensor, roi: tuple[int, ...],
                       overlap: float, flip_axes: tuple[tuple[int, ...], ...], flip_above: float,
                       batch: int = 2) -> torch.Tensor:
    """Average the plain probabilities ``plain`` (1, outputs, ...) with flipped copies computed only in the
    sliding windows where ``plain`` reaches ``flip_above`` in some output.

    Far from the cord the plain pass is sure (every probability near 0); near it the flips still smooth the
    edges. Each flipped copy uses the windows that sliding over the flipped volume would use (the plain
    grid, mirrored), so that where every window is flipped the result is the plain four-copy mean. A voxel's
    flipped copy counts with the share of its Gaussian window weight that the flipped windows cover, so the
    average fades to the plain pass where no window around the voxel was flipped.
    """
    size = tuple(int(n) for n in x.shape[2:])
    interval = [r if r == n else max(int(r * (1 - overlap)), 1) for r, n in zip(roi, size)]
    grid = dense_patch_slices(size, roi, interval)
    weight = compute_importance_map(roi, mode="gaussian", device="cpu")
    everything = (slice(None), slice(None))
    plain_weight = torch.zeros(size)  # the plain grid's window weight per voxel
    for w in grid:
        plain_weight[w] += weight
    # each copy's window weight if every window were flipped: its grid is the plain one mirrored
    full = [torch.flip(plain_weight, list(axes)) for axes in flip_axes]
    tasks = []  # (copy, window) pairs to compute
    for copy, axes in enumerate(flip_axes):
        for w in grid:
            w = tuple(slice(n - s.stop, n - s.start) if d in axes else s for d, (s, n) in enumerate(zip(w, size)))
            if float(plain[everything + w].max()) >= flip_above:
                tasks.append((copy, w))
    logits = [torch.zeros_like(plain) for _ in flip_axes]
    covered = [torch.zeros(size) for _ in flip_axes]
    for start in range(0, len(tasks), batch):
        chunk = tasks[start: start + batch]
        patches = [torch.flip(x[everything + w], [a + 2 for a in flip_axes[c]]) for c, w in chunk]
        # Always a full batch: on a CPU one window alone can take longer than two together.
        patches += patches[:1] * (batch - len(chunk))
        out = _predict_windows(network, torch.cat(patches))
        for (c, w), o in zip(chunk, out):
            logits[c][everything + w] += torch.flip(o, [a + 1 for a in flip_axes[c]])[None] * weight
            covered[c][w] += weight
    total, votes = plain.clone(), torch.ones(size)
    for copy in range(len(flip_axes)):
        share = torch.where(full[copy] > 0, covered[copy] / full[copy].clamp(min=1e-12), 0.0).clamp(max=1.0)
        total += torch.sigmoid(logits[copy] / covered[copy].clamp(min=1e-12)) * share
        votes += share
    return total / votes


def _predict_windows(network: torch.nn.Module, patches: torch.Tensor) -> torch.Tensor:
    """The network's float32 output for a batch of windows, in CPU memory; on out-of-memory, the batch runs on
    the CPU instead (logged as a warning), as the sliding window's last fallback does."""
    try:
        return network(patches).float().cpu()
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not _is_out_of_memory(exc):
            raise
        _release_memory(patches.device)
        LOGGER.warning("out of memory on %s for %d flipped windows (%s); retrying them on the CPU", patches.device,
                       len(patches), str(exc).splitlines()[0][:120])
        with _network_on_cpu(network, patches.device):
            return network(patches.cpu().float()).float()


@contextlib.contextmanager
def _network_on_cpu(network: torch.nn.Module, device: torch.device):
    """The network on the CPU for the block, then back on ``device``: the last out-of-memory fallback."""
    network.to("cpu")
    try:
        yield
    finally:
        network.to(device)


def _release_memory(device: torch.device) -> None:
    """After an out-of-memory error: give the cached GPU memory back before retrying."""
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _is_out_of_memory(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def sliding_window_with_fallback(network: torch.nn.Module, x: torch.Tensor, roi: tuple[int, ...],
                                 overlap: float) -> torch.Tensor:
    """Gaussian-blended sliding window; on out-of-memory, retry with less memory instead of failing.

    First two windows at a time on the input's device; then one window at a time with the blended
    output kept in CPU memory; then everything on the CPU. Each fallback is logged as a warning.
    """
    device = x.device
    attempts = [
        ("", dict(sw_batch_size=2)),
        ("one window at a time, blending in CPU memory", dict(sw_batch_size=1, sw_device=device, device="cpu")),
        ("on the CPU", None),
    ]
    for i, (what, kwargs) in enumerate(attempts):
        try:
            if kwargs is None:
                # a CUDA float16 autocast does not reach the CPU; a CPU bfloat16 one, if any, still applies
                with _network_on_cpu(network, device):
                    return sliding_window_inference(x.cpu().float(), roi, sw_batch_size=1, predictor=network,
                                                    overlap=overlap, mode="gaussian")
            return sliding_window_inference(x, roi, predictor=network, overlap=overlap, mode="gaussian", **kwargs)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc) or i == len(attempts) - 1:
                raise
            _release_memory(device)
            LOGGER.warning("out of memory on %s for a volume of %s voxels (%s); retrying %s",
                           device, "x".join(str(d) for d in x.shape[2:]), str(exc).splitlines()[0][:120],
                           attempts[i + 1][0])
    raise AssertionError("unreachable")
