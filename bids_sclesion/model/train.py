"""Training of the cord/lesion network on a BIDS dataset with derivatives/labels."""
from __future__ import annotations

import csv
import dataclasses
import datetime
import hashlib
import json
import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

import nibabel as nib
import numpy as np
import torch
from monai.losses import DiceCELoss

from .. import __version__
from ..__about__ import __results_revision__
from ..core.image import load_image, to_canonical
from ..core.preprocess import bias_correct_image, mask_to_model_grid, prepare_for_model
from ..core.tissue_prior import load_template
from .inference import predict_probabilities
from .io import save_model
from .network import (GREY_MATTER, IMAGE_INPUT, NetworkConfig, OUTPUT_CHANNELS, TISSUE_PRIOR_INPUTS, build_network,
                      init_output_bias, load_pretrained)
from .batches import PatchBatches, batch_loader

LOGGER = logging.getLogger("bids_sclesion.train")
_ENTITY = re.compile(r"^(sub-[A-Za-z0-9]+)")


@dataclass
class TrainingCase:
    subject: str
    image_path: Path
    cord_path: Path
    lesion_path: Path | None  # None: a cord-only case (no lesion in this image)
    dataset: int = 0  # index of the BIDS dataset the case comes from
    grey_matter_path: Path | None = None  # optional grey matter label (a third output)
    fine_lesion_path: Path | None = None  # optional lesion fraction on a fine grid of its own (phantoms)

    @property
    def suffix(self) -> str:
        return self.image_path.name.split(".")[0].rsplit("_", 1)[-1]


def find_training_cases(
    bids_dir: Path,
    suffixes: Sequence[str],
    cord_label: str = "seg-manual",
    lesion_label: str = "lesion-manual",
    require_lesion: bool = True,
    dataset: int = 0,
    filters: dict | None = None,
    participant_label: Sequence[str] | None = None,
    grey_matter_label: str | None = None,
    fine_lesion_label: str | None = None,
) -> list[TrainingCase]:
    """Images of ``suffixes`` with a cord label in derivatives/labels.

    Images are selected as the app selects them (pybids; ``filters`` as in
    ``--bids-filter-file``, e.g. ``{"acquisition": "sag"}``). With
    ``require_lesion`` the lesion label must exist too; otherwise an image
    without one is a lesion-free case (a healthy cord teaches the network
    what is *not* a lesion). ``grey_matter_label`` also records each image's
    grey matter label where one exists, ``fine_lesion_label`` its fine lesion
    fraction map (as the phantoms' ``res-fine_lesion-manual``) where one exists.
    """
    from ..bids import collect_images

    root = Path(os.path.abspath(bids_dir))
    if not (root / "dataset_description.json").is_file():
        raise ValueError(f"{root}: not a BIDS dataset (no dataset_description.json)")
    selected = collect_images(root, None, participant_label=participant_label, suffixes=suffixes, filters=filters)
    cases = []
    for image in sorted(p for paths in selected.values() for p in paths):
        try:
            rel_dir = image.parent.relative_to(root)
        except ValueError:  # pybids resolved a symbolic link in the dataset's path
            rel_dir = image.parent.relative_to(root.resolve())
        image = Path(bids_dir) / rel_dir / image.name  # as the caller named the dataset
        stem = image.name.split(".")[0]
        labels_dir = Path(bids_dir) / "derivatives" / "labels" / rel_dir
        cord = labels_dir / f"{stem}_{cord_label}.nii.gz"
        lesion = labels_dir / f"{stem}_{lesion_label}.nii.gz"
        if not cord.exists() or (require_lesion and not lesion.exists()):
            continue
        grey_matter = labels_dir / f"{stem}_{grey_matter_label}.nii.gz" if grey_matter_label else None
        fine = labels_dir / f"{stem}_{fine_lesion_label}.nii.gz" if fine_lesion_label else None
        cases.append(TrainingCase(_ENTITY.match(image.name).group(1), image, cord,
                                  lesion if lesion.exists() else None, dataset,
                                  grey_matter if grey_matter is not None and grey_matter.exists() else None,
                                  fine if fine is not None and fine.exists() and lesion.exists() else None))
    return cases


