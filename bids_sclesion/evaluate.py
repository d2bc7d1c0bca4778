"""Compare the app's derivatives with ground-truth labels (per image and per contrast)."""
from __future__ import annotations

from dataclasses import dataclass, asdict
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from .core.image import voxel_volume
from .core.metrics import CONNECTIVITY, dice, f1_score, lesion_detection
from .derivatives import SourceName, source_of_lesion_table


@dataclass
class ImageScore:
    image: str
    suffix: str
    cord_dice: float
    lesion_dice: float  # nan when neither truth nor prediction has a lesion
    true_lesions: int
    detected: int
    detected_10pct: int
    predicted_lesions: int
    false_positives: int
    true_volume_mm3: float
    predicted_volume_mm3: float

    @property
    def abs_volume_diff_mm3(self) -> float:
        return abs(self.predicted_volume_mm3 - self.true_volume_mm3)

    @property
    def rel_volume_diff(self) -> float:
        """(predicted - true) / true lesion volume; nan without a true lesion."""
        if self.true_volume_mm3 <= 0:
            return float("nan")
        return (self.predicted_volume_mm3 - self.true_volume_mm3) / self.true_volume_mm3


def score_image(source: Path, bids_dir: Path, out_dir: Path, labels_dir: Path, lesion_label: str = "lesion-manual",
                cord_label: str = "seg-manual") -> ImageScore:
    """Score the app's masks for ``source`` against ``<stem>_<label>.nii.gz`` in ``labels_dir``."""
    name = SourceName(source, bids_dir)
    outputs = name.outputs(out_dir)
    stem = source.name.split(".")[0]
    gt_dir = labels_dir / Path(name.relpath).parent
    truth_les_img = nib.load(str(gt_dir / f"{stem}_{lesion_label}.nii.gz"))
    truth_les = np.asarray(truth_les_img.dataobj) > 0.5
    cord_path = gt_dir / f"{stem}_{cord_label}.nii.gz"
    truth_cord = np.asarray(nib.load(str(cord_path)).dataobj) > 0.5 if cord_path.exists() else None
    pred_les = np.asarray(nib.load(str(outputs["lesion_mask"])).dataobj) > 0
    pred_cord = np.asarray(nib.load(str(outputs["cord_mask"])).dataobj) > 0
    vox = voxel_volume(truth_les_img.affine)
    return score_arrays(source.name, name.suffix, pred_cord, pred_les, truth_cord, truth_les, vox)


def score_arrays(image: str, suffix: str, pred_cord: np.ndarray, pred_les: np.ndarray,
                 truth_cord: np.ndarray | None, truth_les: np.ndarray, voxel_mm3: float) -> ImageScore:
    """Scores of one image from boolean masks on one grid (used by the evaluation and the training's validation)."""
    det = lesion_detection(pred_les, truth_les)
    det10 = lesion_detection(pred_les, truth_les, min_overlap=0.1)
    return ImageScore(
        image=image,
        suffix=suffix,
        cord_dice=dice(pred_cord, truth_cord) if truth_cord is not None else float("nan"),
        lesion_dice=dice(pred_les, truth_les) if (truth_les.any() or pred_les.any()) else float("nan"),
        true_lesions=det.true_lesions,
        detected=det.detected,
        detected_10pct=det10.detected,
        predicted_lesions=det.predicted_lesions,
        false_positives=det.false_positives,
        true_volume_mm3=float(truth_les.sum() * voxel_mm3),
        predicted_volume_mm3=float(pred_les.sum() * voxel_mm3),
    )


