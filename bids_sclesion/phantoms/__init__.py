"""Synthetic spinal cord MRI phantoms with known cord and lesion ground truth."""
from .anatomy import Anatomy, Lesion, Tissue, random_anatomy, random_lesions, evolve_lesions
from .acquisition import CONTRASTS, Acquisition, random_acquisition, render_image
from .dataset import generate_dataset

__all__ = [
    "Anatomy", "Lesion", "Tissue", "random_anatomy", "random_lesions", "evolve_lesions",
    "CONTRASTS", "Acquisition", "random_acquisition", "render_image", "generate_dataset",
]