def split_by_subject(cases: list[TrainingCase], val_fraction: float, seed: int, folds: int | None = None,
                     fold: int = 0, seen_before: Collection[str] = ()) -> tuple[list, list]:
    """Subject-level split: no subject has images on both sides.

    With ``folds`` the shuffled subjects are cut into that many groups and
    group ``fold`` validates (k-fold cross-validation, one run per fold).
    Subjects in ``seen_before`` (those a pretrained model was trained on)
    validate only when too few others are left: a fine-tuned model scores
    well on them from its first iteration, which biases model selection
    towards the earliest checkpoints. Validation cases come back in that
    subject order, so that :func:`limit_validation` keeps unseen subjects first.
    """
    subjects = sorted({c.subject for c in cases})
    rng = np.random.default_rng(seed)
    rng.shuffle(subjects)
    seen = set(seen_before)
    subjects = [s for s in subjects if s not in seen] + [s for s in subjects if s in seen]
    if folds:
        if not 2 <= folds <= len(subjects):
            raise ValueError(f"{folds} folds need at least {folds} subjects; there are {len(subjects)}")
        if not 0 <= fold < folds:
            raise ValueError(f"fold must be in 0..{folds - 1}, not {fold}")
        val_subjects = np.array_split(np.asarray(subjects, dtype=object), folds)[fold].tolist()
    else:
        n_val = int(round(len(subjects) * val_fraction))
        if val_fraction > 0 and len(subjects) > 1:
            n_val = max(1, n_val)
        val_subjects = subjects[:n_val]
    rank = {s: i for i, s in enumerate(val_subjects)}
    val = sorted((c for c in cases if c.subject in rank), key=lambda c: rank[c.subject])  # stable: image order kept
    return [c for c in cases if c.subject not in rank], val


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


def _fill_cache(cases: Sequence[TrainingCase], spacing, cache_dir: Path, space: str, workers: int) -> None:
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
    from .cascade import StraightSpace, straighten_labels

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


@dataclass
class TrainingConfig:
    suffixes: tuple[str, ...] = ("T2w", "T1w", "PSIR", "STIR", "T2starw")
    spacing_mm: tuple[float, float, float] = (1.0, 1.0, 1.0)
    patch_size: tuple[int, int, int] = (64, 64, 64)
    batch_size: int = 2
    iterations: int = 2000
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    val_fraction: float = 0.15
    val_every: int = 250
    val_max_images: int = 6
    max_minutes: float | None = None
    seed: int = 0
    threads: int | None = None
    space: str = "native"  # "straight": stage-2 model on the straightened cord
    augmentation: str = "standard"  # "domain": orientation and strong intensity randomisation
    exclude_subjects: tuple[str, ...] = ()  # held out (cross-validation)
    require_lesion: bool = True  # False: images with a cord label only are lesion-free cases
    init_from: str | None = None  # model name or directory to fine-tune
    tta_flip_axes: tuple[tuple[int, ...], ...] = ()  # test-time flips recorded for inference
    freeze: str = "none"  # "encoder": keep the pretrained encoder fixed (with init_from)
    encoder_lr_scale: float = 0.1  # with init_from: the pretrained encoder learns this much slower
    patience: int | None = None  # stop after this many validations without improvement
    resume: bool = False  # continue from MODEL_DIR/checkpoint.pt
    folds: int | None = None  # k-fold: validate on fold ``fold`` of ``folds`` subject groups
    fold: int = 0
    cord_label: str = "seg-manual"  # label files: <stem>_<label>.nii.gz in derivatives/labels
    lesion_label: str = "lesion-manual"
    monitor: str = "lesion_f1"  # validation metric that picks the saved model and drives --patience
    filters: dict | None = None  # pybids filters selecting the images (as the app's --bids-filter-file)
    participant_label: tuple[str, ...] = ()  # train on these subjects only (labels without "sub-")
    tensorboard: bool = False  # also write TensorBoard scalars to MODEL_DIR/tensorboard
    dataset_weights: tuple[float, ...] = ()  # relative sampling weight of each dataset (empty: equal)
    grey_matter_label: str | None = None  # <stem>_<label>.nii.gz: grey matter as a third output, where labelled
    dice_weight: float = 1.0  # weight of the Dice term against cross-entropy (1.0) in the loss
    fine_lesion_label: str | None = None  # <stem>_<label>.nii.gz: fine lesion fractions label the straight grid
    workers: int = 0  # processes preprocessing, then preparing batches (0: the training process); same results
    cpu_bf16: bool = False  # on a CPU, compute the network in bfloat16 (autocast); weights and loss stay float32
    tissue_prior: bool = False  # straight space: grey/white matter expected in the cord as two more input channels


