"""Training cases found in BIDS datasets, and their split by subject."""
from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Sequence

import numpy as np

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


def limit_validation(train_cases: list[TrainingCase], val_cases: list[TrainingCase],
                     max_images: int) -> tuple[list[TrainingCase], list[TrainingCase]]:
    """Keep at most ``max_images`` validation images, covering as many contrasts as possible.

    Subjects none of whose images are kept go back to training (they would
    otherwise be neither trained nor validated on); a subject with a kept
    image stays out of training entirely, so the split remains by subject.
    """
    kept = interleave_contrasts(val_cases)[:max_images]
    validating = {c.subject for c in kept}
    returned = [c for c in val_cases if c.subject not in validating]
    if returned:
        LOGGER.info("validation limited to %d images: %d subjects go back to training", len(kept),
                    len({c.subject for c in returned}))
    return train_cases + returned, kept


def interleave_contrasts(cases: list[TrainingCase]) -> list[TrainingCase]:
    """Order cases so that any prefix covers as many contrasts as possible."""
    by_suffix: dict[str, list[TrainingCase]] = {}
    for case in cases:
        by_suffix.setdefault(case.suffix, []).append(case)
    out = []
    for i in range(max((len(v) for v in by_suffix.values()), default=0)):
        out.extend(v[i] for _, v in sorted(by_suffix.items()) if i < len(v))
    return out
