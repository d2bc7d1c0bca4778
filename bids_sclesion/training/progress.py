"""Progress of a training run: a live bar on a terminal, lines in batch logs, TensorBoard scalars."""
from __future__ import annotations

from pathlib import Path

import numpy as np


#: Without a terminal (SLURM logs, nohup), a progress line this often between validations.
BATCH_REPORT_SECONDS = 300.0


def progress_line(it: int, first_it: int, total: int, losses: list[float], elapsed: float) -> str:
    """``[train] it 800/4000 loss 0.4123, 2.10 it/s, about 25 min left`` (speed of this process's run)."""
    rate = (it - first_it + 1) / max(elapsed, 1e-9)
    return (f"[train] it {it}/{total} loss {np.mean(losses):.4f}, {rate:.2f} it/s, "
            f"about {(total - it) / rate / 60:.0f} min left")


def progress_bar(total: int, done: int, enabled: bool):
    """A live progress bar on a terminal; None elsewhere (batch logs get a line every BATCH_REPORT_SECONDS
    and one per validation)."""
    import sys

    if not enabled or not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="it", desc="training", dynamic_ncols=True)


def tensorboard_writer(model_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ValueError("--tensorboard needs the tensorboard package: pip install tensorboard") from exc
    return SummaryWriter(log_dir=str(model_dir / "tensorboard"))


def listed(items, enabled: bool, label: str):
    for i, item in enumerate(items, 1):
        if enabled:
            print(f"[{label}] {i}/{len(items)} {getattr(item, 'image_path', '')}", flush=True)
        yield item