#: Validation metrics early stopping and model selection can follow.
MONITORED = ("lesion_f1", "lesion_dice", "cord_dice")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX, through oneDNN)."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def check_cpu_bf16() -> None:
    """Refuse bfloat16 on a CPU without native support: emulated, it is slower than float32."""
    if not cpu_has_native_bf16():
        raise ValueError("--cpu-bf16: this CPU has no native bfloat16 (AVX512-BF16 or AMX); train in float32")


def _evaluate(network, cases_data, roi_size, device, cases=None, voxel_mm3: float = 1.0) -> dict[str, float]:
    """Validation scores: the app's thresholding and post-processing, the scorer of ``bids_sclesion-eval``."""
    from ..core.lesions import DEFAULT_MIN_LESION_MM3, threshold_masks
    from ..evaluate import aggregate, score_arrays

    network.eval()
    scores = []
    for k, (image, labels) in enumerate(cases_data):
        prob = predict_probabilities(network, image, device, roi_size=roi_size)
        # Without the app's smallest-lesion rule, specks the app never reports would count as false positives.
        cord, lesion = threshold_masks(prob[0], prob[1], min_lesion_mm3=DEFAULT_MIN_LESION_MM3, voxel_mm3=voxel_mm3)
        name, suffix = (cases[k].image_path.name, cases[k].suffix) if cases else (f"case{k}", "")
        scores.append(score_arrays(name, suffix, cord, lesion, labels[0] > 0.5, labels[1] > 0.5, voxel_mm3))
    network.train()
    summary = aggregate(scores)
    return {f"val_{key}": float(summary[key]) for key in ("cord_dice", "lesion_dice", "lesion_f1",
                                                             "lesion_f1_10pct", "false_positives")}


def monitored_score(metrics: dict[str, float], monitor: str) -> float:
    """The number that selects the best model and drives early stopping (higher is better).

    Ties and undefined values fall back on the other metrics, so a cord-only
    validation set (no lesion anywhere) is judged by its cord Dice.
    """
    if monitor not in MONITORED:
        raise ValueError(f"monitor must be one of {MONITORED}, not {monitor!r}")
    order = [monitor] + [m for m in MONITORED if m != monitor]
    values = [metrics.get(f"val_{m}", float("nan")) for m in order]
    values = [v if np.isfinite(v) else 0.0 for v in values]
    # Lexicographic: the monitored metric first, the others break ties.
    return values[0] + 1e-3 * values[1] + 1e-6 * values[2]


def train(
    bids_dir: str | Path | Sequence[str | Path],
    model_dir: str | Path,
    config: TrainingConfig,
    network_config: NetworkConfig | None = None,
    cache_dir: str | Path | None = None,
    device: str = "cpu",
    progress: bool = True,
) -> Path:
    """Train a network and save it (safetensors + JSON) in ``model_dir``.

    With several BIDS datasets, each batch draws from every dataset equally
    often (a few real images are not drowned by many phantoms), or as
    ``config.dataset_weights`` says. Started by
    ``torchrun`` (``WORLD_SIZE`` > 1), each process trains on its own
    batches and gradients are averaged (DistributedDataParallel); process 0
    validates, logs and saves.
    """
    if not config.dice_weight >= 0:  # checked before any preprocessing
        raise ValueError(f"--dice-weight must be >= 0, got {config.dice_weight}")
    if config.workers < 0:
        raise ValueError(f"--workers must be >= 0, got {config.workers}")
    if config.fine_lesion_label and config.space != "straight":
        raise ValueError("--fine-lesion-label needs --space straight (the fine maps label the straightened cord)")
    if config.cpu_bf16 and device == "cpu":
        check_cpu_bf16()
    bids_dirs = [Path(bids_dir)] if isinstance(bids_dir, (str, Path)) else [Path(b) for b in bids_dir]
    model_dir = Path(model_dir)
    dist = DistributedContext.from_environment(device)
    try:
        return _train(bids_dirs, model_dir, config, network_config, cache_dir, device, progress, dist)
    finally:
        dist.close()


