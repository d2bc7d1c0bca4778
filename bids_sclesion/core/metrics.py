"""Segmentation metrics: voxel Dice and lesion-wise detection."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

#: 26-connectivity: diagonal neighbours belong to the same lesion.
CONNECTIVITY = np.ones((3, 3, 3), bool)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient; 1.0 when both masks are empty."""
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    denom = pred.sum() + truth.sum()
    if denom == 0:
        return 1.0
    return float(2.0 * np.logical_and(pred, truth).sum() / denom)


@dataclass
class LesionDetection:
    true_lesions: int
    detected: int
    predicted_lesions: int
    false_positives: int

    @property
    def tpr(self) -> float:
        return self.detected / self.true_lesions if self.true_lesions else float("nan")

    @property
    def ppv(self) -> float:
        if self.predicted_lesions == 0:
            return float("nan")
        return (self.predicted_lesions - self.false_positives) / self.predicted_lesions

    @property
    def f1(self) -> float:
        return f1_score(self.detected, self.true_lesions, self.predicted_lesions - self.false_positives, self.predicted_lesions)


def f1_score(detected: int, n_true: int, true_predicted: int, n_pred: int) -> float:
    """Lesion-wise F1 from sensitivity (detected/true) and precision (true_pred/pred)."""
    if n_true == 0 and n_pred == 0:
        return 1.0
    if n_true == 0 or n_pred == 0:
        return 0.0
    tpr, ppv = detected / n_true, true_predicted / n_pred
    return 0.0 if tpr + ppv == 0 else 2 * tpr * ppv / (tpr + ppv)


def lesion_detection(pred: np.ndarray, truth: np.ndarray, min_overlap: float = 0.0) -> LesionDetection:
    """Lesion-wise counts.

    A true lesion is detected when predicted voxels cover more than
    ``min_overlap`` of it (0: any overlap; 0.1: the 10 % rule). A predicted
    component is a false positive when it touches no true lesion.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    true_lab, n_true = ndimage.label(truth, CONNECTIVITY)
    pred_lab, n_pred = ndimage.label(pred, CONNECTIVITY)
    detected = 0
    if n_true:
        sizes = np.bincount(true_lab.ravel(), minlength=n_true + 1)
        covered = np.bincount(true_lab[pred].ravel(), minlength=n_true + 1)
        frac = covered[1:] / np.maximum(sizes[1:], 1)
        detected = int(np.sum((covered[1:] > 0) & (frac >= min_overlap)))
    false_pos = 0
    if n_pred:
        touched = np.bincount(pred_lab[truth].ravel(), minlength=n_pred + 1)
        false_pos = int(np.sum(touched[1:] == 0))
    return LesionDetection(n_true, detected, n_pred, false_pos)
