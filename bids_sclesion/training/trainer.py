"""The training run, one method per phase: cases and split, data, network, optimiser, step, validation,
checkpoint, saved model."""
from __future__ import annotations

import csv
import json
import logging
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from monai.losses import DiceCELoss

from ..model.inference import predict_probabilities
from ..model.io import save_model
from ..model.network import OUTPUT_CHANNELS, NetworkConfig, build_network, init_output_bias, load_pretrained
from .batches import PatchBatches, batch_loader
from .cache import fill_cache, preprocess_case
from .cases import TrainingCase, find_training_cases, limit_validation, split_by_subject
from .config import TrainingConfig, check_config, draw_probabilities, monitored_score, sampling_weights, voxel_mm3
from .distributed import DistributedContext
from .metadata import straight_space_dict, training_metadata
from .network_setup import network_for, parameter_groups
from .progress import BATCH_REPORT_SECONDS, listed, progress_bar, progress_line, tensorboard_writer

LOGGER = logging.getLogger("bids_sclesion.train")
CHECKPOINT = "checkpoint.pt"
#: Validation columns of training_log.csv (and TensorBoard scalars).
LOGGED = ("cord_dice", "lesion_dice", "lesion_f1", "lesion_f1_10pct", "false_positives")


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
    check_config(config, device)
    bids_dirs = [Path(bids_dir)] if isinstance(bids_dir, (str, Path)) else [Path(b) for b in bids_dir]
    dist = DistributedContext.from_environment(device)
    try:
        return Trainer(bids_dirs, Path(model_dir), config, network_config, cache_dir, device, progress, dist).run()
    finally:
        dist.close()


def validation_scores(network, cases_data, roi_size, device, cases=None, voxel_mm3: float = 1.0) -> dict[str, float]:
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
    return {f"val_{key}": float(summary[key]) for key in LOGGED}


def region_loss(loss_fn, logits: torch.Tensor, target: torch.Tensor, labelled_gm: torch.Tensor) -> torch.Tensor:
    """Cord and lesion loss, plus the grey matter loss on the samples that have a grey matter label."""
    n = len(OUTPUT_CHANNELS)
    loss = loss_fn(logits[:, :n], target[:, :n])
    if logits.shape[1] > n and bool(labelled_gm.any()):
        loss = loss + loss_fn(logits[labelled_gm, n:], target[labelled_gm, n:])
    return loss