@dataclass
class DistributedContext:
    """Where this process stands in a ``torchrun`` job (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @classmethod
    def from_environment(cls, device: str) -> "DistributedContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        import torch.distributed as tdist

        backend = "nccl" if device == "cuda" else "gloo"
        if not tdist.is_initialized():
            # Long timeout: the other processes wait while process 0 preprocesses the whole dataset.
            tdist.init_process_group(backend, timeout=datetime.timedelta(hours=12))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device == "cuda":
            torch.cuda.set_device(local_rank)
        return cls(tdist.get_rank(), tdist.get_world_size(), local_rank, backend)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, device: str) -> torch.device:
        return torch.device("cuda", self.local_rank) if device == "cuda" and self.enabled else torch.device(device)

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as tdist

            tdist.barrier()

    def any_true(self, flag: bool, device: torch.device) -> bool:
        """True on every process when ``flag`` is true on any."""
        if not self.enabled:
            return flag
        import torch.distributed as tdist

        value = torch.tensor([1.0 if flag else 0.0], device=device)
        tdist.all_reduce(value, op=tdist.ReduceOp.MAX)
        return bool(value.item() > 0)

    def from_main(self, flag: bool, device: torch.device) -> bool:
        """Process 0's ``flag`` on every process."""
        if not self.enabled:
            return flag
        import torch.distributed as tdist

        value = torch.tensor([1.0 if flag else 0.0], device=device)
        tdist.broadcast(value, src=0)
        return bool(value.item() > 0)

    def close(self) -> None:
        if self.enabled:
            import torch.distributed as tdist

            if tdist.is_initialized():
                tdist.destroy_process_group()