def aggregate(scores: list[ImageScore]) -> dict[str, float]:
    """Mean Dice over images (lesion Dice over images with a true lesion) and pooled lesion-wise F1."""
    with_lesion = [s.lesion_dice for s in scores if s.true_lesions > 0]
    true = sum(s.true_lesions for s in scores)
    det = sum(s.detected for s in scores)
    pred = sum(s.predicted_lesions for s in scores)
    tp_pred = pred - sum(s.false_positives for s in scores)
    cord = [s.cord_dice for s in scores if np.isfinite(s.cord_dice)]
    rel = [s.rel_volume_diff for s in scores if np.isfinite(s.rel_volume_diff)]
    return {
        "images": len(scores),
        "cord_dice": float(np.mean(cord)) if cord else float("nan"),
        "abs_volume_diff_mm3": float(np.mean([s.abs_volume_diff_mm3 for s in scores])) if scores else float("nan"),
        "rel_volume_diff": float(np.mean(rel)) if rel else float("nan"),
        "lesion_dice": float(np.mean(with_lesion)) if with_lesion else float("nan"),
        "lesion_tpr": det / true if true else float("nan"),
        "lesion_ppv": tp_pred / pred if pred else float("nan"),
        "lesion_f1": f1_score(det, true, tp_pred, pred),
        "lesion_f1_10pct": f1_score(sum(s.detected_10pct for s in scores), true, tp_pred, pred),
        "true_lesions": true,
        "false_positives": pred - tp_pred,
    }


def evaluate_outputs(bids_dir: Path, out_dir: Path, labels_dir: Path | None = None) -> tuple[list[ImageScore], dict]:
    """Score every image of ``out_dir`` that has ground truth; returns per-image rows and per-contrast summaries."""
    bids_dir = Path(bids_dir)
    labels_dir = Path(labels_dir) if labels_dir else bids_dir / "derivatives" / "labels"
    return _score_outputs(Path(out_dir), labels_dir, bids_dir=bids_dir)


def evaluate_predictions(pred_dir: Path, labels_dir: Path, lesion_label: str = "lesion-manual",
                         cord_label: str = "seg-manual") -> tuple[list[ImageScore], dict]:
    """Score every image of ``pred_dir`` (the app's output folder) that has a
    ``<stem>_<lesion_label>`` file at the same relative place in ``labels_dir``.

    Needs no raw dataset: the source name comes from each lesion table's name.
    """
    return _score_outputs(Path(pred_dir), Path(labels_dir), lesion_label, cord_label)


def _score_outputs(out_dir: Path, labels_dir: Path, lesion_label: str = "lesion-manual",
                   cord_label: str = "seg-manual", bids_dir: Path | None = None) -> tuple[list[ImageScore], dict]:
    """Score the images behind the lesion tables of ``out_dir`` that have a lesion label
    (and, with ``bids_dir``, whose source image is there)."""
    root = bids_dir if bids_dir is not None else labels_dir
    scores = []
    for table in sorted(out_dir.glob("sub-*/**/anat/*_lesions.tsv")):
        relpath = Path(source_of_lesion_table(table, out_dir).relpath)
        truth = labels_dir / relpath.parent / relpath.name.replace(".nii.gz", f"_{lesion_label}.nii.gz")
        if truth.exists() and (bids_dir is None or (bids_dir / relpath).exists()):
            scores.append(score_image(root / relpath, root, out_dir, labels_dir, lesion_label, cord_label))
    return scores, summarise_by_contrast(scores)


@dataclass
class HealthyScore:
    """False lesions on a cord without lesions, and the cord's Dice where a manual cord exists."""

    image: str
    suffix: str
    cord_dice: float  # nan without a manual cord
    false_lesions: int
    false_volume_mm3: float
    in_grey_matter_mm3: float  # false-lesion volume inside the grey matter; nan without a grey matter mask
    largest_in_grey_matter_mm3: float  # the largest part of one false lesion inside the grey matter; nan without one


def score_healthy_arrays(image: str, suffix: str, pred_cord: np.ndarray, pred_les: np.ndarray,
                         truth_cord: np.ndarray | None, grey_matter: np.ndarray | None,
                         voxel_mm3: float) -> HealthyScore:
    """Every predicted lesion component of a lesion-free image is a false lesion."""
    labels, n = ndimage.label(np.asarray(pred_les, bool), CONNECTIVITY)
    in_gm = largest_gm = float("nan")
    if grey_matter is not None:
        gm = np.asarray(grey_matter, bool)
        per_lesion = np.bincount(labels[gm].ravel(), minlength=n + 1)[1:]
        in_gm = float(per_lesion.sum() * voxel_mm3)
        largest_gm = float(per_lesion.max() * voxel_mm3) if n else 0.0
    return HealthyScore(
        image=image, suffix=suffix,
        cord_dice=dice(pred_cord, truth_cord) if truth_cord is not None else float("nan"),
        false_lesions=int(n), false_volume_mm3=float((labels > 0).sum() * voxel_mm3),
        in_grey_matter_mm3=in_gm, largest_in_grey_matter_mm3=largest_gm,
    )


