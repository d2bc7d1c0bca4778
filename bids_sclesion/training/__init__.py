"""Training and fine-tuning of the segmentation networks on BIDS datasets (``bids_sclesion-train``).

Modules: ``cases`` (images with labels, split by subject), ``cache`` (preprocessed cases on disk),
``batches`` and ``transforms`` (patches and augmentation), ``network_setup`` (the network a run starts
from, optimiser groups), ``distributed`` (``torchrun``), ``trainer`` (the run, one method per phase),
``metadata`` (the ``model.json`` it writes), ``config`` (its settings).
"""
from .cases import TrainingCase, find_training_cases, split_by_subject
from .config import TrainingConfig
from .trainer import Trainer, train

__all__ = ["Trainer", "TrainingCase", "TrainingConfig", "find_training_cases", "split_by_subject", "train"]
