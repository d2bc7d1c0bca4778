"""Segmentation network: definition, bundled weights, inference and training."""
