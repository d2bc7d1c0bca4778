"""The settings of one participant-level run, built once from the command line and handed to the workflows.

Frozen: no step can change them halfway. ``RunSettings.to_dict`` is what ``logs/config-<time>.toml`` records
beside the outputs (with the environment and the models' identities, ``provenance.write_run_logs``).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from types import MappingProxyType
from typing import Mapping

from .core.lesions import DEFAULT_GROW_THRESHOLD, DEFAULT_MIN_LESION_MM3, DEFAULT_THRESHOLD
#: Bundled models the cascade uses unless told otherwise. Stage 1 is the 2 mm model since it did better on the
#: real-anatomy benchmark than the 1 mm ``stage1`` (docs/real_anatomy.md); ``--model stage1`` keeps the 1 mm one.
DEFAULT_STAGE1, DEFAULT_STAGE2 = "stage1_2mm", "stage2"
#: Whole-image model that segments the image again where the default stage 1 finds no plausible spinal cord
#: (``--stage1-fallback``): the 2 mm model found none on a held-out 3D T1w where the 1 mm one found a cord
#: (docs/real_anatomy.md). None: no second try.
DEFAULT_STAGE1_FALLBACK: str | None = "stage1"
#: Coarse model that boxes the cord before the whole-image model runs (``--cord-locator``); None: no box.
DEFAULT_LOCATOR: str | None = None
CORD_FUSIONS = ("mean", "stage2")
#: Where stage 1's test-time flips run: ``unsure``, only in the sliding windows where its plain pass reaches
#: ``FLIP_ABOVE`` in some output (the cord's neighbourhood); ``all``, in every window (4.x's results); ``none``:
#: the plain pass alone.
STAGE1_FLIPS = ("unsure", "all", "none")
FLIP_ABOVE = 0.1
#: What the networks compute in. ``auto``: half precision where the hardware computes it natively (float16 on a CUDA
#: GPU, bfloat16 on a CPU with AMX or AVX512-BF16), float32 elsewhere; ``float32``: the same result on every CPU.
PRECISIONS = ("auto", "float32")


@dataclass(frozen=True)
class SegmentationSettings:
    """What decides each image's segmentation: the models and the post-processing."""

    model: str = DEFAULT_STAGE1  # whole-image model (stage 1 of the cascade, or the only one)
    model_hash: str = ""  # SHA-256 prefix of its weights: a changed model recomputes the cached steps
    locator: str | None = DEFAULT_LOCATOR  # coarse whole-image model that boxes the cord for ``model``; None: no box
    locator_hash: str = ""
    fallback: str | None = DEFAULT_STAGE1_FALLBACK  # whole-image model tried where ``model``'s cord is implausible
    fallback_hash: str = ""
    stage1_flips: str = "unsure"  # one of STAGE1_FLIPS
    stage2_model: str | None = DEFAULT_STAGE2  # None: the whole-image model alone
    stage2_model_hash: str = ""
    threshold: float = DEFAULT_THRESHOLD
    min_lesion_mm3: float = DEFAULT_MIN_LESION_MM3
    grow_threshold: float = DEFAULT_GROW_THRESHOLD  # lesions grow down to this probability; == threshold: no growth
    cord_fusion: str = "mean"  # "mean" of both stages' cord probabilities, or "stage2" alone
    tta: bool = False  # stage-2 predictions on flipped copies too (uncertainty)
    device: str = "auto"
    precision: str = "auto"  # one of PRECISIONS
    omp_nthreads: int = 1

    def __post_init__(self):
        if not 0.0 < self.grow_threshold <= self.threshold:
            raise ValueError(f"the grow threshold ({self.grow_threshold}) must be above 0 and at most the "
                             f"threshold ({self.threshold})")
        if self.cord_fusion not in CORD_FUSIONS:
            raise ValueError(f"cord_fusion must be one of {CORD_FUSIONS}, not {self.cord_fusion!r}")
        if self.stage1_flips not in STAGE1_FLIPS:
            raise ValueError(f"stage1_flips must be one of {STAGE1_FLIPS}, not {self.stage1_flips!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.tta and not self.stage2_model:
            raise ValueError("--tta works on the cascade's stage 2: it cannot be combined with --single-stage")

    @property
    def cascade(self) -> bool:
        return bool(self.stage2_model)


@dataclass(frozen=True)
class RunSettings:
    """One participant-level run: where it reads and writes, and how every image is segmented."""

    bids_dir: str
    output_dir: str
    work_dir: str
    segmentation: SegmentationSettings = field(default_factory=SegmentationSettings)
    provenance: str = ""  # JSON of the models and settings, copied into every sidecar
    disc_labels: Mapping[str, str] = field(default_factory=dict)  # image -> the user's disc labels

    def __post_init__(self):
        object.__setattr__(self, "disc_labels", MappingProxyType(dict(self.disc_labels)))

    def to_dict(self) -> dict:
        out = {"bids_dir": self.bids_dir, "output_dir": self.output_dir, "work_dir": self.work_dir,
               "segmentation": {k: v for k, v in asdict(self.segmentation).items() if v is not None}}
        if self.disc_labels:
            out["disc_labels"] = dict(self.disc_labels)
        return out