def summarise_healthy(scores: list[HealthyScore]) -> dict[str, dict]:
    """Per image suffix and under ``"all"``: false lesions per image, their volume, the grey matter's
    share of it (images with a grey matter mask), and cord Dice (images with a manual cord)."""

    def one(rows: list[HealthyScore]) -> dict:
        cord = [r.cord_dice for r in rows if np.isfinite(r.cord_dice)]
        with_gm = [r for r in rows if np.isfinite(r.in_grey_matter_mm3)]
        gm_false = sum(r.false_volume_mm3 for r in with_gm)
        return {
            "images": len(rows),
            "false_lesions_per_image": float(np.mean([r.false_lesions for r in rows])) if rows else float("nan"),
            "false_volume_per_image_mm3": float(np.mean([r.false_volume_mm3 for r in rows])) if rows else float("nan"),
            "images_with_grey_matter": len(with_gm),
            "grey_matter_share": (sum(r.in_grey_matter_mm3 for r in with_gm) / gm_false) if gm_false else float("nan"),
            "largest_in_grey_matter_mm3": max((r.largest_in_grey_matter_mm3 for r in with_gm), default=float("nan")),
            "images_with_cord": len(cord),
            "cord_dice": float(np.mean(cord)) if cord else float("nan"),
            "cord_dice_min": float(np.min(cord)) if cord else float("nan"),
        }

    summary = {suffix: one([s for s in scores if s.suffix == suffix]) for suffix in sorted({s.suffix for s in scores})}
    summary["all"] = one(scores)
    return summary


def summarise_by_contrast(scores: list[ImageScore]) -> dict[str, dict]:
    """:func:`aggregate` per image suffix, and over all images under ``"all"``."""
    summary = {suffix: aggregate([s for s in scores if s.suffix == suffix])
               for suffix in sorted({s.suffix for s in scores})}
    summary["all"] = aggregate(scores)
    return summary


def format_summary(summary: dict) -> str:
    cols = ["images", "cord_dice", "lesion_dice", "lesion_tpr", "lesion_ppv", "lesion_f1", "lesion_f1_10pct",
            "true_lesions", "false_positives", "abs_volume_diff_mm3", "rel_volume_diff"]
    lines = ["| contrast | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 1)]
    for key, row in summary.items():
        cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in cols]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scores_to_tsv(scores: list[ImageScore]) -> str:
    cols = list(ImageScore.__dataclass_fields__) + ["abs_volume_diff_mm3", "rel_volume_diff"]
    rows = ["\t".join(cols)]
    for s in scores:
        d = asdict(s)
        d.update(abs_volume_diff_mm3=s.abs_volume_diff_mm3, rel_volume_diff=s.rel_volume_diff)
        rows.append("\t".join(f"{d[c]:.4f}" if isinstance(d[c], float) else str(d[c]) for c in cols))
    return "\n".join(rows) + "\n"


def dice_in_labelled_slices(pred: np.ndarray, truth: np.ndarray, affine: np.ndarray) -> float:
    """Dice restricted to the slices (across the cord's main axis) that hold manual labels.

    Manual cord masks often stop before the image does (the top or bottom
    slices are left unlabelled); outside them a prediction cannot be scored.
    """
    from .core.centerline import _slice_axis

    idx = np.argwhere(truth)
    if len(idx) == 0:
        return float("nan")
    axis = _slice_axis(affine, idx @ affine[:3, :3].T + affine[:3, 3])
    labelled = np.zeros(truth.shape[axis], bool)
    labelled[np.unique(idx[:, axis])] = True
    shape = [1, 1, 1]
    shape[axis] = -1
    keep = labelled.reshape(shape)
    return dice(pred & keep, truth)