class Trainer:
    """One training run. :meth:`run` calls the phases in order; each can be called alone in tests."""

    def __init__(self, bids_dirs: list[Path], model_dir: Path, config: TrainingConfig,
                 network_config: NetworkConfig | None = None, cache_dir: str | Path | None = None,
                 device: str = "cpu", progress: bool = True, dist: DistributedContext | None = None):
        self.bids_dirs, self.model_dir, self.config = bids_dirs, model_dir, config
        self.requested_network, self.device_name = network_config, device
        self.cache = Path(cache_dir) if cache_dir else model_dir / ".cache"
        self.dist = dist or DistributedContext()
        self.progress = progress and self.dist.is_main
        self.init = None
        self.best, self.best_state, self.best_metrics, self.first_it, self.stale = -1.0, None, {}, 1, 0

    # --- cases and split -------------------------------------------------------------------------------
    def load_initial_model(self) -> None:
        if self.config.init_from:
            from ..model.io import load_model

            self.init = load_model(self.config.init_from, "cpu")
        self.network_config = network_for(self.config, self.requested_network, self.init)

    def collect_cases(self) -> list[TrainingCase]:
        config, cases = self.config, []
        for i, bd in enumerate(self.bids_dirs):
            found = find_training_cases(bd, config.suffixes, cord_label=config.cord_label,
                                        lesion_label=config.lesion_label, require_lesion=config.require_lesion,
                                        dataset=i, filters=config.filters,
                                        participant_label=config.participant_label or None,
                                        grey_matter_label=config.grey_matter_label,
                                        fine_lesion_label=config.fine_lesion_label)
            if not found:
                lesion = '' if not config.require_lesion else ' and <stem>_' + config.lesion_label + '.nii.gz'
                raise ValueError(f"{bd}: no image of {list(config.suffixes)}"
                                 f"{' matching ' + json.dumps(config.filters) if config.filters else ''} with labels "
                                 f"<stem>_{config.cord_label}.nii.gz{lesion} in derivatives/labels")
            cases.extend(found)
        cases = [c for c in cases if c.subject not in set(config.exclude_subjects)]
        if not cases:
            raise ValueError("every image was excluded")
        if config.grey_matter_label and not any(c.grey_matter_path for c in cases):
            raise ValueError(f"no image has a grey matter label <stem>_{config.grey_matter_label}.nii.gz in "
                             "derivatives/labels")
        if config.fine_lesion_label and not any(c.fine_lesion_path for c in cases):
            raise ValueError(f"no image has a fine lesion map <stem>_{config.fine_lesion_label}.nii.gz in "
                             "derivatives/labels")
        self.cases = cases
        return cases

    def split(self) -> tuple[list[TrainingCase], list[TrainingCase]]:
        config = self.config
        seen_by_init = set(self.init.metadata.get("training", {}).get("subjects", [])) if self.init else set()
        train_cases, val_cases = split_by_subject(self.cases, config.val_fraction, config.seed, config.folds,
                                                  config.fold, seen_before=seen_by_init)
        self.train_cases, self.val_cases = limit_validation(train_cases, val_cases, config.val_max_images)
        seen_in_val = sorted({c.subject for c in self.val_cases} & seen_by_init)
        if seen_in_val:
            LOGGER.warning("validation subjects %s were in the training of %s: validation scores are biased towards "
                           "it (more subjects the pretrained model never saw would avoid this)",
                           " ".join(seen_in_val), config.init_from)
        LOGGER.info("%d training images (%d subjects), %d validation images", len(self.train_cases),
                    len({c.subject for c in self.train_cases}), len(self.val_cases))
        return self.train_cases, self.val_cases

    # --- data ------------------------------------------------------------------------------------------
    def prepare_data(self) -> None:
        """Preprocess (or read from the cache) every case; validation images get their tissue prior."""
        config, dist = self.config, self.dist
        t0 = time.time()
        # Process 0 fills the cache first; the others then read it (no two writers of one file).
        if not dist.is_main:
            dist.barrier()
        elif config.workers > 0:
            fill_cache(self.train_cases + self.val_cases, config.spacing_mm, self.cache, config.space, config.workers)
        self.train_data = [preprocess_case(c, config.spacing_mm, self.cache, config.space)
                           for c in listed(self.train_cases, self.progress, "preprocess")]
        self.val_data = ([preprocess_case(c, config.spacing_mm, self.cache, config.space) for c in self.val_cases]
                         if dist.is_main else [])
        if dist.is_main:
            dist.barrier()
        if self.uses_tissue_prior:  # validation images get the prior of their true cord
            from ..model.cascade import StraightSpace, with_tissue_prior

            self.val_data = [(with_tissue_prior(image, labels[0] > 0.5, StraightSpace()), labels)
                             for image, labels in self.val_data]
        self.by_dataset = [[k for k, c in enumerate(self.train_cases) if c.dataset == d]
                           for d in range(len(self.bids_dirs))]
        self.draw = draw_probabilities(sampling_weights(config, len(self.bids_dirs)),
                                       [len(ks) for ks in self.by_dataset])
        LOGGER.info("preprocessing took %.0f s", time.time() - t0)

    @property
    def uses_tissue_prior(self) -> bool:
        return self.network_config.in_channels > 1

    def batches(self) -> PatchBatches:
        from ..core.tissue_prior import load_template

        config = self.config
        return PatchBatches(self.train_data, self.by_dataset, self.draw, config.batch_size, config.patch_size,
                            self.network_config.out_channels, len(OUTPUT_CHANNELS), config.augmentation, config.seed,
                            self.dist.rank, prior=load_template() if self.uses_tissue_prior else None,
                            spacing_mm=tuple(straight_space_dict()["spacing_mm"]))

    # --- network and optimiser -------------------------------------------------------------------------
    def configure_network(self) -> torch.nn.Module:
        self.dev = self.dist.device(self.device_name)
        network = build_network(self.network_config)
        if self.init is not None:
            # New channels (a wider network, a grey matter output, prior inputs) start from scratch or zero;
            # the rest is the pretrained model.
            load_pretrained(network, self.init.network.state_dict(), pretrained=self.init.network)
        else:
            init_output_bias(network, (-2.0, -4.0, -2.0)[: self.network_config.out_channels])
        self.network = network.to(self.dev)
        return self.network

    def configure_optimiser(self) -> None:
        config = self.config
        groups, max_lrs = parameter_groups(self.network, config, pretrained=self.init is not None)
        self.optimizer = torch.optim.AdamW(groups, lr=config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(self.optimizer, max_lr=max_lrs,
                                                             total_steps=config.iterations, pct_start=0.05)
        self.loss_fn = DiceCELoss(sigmoid=True, batch=True, smooth_nr=1e-4, smooth_dr=1e-4,
                                  lambda_dice=config.dice_weight)
        # Mixed precision on a GPU (float16 with loss scaling); on a CPU bfloat16 only when asked, since it
        # changes the numbers (same exponent range as float32, so no loss scaling).
        self.use_amp = self.dev.type == "cuda"
        self.cpu_bf16 = self.dev.type == "cpu" and config.cpu_bf16
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_amp)

    def wrap_distributed(self) -> None:
        """Under ``torchrun``, gradients are averaged across processes (after a resume: all start alike)."""
        self.trained = self.network
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.trained = DistributedDataParallel(
                self.network, device_ids=[self.dist.local_rank] if self.dev.type == "cuda" else None)

    # --- checkpoint ------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.model_dir / CHECKPOINT

    def load_checkpoint(self) -> None:
        """Resume where ``--resume`` finds a checkpoint (planned for the same number of iterations)."""
        path, config = self.checkpoint_path, self.config
        if not config.resume:
            return
        if not path.exists():
            LOGGER.warning("--resume: no %s yet, starting from the beginning", path)
            return
        ckpt = torch.load(path, map_location=self.dev, weights_only=True)
        planned = int(ckpt["scheduler"].get("total_steps", config.iterations))
        if planned != config.iterations:
            raise ValueError(f"{path}: this run was planned for {planned} iterations, not "
                             f"{config.iterations}; resume with --iterations {planned}")
        self.network.load_state_dict(ckpt["network"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if self.dist.is_main:
            torch.set_rng_state(ckpt["torch_rng"])
        self.best, self.best_state, self.best_metrics = float(ckpt["best"]), ckpt["best_state"], dict(ckpt["best_metrics"])
        self.first_it, self.stale = int(ckpt["iteration"]) + 1, int(ckpt["stale"])
        LOGGER.info("resuming from %s at iteration %d", path, self.first_it)

    def save_checkpoint(self, iteration: int) -> None:
        """Everything needed to resume (plain tensors and numbers: loadable with weights_only=True)."""
        from ..utils.io import atomic_path

        state = {
            "network": self.network.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "iteration": int(iteration),
            "best": float(self.best),
            "best_state": self.best_state,
            "best_metrics": {k: float(v) for k, v in self.best_metrics.items()},
            "stale": int(self.stale),
        }
        with atomic_path(self.checkpoint_path) as tmp:
            torch.save(state, str(tmp))

    # --- step and validation ---------------------------------------------------------------------------
    def train_step(self, batch) -> float:
        x, y = batch.image.to(self.dev, non_blocking=True), batch.label.to(self.dev, non_blocking=True)
        with torch.autocast(self.dev.type, dtype=torch.float16 if self.use_amp else torch.bfloat16,
                            enabled=self.use_amp or self.cpu_bf16):
            logits = self.trained(x)
        loss = region_loss(self.loss_fn, logits.float(), y, batch.labelled_gm.to(self.dev))
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return loss.item()

    def validate(self, it: int, losses: list[float], elapsed: float) -> bool:
        """Score the validation images (process 0), keep the best state, log, checkpoint; True: stop early."""
        config = self.config
        metrics = (validation_scores(self.network, self.val_data, config.patch_size, self.dev, self.val_cases,
                                     voxel_mm3(config)) if self.val_data else {})
        score = monitored_score(metrics, config.monitor)
        if not self.val_data or score >= self.best:
            self.best = score
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.network.state_dict().items()}
            self.best_metrics = dict(metrics, iteration=it)
            self.stale = 0
        else:
            self.stale += 1
        self.log_writer.writerow([it, np.mean(losses), self.scheduler.get_last_lr()[0], round(elapsed, 1)]
                                 + [metrics.get(f"val_{k}") for k in LOGGED])
        self.log_file.flush()
        if self.board is not None:
            for key, value in metrics.items():
                self.board.add_scalar(f"validation/{key.removeprefix('val_')}", value, it)
            self.board.flush()
        message = (f"[train] it {it}/{config.iterations} loss {np.mean(losses):.4f} "
                   f"{json.dumps({k: round(v, 3) for k, v in metrics.items()})} {elapsed:.0f}s")
        if self.bar is not None:
            self.bar.write(message)
        elif self.progress:
            print(message, flush=True)
        self.save_checkpoint(it)
        stop = config.patience is not None and bool(self.val_data) and self.stale >= config.patience
        if stop:
            LOGGER.info("early stop at iteration %d: no better validation %s in %d checks", it, config.monitor,
                        self.stale)
        return stop

    # --- the run ---------------------------------------------------------------------------------------
    def setup(self) -> None:
        # Each process draws its own batches; one process reproduces a single-process run exactly.
        torch.manual_seed(self.config.seed + self.dist.rank)
        if self.config.threads:
            torch.set_num_threads(self.config.threads)
        self.load_initial_model()
        self.collect_cases()
        self.split()
        self.prepare_data()
        self.configure_network()
        self.configure_optimiser()
        self.model_dir.mkdir(parents=True, exist_ok=True)
        self.load_checkpoint()
        self.wrap_distributed()

    def _open_logs(self) -> None:
        log_path = self.model_dir / "training_log.csv"
        self.board = tensorboard_writer(self.model_dir) if self.config.tensorboard and self.dist.is_main else None
        resumed = self.first_it > 1 and log_path.exists()
        self.log_file = open(log_path, "a" if resumed else "w", newline="") if self.dist.is_main else None
        self.log_writer = csv.writer(self.log_file) if self.log_file else None
        if self.log_writer and not resumed:
            self.log_writer.writerow(["iteration", "loss", "lr", "seconds"] + [f"val_{k}" for k in LOGGED])
        self.bar = progress_bar(self.config.iterations, self.first_it - 1, self.progress)

    def _close_logs(self) -> None:
        for handle in (self.bar, self.log_file, self.board):
            if handle is not None:
                handle.close()

    def run(self) -> Path:
        self.setup()
        config, dist = self.config, self.dist
        self.network.train()
        self._open_logs()
        start, last_report, running, it = time.time(), 0.0, [], self.first_it - 1
        loader = batch_loader(self.batches(), self.first_it, config.iterations, config.workers,
                              pin_memory=self.dev.type == "cuda")
        try:
            for it, batch in zip(range(self.first_it, config.iterations + 1), loader):
                running.append(self.train_step(batch))
                elapsed = time.time() - start
                if self.bar is not None:
                    self.bar.update(1)
                    self.bar.set_postfix(loss=f"{running[-1]:.3f}", refresh=False)
                elif self.progress and elapsed - last_report >= BATCH_REPORT_SECONDS:
                    last_report = elapsed
                    print(progress_line(it, self.first_it, config.iterations, running, elapsed), flush=True)
                if self.board is not None:
                    self.board.add_scalar("train/loss", running[-1], it)
                    self.board.add_scalar("train/lr", self.scheduler.get_last_lr()[0], it)
                out_of_time = dist.any_true(config.max_minutes is not None and elapsed > config.max_minutes * 60,
                                            self.dev)
                stop = False
                if it % config.val_every == 0 or it == config.iterations or out_of_time:
                    stop = self.validate(it, running, elapsed) if dist.is_main else False
                    running = []
                    stop = dist.from_main(stop, self.dev)
                if out_of_time:
                    LOGGER.warning("stopping after %.1f min (--max-minutes)", elapsed / 60)
                    break
                if stop:
                    break
        finally:
            self._close_logs()
        return self.save(it, time.time() - start) if dist.is_main else self.model_dir

    def save(self, iterations_done: int, seconds: float) -> Path:
        """The best validated state as ``model.safetensors`` + ``model.json``."""
        if self.best_state is None:
            raise ValueError(f"{self.checkpoint_path}: training already finished at iteration {self.first_it - 1}; "
                             "raise --iterations to train further")
        self.network.load_state_dict(self.best_state)
        metadata = training_metadata(self.model_dir, self.config, self.network_config, self.bids_dirs, self.cases,
                                     self.train_cases, self.val_cases, self.init, world_size=self.dist.world_size,
                                     iterations_done=iterations_done, minutes=round(seconds / 60, 1),
                                     best_validation=self.best_metrics)
        save_model(self.network, metadata, self.model_dir)
        return self.model_dir
