"""Placement, size, shape and intensity rules of the lesions inserted into real cords."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from bids_sclesion.phantoms.insert import insert_lesions
from bids_sclesion.phantoms.lesion_shape import (COLUMN_WEIGHTS, LENGTH_RANGE_MM, LESION_CONTRAST,
                                                 draw_lesion_geometry, lesion_level)


def test_drawn_lesions_follow_the_published_pattern():
    rng = np.random.default_rng(0)
    geoms = [draw_lesion_geometry(rng, 6.0, 4.0, "T2w") for _ in range(2000)]
    share = {c: np.mean([g.column == c for g in geoms]) for c in COLUMN_WEIGHTS}
    assert share["lateral"] + share["dorsal"] > 0.8, share
    assert share["ventral"] == pytest.approx(COLUMN_WEIGHTS["ventral"], abs=0.03)
    lengths = np.array([2 * g.half_length_mm for g in geoms])
    assert lengths.min() >= LENGTH_RANGE_MM[0] and lengths.max() <= LENGTH_RANGE_MM[1]
    assert np.median(lengths) < 12, "short lesions are the most frequent"
    assert np.mean([g.touches_surface for g in geoms]) > 0.6
    assert {g.shape for g in geoms} == {"oval", "wedge"}
    # Oval: pi a b; wedge: a triangle of half-width x depth; both under half the cord's cross-section.
    areas = [np.pi * g.half_width_mm * g.half_depth_mm if g.shape == "oval" else g.half_width_mm * g.half_depth_mm
             for g in geoms]
    assert max(areas) < 0.5 * np.pi * 6.0 * 4.0


@pytest.mark.parametrize("suffix", sorted(LESION_CONTRAST))
def test_contrast_has_the_sign_of_the_contrast(suffix):
    rng = np.random.default_rng(1)
    lo, hi = LESION_CONTRAST[suffix]
    values = [draw_lesion_geometry(rng, 6.0, 4.0, suffix).contrast for _ in range(200)]
    assert lo <= min(values) and max(values) <= hi
    assert np.sign(lo) == np.sign(hi) != 0


def test_wedge_widens_towards_the_surface():
    rng = np.random.default_rng(2)
    geom = next(g for g in (draw_lesion_geometry(rng, 6.0, 4.0, "STIR") for _ in range(100)) if g.shape == "wedge")
    apex, surface = geom.centre_mm, geom.centre_mm + geom.half_depth_mm
    depth = surface - apex

    def width_at(radial):
        across = np.linspace(-10, 10, 2001)
        inside = lesion_level(np.zeros_like(across), across, np.full_like(across, radial), geom) <= 1.0
        return inside.sum() * (across[1] - across[0])

    assert width_at(apex + 0.25 * depth) < width_at(apex + 0.75 * depth) < width_at(surface) + 1e-9
    assert lesion_level(np.zeros(1), np.zeros(1), np.array([apex - 2.0]), geom)[0] > 1.0, "nothing inside the apex"


@pytest.fixture
def straight_cord():
    """A straight elliptic cord along z (1 mm voxels) with a grey matter core brighter than its white matter."""
    shape = (40, 40, 60)
    x, y, _ = np.meshgrid(*[np.arange(n, dtype=float) - (n - 1) / 2 for n in shape], indexing="ij")
    cord = (x / 6.0) ** 2 + (y / 4.5) ** 2 <= 1.0
    grey_matter = ((x / 2.5) ** 2 + (y / 2.0) ** 2 <= 1.0) & cord
    image = np.where(cord, 100.0, 300.0).astype(np.float32)
    image[grey_matter] = 150.0
    affine = np.eye(4)
    affine[:3, 3] = -(np.array(shape) - 1) / 2
    return image, affine, cord, grey_matter


@pytest.mark.parametrize("suffix", ["T2starw", "PSIR"])
def test_inserted_lesions_keep_the_rules_in_the_image(straight_cord, suffix):
    image, affine, cord, grey_matter = straight_cord
    lo, hi = LESION_CONTRAST[suffix]
    touching, count = 0, 0
    for seed in range(6):
        drawn = []
        out, lesions = insert_lesions(image, affine, cord, suffix, np.random.default_rng(seed), n_lesions=3,
                                      grey_matter=grey_matter, drawn=drawn)
        assert not np.any(lesions & ~cord) and np.array_equal(out[~cord], image[~cord])
        labels, n = ndimage.label(lesions)
        assert n == len(drawn) >= 1
        for k in range(1, n + 1):
            lesion = labels == k
            count += 1
            touching += bool((ndimage.binary_dilation(lesion) & ~cord).any())
            # Less than half of any cross-section (soft edges may add a few voxels).
            per_slice = lesion.sum(axis=(0, 1)) / cord.sum(axis=(0, 1))
            assert per_slice.max() <= 0.55
            # Intensity against the white matter (100), not against the grey matter it may lie on (150).
            core = ndimage.binary_erosion(lesion) if ndimage.binary_erosion(lesion).any() else lesion
            ratio = np.median(out[core]) / 100.0 - 1.0
            # (the intensity spreads by up to 50 % inside a lesion; small lesions are partial-volumed)
            weakest, strongest = sorted((abs(lo), abs(hi)))
            assert np.sign(ratio) == np.sign(lo) and 0.4 * weakest <= abs(ratio) <= 1.5 * strongest, ratio
    assert touching / count >= 0.5, "most lesions reach the cord surface"