def _train(bids_dirs: list[Path], model_dir: Path, config: TrainingConfig, network_config: NetworkConfig | None,
           cache_dir, device: str, progress: bool, dist: DistributedContext) -> Path:
    # Each process draws its own batches; one process reproduces a single-process run exactly.
    torch.manual_seed(config.seed + dist.rank)
    progress = progress and dist.is_main
    if config.threads:
        torch.set_num_threads(config.threads)
    init = None
    if config.init_from:
        from .io import load_model

        init = load_model(config.init_from, "cpu")
        network_config = _fine_tuned_network(NetworkConfig.from_dict(init.metadata["network"]), network_config,
                                             config)
    network_config = network_config or NetworkConfig()
    if config.grey_matter_label:
        network_config = dataclasses.replace(network_config, out_channels=max(network_config.out_channels,
                                                                              len(OUTPUT_CHANNELS) + 1))
    # A model that took the prior keeps taking it when fine-tuned.
    tissue_prior = config.tissue_prior or network_config.in_channels > 1
    if tissue_prior:
        if config.space != "straight":
            raise ValueError("--tissue-prior is for stage 2 (--space straight): the prior is fitted to the "
                             "straightened cord")
        network_config = dataclasses.replace(network_config, in_channels=1 + len(TISSUE_PRIOR_INPUTS))
    weights = _dataset_weights(config, len(bids_dirs))
    cases = []
    for i, bd in enumerate(bids_dirs):
        found = find_training_cases(bd, config.suffixes, cord_label=config.cord_label,
                                    lesion_label=config.lesion_label, require_lesion=config.require_lesion, dataset=i,
                                    filters=config.filters, participant_label=config.participant_label or None,
                                    grey_matter_label=config.grey_matter_label,
                                    fine_lesion_label=config.fine_lesion_label)
        if not found:
            raise ValueError(f"{bd}: no image of {list(config.suffixes)}"
                             f"{' matching ' + json.dumps(config.filters) if config.filters else ''} with labels "
                             f"<stem>_{config.cord_label}.nii.gz{'' if not config.require_lesion else ' and <stem>_' + config.lesion_label + '.nii.gz'}"
                             " in derivatives/labels")
        cases.extend(found)
    cases = [c for c in cases if c.subject not in set(config.exclude_subjects)]
    if not cases:
        raise ValueError("every image was excluded")
    if config.grey_matter_label and not any(c.grey_matter_path for c in cases):
        raise ValueError(f"no image has a grey matter label <stem>_{config.grey_matter_label}.nii.gz in derivatives/labels")
    if config.fine_lesion_label and not any(c.fine_lesion_path for c in cases):
        raise ValueError(f"no image has a fine lesion map <stem>_{config.fine_lesion_label}.nii.gz in derivatives/labels")
    seen_by_init = set(init.metadata.get("training", {}).get("subjects", [])) if init is not None else set()
    train_cases, val_cases = split_by_subject(cases, config.val_fraction, config.seed, config.folds, config.fold,
                                              seen_before=seen_by_init)
    train_cases, val_cases = limit_validation(train_cases, val_cases, config.val_max_images)
    seen_in_val = sorted({c.subject for c in val_cases} & seen_by_init)
    if seen_in_val:
        LOGGER.warning("validation subjects %s were in the training of %s: validation scores are biased towards "
                       "it (more subjects the pretrained model never saw would avoid this)",
                       " ".join(seen_in_val), config.init_from)
    LOGGER.info("%d training images (%d subjects), %d validation images", len(train_cases),
                len({c.subject for c in train_cases}), len(val_cases))
    cache = Path(cache_dir) if cache_dir else model_dir / ".cache"
    t0 = time.time()
    # Process 0 fills the cache first; the others then read it (no two writers of one file).
    if not dist.is_main:
        dist.barrier()
    elif config.workers > 0:
        _fill_cache(train_cases + val_cases, config.spacing_mm, cache, config.space, config.workers)
    train_data = [preprocess_case(c, config.spacing_mm, cache, config.space)
                  for c in _progress(train_cases, progress, "preprocess")]
    val_data = [preprocess_case(c, config.spacing_mm, cache, config.space) for c in val_cases] if dist.is_main else []
    if dist.is_main:
        dist.barrier()
    if tissue_prior:  # validation images get the prior of their true cord
        from .cascade import StraightSpace, with_tissue_prior

        val_data = [(with_tissue_prior(image, labels[0] > 0.5, StraightSpace()), labels) for image, labels in val_data]
    by_dataset = [[k for k, c in enumerate(train_cases) if c.dataset == d] for d in range(len(bids_dirs))]
    draw = draw_probabilities(weights, [len(ks) for ks in by_dataset])
    LOGGER.info("preprocessing took %.0f s", time.time() - t0)

    dev = dist.device(device)
    network = build_network(network_config)
    if init is not None:
        # New channels (a wider network, a grey matter output) start from scratch; the rest is the pretrained model.
        load_pretrained(network, init.network.state_dict(), pretrained=init.network)
    else:
        init_output_bias(network, (-2.0, -4.0, -2.0)[: network_config.out_channels])
    network = network.to(dev)
    groups, max_lrs = _parameter_groups(network, config, pretrained=init is not None)
    optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lrs, total_steps=config.iterations,
                                                    pct_start=0.05)
    loss_fn = DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-4, smooth_dr=1e-4, lambda_dice=config.dice_weight)
    batches = PatchBatches(train_data, by_dataset, draw, config.batch_size, config.patch_size,
                           network_config.out_channels, len(OUTPUT_CHANNELS), config.augmentation, config.seed,
                           dist.rank, prior=load_template() if tissue_prior else None,
                           spacing_mm=tuple(_straight_space_dict()["spacing_mm"]))
    model_dir.mkdir(parents=True, exist_ok=True)
    log_path = model_dir / "training_log.csv"
    best, best_state, best_metrics, first_it, stale = -1.0, None, {}, 1, 0
    checkpoint_path = model_dir / CHECKPOINT
    if config.resume and checkpoint_path.exists():
        ckpt = torch.load(checkpoint_path, map_location=dev, weights_only=True)
        planned = int(ckpt["scheduler"].get("total_steps", config.iterations))
        if planned != config.iterations:
            raise ValueError(f"{checkpoint_path}: this run was planned for {planned} iterations, not "
                             f"{config.iterations}; resume with --iterations {planned}")
        network.load_state_dict(ckpt["network"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if dist.is_main:
            torch.set_rng_state(ckpt["torch_rng"])
        best, best_state, best_metrics = float(ckpt["best"]), ckpt["best_state"], dict(ckpt["best_metrics"])
        first_it, stale = int(ckpt["iteration"]) + 1, int(ckpt["stale"])
        LOGGER.info("resuming from %s at iteration %d", checkpoint_path, first_it)
    elif config.resume:
        LOGGER.warning("--resume: no %s yet, starting from the beginning", checkpoint_path)
    trained = network
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(network, device_ids=[dist.local_rank] if dev.type == "cuda" else None)
    # Mixed precision on a GPU (float16 with loss scaling); on a CPU bfloat16 only when asked, since it
    # changes the numbers (same exponent range as float32, so no loss scaling).
    use_amp = dev.type == "cuda"
    cpu_bf16 = dev.type == "cpu" and config.cpu_bf16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    board = _tensorboard_writer(model_dir) if config.tensorboard and dist.is_main else None
    start = time.time()
    network.train()
    resumed = first_it > 1 and log_path.exists()
    fh = open(log_path, "a" if resumed else "w", newline="") if dist.is_main else None
    writer = csv.writer(fh) if fh else None
    if writer and not resumed:
        writer.writerow(["iteration", "loss", "lr", "seconds"] + [f"val_{k}" for k in _LOGGED])
    bar = _progress_bar(config.iterations, first_it - 1, progress)
    last_report = 0.0  # seconds into this run of the last batch-log progress line
    running = []
    it = first_it - 1
    loader = batch_loader(batches, first_it, config.iterations, config.workers, pin_memory=dev.type == "cuda")
    try:
        for it, batch in zip(range(first_it, config.iterations + 1), loader):
            x, y = batch.image.to(dev, non_blocking=True), batch.label.to(dev, non_blocking=True)
            with torch.autocast(dev.type, dtype=torch.float16 if use_amp else torch.bfloat16,
                                enabled=use_amp or cpu_bf16):
                logits = trained(x)
            loss = _loss(loss_fn, logits.float(), y, batch.labelled_gm.to(dev))
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            running.append(loss.item())
            elapsed = time.time() - start
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{running[-1]:.3f}", refresh=False)
            elif progress and elapsed - last_report >= BATCH_REPORT_SECONDS:
                last_report = elapsed
                print(_progress_line(it, first_it, config.iterations, running, elapsed), flush=True)
            if board is not None:
                board.add_scalar("train/loss", running[-1], it)
                board.add_scalar("train/lr", scheduler.get_last_lr()[0], it)
            out_of_time = dist.any_true(config.max_minutes is not None and elapsed > config.max_minutes * 60, dev)
            stop = False
            if it % config.val_every == 0 or it == config.iterations or out_of_time:
                if dist.is_main:
                    metrics = (_evaluate(network, val_data, config.patch_size, dev, val_cases, _voxel_mm3(config))
                               if val_data else {})
                    score = monitored_score(metrics, config.monitor)
                    if not val_data or score >= best:
                        best, best_state = score, {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
                        best_metrics = dict(metrics, iteration=it)
                        stale = 0
                    else:
                        stale += 1
                    writer.writerow([it, np.mean(running), scheduler.get_last_lr()[0], round(elapsed, 1)]
                                    + [metrics.get(f"val_{k}") for k in _LOGGED])
                    fh.flush()
                    if board is not None:
                        for key, value in metrics.items():
                            board.add_scalar(f"validation/{key.removeprefix('val_')}", value, it)
                        board.flush()
                    message = (f"[train] it {it}/{config.iterations} loss {np.mean(running):.4f} "
                               f"{json.dumps({k: round(v, 3) for k, v in metrics.items()})} {elapsed:.0f}s")
                    if bar is not None:
                        bar.write(message)
                    elif progress:
                        print(message, flush=True)
                    _save_checkpoint(checkpoint_path, network, optimizer, scheduler, it, best, best_state,
                                     best_metrics, stale)
                    stop = config.patience is not None and bool(val_data) and stale >= config.patience
                    if stop:
                        LOGGER.info("early stop at iteration %d: no better validation %s in %d checks", it,
                                    config.monitor, stale)
                running = []
                stop = dist.from_main(stop, dev)
            if out_of_time:
                LOGGER.warning("stopping after %.1f min (--max-minutes)", elapsed / 60)
                break
            if stop:
                break
    finally:
        if bar is not None:
            bar.close()
        if fh is not None:
            fh.close()
        if board is not None:
            board.close()
    if not dist.is_main:
        return model_dir
    if best_state is None:
        raise ValueError(f"{checkpoint_path}: training already finished at iteration {first_it - 1}; "
                         "raise --iterations to train further")
    network.load_state_dict(best_state)
    metadata = {
        "name": model_dir.name,
        "version": __version__,
        "inputs": [IMAGE_INPUT] + (list(TISSUE_PRIOR_INPUTS) if tissue_prior else []),
        "outputs": list(OUTPUT_CHANNELS) + [GREY_MATTER] * (network_config.out_channels - len(OUTPUT_CHANNELS)),
        "spacing_mm": list(config.spacing_mm),
        "space": config.space,
        "contrasts": sorted({c.suffix for c in cases}),
        "straight_space": _straight_space_dict() if config.space == "straight" else None,
        "network": network_config.to_dict(),
        "preprocessing": {"reorient": "closest canonical (RAS)", "bias_correction": "N4", "normalisation": "percentiles 0.5-99.5 -> 0-1"},
        # Instance normalisation sees windows of the training patch size.
        "inference": {"roi_size": list(config.patch_size), "overlap": 0.25, "threshold": 0.5,
                      "flip_axes": [list(a) for a in config.tta_flip_axes],
                      "voxel_average": _voxel_average(config, train_cases, init)},
        "training": {
            "bids_dir": [str(b) for b in bids_dirs],
            "init_from": init.name if init is not None else None,
            "images": len(train_cases),
            "grey_matter_images": sum(c.grey_matter_path is not None for c in train_cases),
            "fine_lesion_images": sum(c.fine_lesion_path is not None for c in train_cases),
            "subjects": sorted({c.subject for c in train_cases}),
            "validation_subjects": sorted({c.subject for c in val_cases}),
            "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.__dict__.items()},
            "processes": dist.world_size,
            "iterations_done": it,
            "minutes": round((time.time() - start) / 60, 1),
            "best_validation": best_metrics,
        },
    }
    save_model(network, metadata, model_dir)
    return model_dir


def _loss(loss_fn, logits: torch.Tensor, target: torch.Tensor, labelled_gm: torch.Tensor) -> torch.Tensor:
    """Cord and lesion loss, plus the grey matter loss on the samples that have a grey matter label."""
    n = len(OUTPUT_CHANNELS)
    loss = loss_fn(logits[:, :n], target[:, :n])
    if logits.shape[1] > n and bool(labelled_gm.any()):
        loss = loss + loss_fn(logits[labelled_gm, n:], target[labelled_gm, n:])
    return loss


#: Validation columns of training_log.csv (and TensorBoard scalars).
_LOGGED = ("cord_dice", "lesion_dice", "lesion_f1", "lesion_f1_10pct", "false_positives")


#: Without a terminal (SLURM logs, nohup), a progress line this often between validations.
BATCH_REPORT_SECONDS = 300.0


def _progress_line(it: int, first_it: int, total: int, losses: list[float], elapsed: float) -> str:
    """``[train] it 800/4000 loss 0.4123, 2.10 it/s, about 25 min left`` (speed of this process's run)."""
    rate = (it - first_it + 1) / max(elapsed, 1e-9)
    return (f"[train] it {it}/{total} loss {np.mean(losses):.4f}, {rate:.2f} it/s, "
            f"about {(total - it) / rate / 60:.0f} min left")


def _progress_bar(total: int, done: int, enabled: bool):
    """A live progress bar on a terminal; None elsewhere (batch logs get a line every BATCH_REPORT_SECONDS
    and one per validation)."""
    import sys

    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="it", desc="training", dynamic_ncols=True)


def _tensorboard_writer(model_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from exc
    return SummaryWriter(log_dir=str(model_dir / "tensorboard"))


CHECKPOINT = "checkpoint.pt"

def _fine_tuned_network(pretrained: NetworkConfig, requested: NetworkConfig | None,
                        config: TrainingConfig) -> NetworkConfig:
    """The pretrained network, or a wider one built around it when more channels are asked for."""
    if requested is None or tuple(requested.channels) == tuple(pretrained.channels):
        return pretrained
    if len(requested.channels) != len(pretrained.channels) or any(
            new < old for new, old in zip(requested.channels, pretrained.channels)):
        raise ValueError(f"--channels {' '.join(map(str, requested.channels))}: {config.init_from} has channels "
                         f"{' '.join(map(str, pretrained.channels))}; a fine-tuned network may be wider at each "
                         "level, with as many levels, but not narrower")
    if config.freeze == "encoder":
        raise ValueError("--freeze encoder with a wider network (--channels) would leave the new encoder "
                         "channels at their random start; use --freeze none")
    return dataclasses.replace(pretrained, channels=tuple(requested.channels))


#: Encoder of MONAI's UNet: the down-sampling block of each level and the bottom block.
_ENCODER = re.compile(r"^model\.(?:1\.submodule\.)*(?:0\.|1\.submodule\.(?:conv|residual)\.)")


def is_encoder_parameter(name: str) -> bool:
    return bool(_ENCODER.match(name))


def _parameter_groups(network: torch.nn.Module, config: TrainingConfig, pretrained: bool):
    """Optimizer groups: with a pretrained start, the encoder is frozen or learns slower."""
    if config.freeze not in ("none", "encoder"):
        raise ValueError(f"freeze must be 'none' or 'encoder', not {config.freeze!r}")
    if not pretrained:
        if config.freeze != "none":
            raise ValueError("--freeze needs --init-from (a pretrained model)")
        return [{"params": list(network.parameters())}], config.learning_rate
    encoder, decoder = [], []
    for name, param in network.named_parameters():
        (encoder if is_encoder_parameter(name) else decoder).append(param)
    if config.freeze == "encoder":
        for param in encoder:
            param.requires_grad_(False)
        return [{"params": decoder}], config.learning_rate
    scaled = config.learning_rate * config.encoder_lr_scale
    return [{"params": encoder, "lr": scaled}, {"params": decoder}], [scaled, config.learning_rate]


def _save_checkpoint(path: Path, network, optimizer, scheduler, iteration, best, best_state, best_metrics,
                     stale) -> None:
    """Everything needed to resume (plain tensors and numbers: loadable with weights_only=True)."""
    from ..utils.io import atomic_path

    state = {
        "network": network.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "iteration": int(iteration),
        "best": float(best),
        "best_state": best_state,
        "best_metrics": {k: float(v) for k, v in best_metrics.items()},
        "stale": int(stale),
    }
    with atomic_path(path) as tmp:
        torch.save(state, str(tmp))


def _dataset_weights(config: TrainingConfig, n_datasets: int) -> np.ndarray:
    """Sampling weight of each dataset, checked against the number of datasets."""
    if not config.dataset_weights:
        return np.ones(n_datasets)
    weights = np.asarray(config.dataset_weights, float)
    if len(weights) != n_datasets:
        raise ValueError(f"--dataset-weights: {len(weights)} weights for {n_datasets} datasets "
                         "(one per dataset: BIDS_DIR, then each --add-dataset)")
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or weights.sum() <= 0:
        raise ValueError(f"--dataset-weights: weights must be >= 0 and not all 0, got {list(config.dataset_weights)}")
    return weights


def draw_probabilities(weights: np.ndarray, training_images: Sequence[int]) -> np.ndarray:
    """Probability that a batch sample comes from each dataset.

    A dataset left without training images (all its subjects validate or are
    excluded) is never drawn; the others share its weight in proportion.
    """
    draw = np.array([w if n else 0.0 for w, n in zip(weights, training_images)], float)
    if draw.sum() <= 0:
        raise ValueError("no training image in any dataset with a weight above 0")
    return draw / draw.sum()


def _voxel_mm3(config: TrainingConfig) -> float:
    """Voxel volume of the grid the network trains on."""
    if config.space == "straight":
        from .cascade import StraightSpace

        return float(np.prod(StraightSpace().spacing_mm))
    return float(np.prod(config.spacing_mm))


def _voxel_average(config: TrainingConfig, train_cases: list[TrainingCase], init) -> bool:
    """Whether the app should average a stage-2 map over each source voxel's extent on the way back.

    A model taught lesions' physical extent (fine lesion maps) predicts it;
    the mean over a thick voxel is then its covered fraction, which is what
    the source grid's labels threshold. A fine-tuning without fine maps keeps
    the pretrained model's choice.
    """
    if config.space != "straight":
        return False
    if any(c.fine_lesion_path for c in train_cases):
        return True
    return bool(init is not None and init.metadata.get("inference", {}).get("voxel_average", False))


def _straight_space_dict() -> dict:
    from .cascade import StraightSpace

    return StraightSpace().to_dict()


def limit_validation(train_cases: list[TrainingCase], val_cases: list[TrainingCase],
                     max_images: int) -> tuple[list[TrainingCase], list[TrainingCase]]:
    """Keep at most ``max_images`` validation images, covering as many contrasts as possible.

    Subjects none of whose images are kept go back to training (they would
    otherwise be neither trained nor validated on); a subject with a kept
    image stays out of training entirely, so the split remains by subject.
    """
    kept = _interleave_contrasts(val_cases)[:max_images]
    validating = {c.subject for c in kept}
    returned = [c for c in val_cases if c.subject not in validating]
    if returned:
        LOGGER.info("validation limited to %d images: %d subjects go back to training", len(kept),
                    len({c.subject for c in returned}))
    return train_cases + returned, kept


def _interleave_contrasts(cases: list[TrainingCase]) -> list[TrainingCase]:
    """Order cases so that any prefix covers as many contrasts as possible."""
    by_suffix: dict[str, list[TrainingCase]] = {}
    for case in cases:
        by_suffix.setdefault(case.suffix, []).append(case)
    out = []
    for i in range(max((len(v) for v in by_suffix.values()), default=0)):
        out.extend(v[i] for _, v in sorted(by_suffix.items()) if i < len(v))
    return out


def _progress(items, enabled: bool, label: str):
    for i, item in enumerate(items, 1):
        if enabled:
            print(f"[{label}] {i}/{len(items)} {getattr(item, 'image_path', '')}", flush=True)
        yield item
