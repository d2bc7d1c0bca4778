"""Numerical core: geometry, intensity, post-processing and metrics (no Nipype)."""
