"""Cord cross-sectional area: against the phantoms' analytic cross-section and a tilted cylinder."""
from __future__ import annotations

import numpy as np
import pytest

from bids_sclesion.core.morphometry import cord_csa, csa_by_level, mean_csa, slicing
from bids_sclesion.phantoms import random_anatomy


@pytest.mark.parametrize("seed,voxel_mm", [(0, 0.5), (1, 1.0), (2, 0.8)])
def test_phantom_csa_matches_the_drawn_ellipse(seed, voxel_mm):
    """The phantom cord's cross-section perpendicular to its centreline is pi * r_lr * r_ap."""
    anatomy = random_anatomy(np.random.default_rng(seed), brainstem=False)
    xs, zs = np.arange(-20, 20, voxel_mm), np.arange(-60, 100, voxel_mm)
    _, cy = anatomy.centerline(zs)
    ys = np.arange(cy.min() - 15, cy.max() + 15, voxel_mm)
    _, cord, _ = anatomy.render(xs, ys, zs)
    affine = np.diag([voxel_mm] * 3 + [1.0])
    affine[:3, 3] = xs[0], ys[0], zs[0]
    rows = cord_csa(cord, affine)[10:-10]  # the ends of the mask are cut by the grid
    z = np.array([r.centroid_z_mm for r in rows])
    rx, ry = anatomy.cord_radii(z)
    error = (np.array([r.csa_mm2 for r in rows]) - np.pi * rx * ry) / (np.pi * rx * ry)
    assert abs(error.mean()) < 0.01, error.mean()
    assert np.median(np.abs(error)) < 0.02


@pytest.mark.parametrize("tilt_deg", [0.0, 20.0, 35.0])
def test_tilted_cylinder_area_is_corrected_for_its_angle(tilt_deg):
    radius, voxel = 4.0, 0.4
    axis = np.array([0.0, np.sin(np.radians(tilt_deg)), np.cos(np.radians(tilt_deg))])
    grid = np.stack(np.meshgrid(*(np.arange(-30, 30, voxel),) * 3, indexing="ij"), axis=-1)
    along = grid @ axis
    distance = np.linalg.norm(grid - along[..., None] * axis, axis=-1)
    cord = distance <= radius
    affine = np.diag([voxel] * 3 + [1.0])
    affine[:3, 3] = -30
    rows = [r for r in cord_csa(cord, affine) if abs(r.centroid_z_mm) < 12]
    csa = np.array([r.csa_mm2 for r in rows])
    assert abs(csa.mean() / (np.pi * radius**2) - 1) < 0.02, csa.mean()
    assert abs(np.mean([r.angle_deg for r in rows]) - tilt_deg) < 1.5
    # uncorrected, a tilted slice overestimates by 1 / cos(tilt)
    raw = np.mean([r.slice_area_mm2 for r in rows])
    assert abs(raw / (np.pi * radius**2) - 1 / np.cos(np.radians(tilt_deg))) < 0.03


@pytest.mark.parametrize("centre_x", [0.0, 0.75, 1.5])
def test_partial_volume_weights_follow_the_cross_section_on_thick_slices(centre_x):
    """On 3 mm sagittal-like slices a binary mask counts a voxel half in the cord as all or nothing; the
    share of each voxel inside the cord (as a cord probability would give it) sums to the true area."""
    radius, size = 5.5, np.array([3.0, 0.5, 1.0])
    shape = (12, 40, 20)
    origin = -np.array(shape) * size / 2
    sub = (np.arange(10) + 0.5) / 10  # 10 x 10 samples per voxel face across the cord
    ix, iy = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    x = origin[0] + (ix[..., None, None] + sub[:, None]) * size[0] - centre_x
    y = origin[1] + (iy[..., None, None] + sub[None, :]) * size[1]
    share = np.mean(x**2 + y**2 <= radius**2, axis=(2, 3))
    weights = np.repeat(share[:, :, None], shape[2], axis=2)
    affine = np.diag(list(size) + [1.0])
    affine[:3, 3] = origin
    region = weights > 0
    truth = np.pi * radius**2
    soft = np.array([r.csa_mm2 for r in cord_csa(region, affine, weights=weights)])
    assert np.all(np.abs(soft / truth - 1) < 0.01), soft
    ones = cord_csa(weights >= 0.5, affine, weights=np.ones(shape))
    assert [r.csa_mm2 for r in ones] == [r.csa_mm2 for r in cord_csa(weights >= 0.5, affine)]


def test_levels_summarise_the_slices_they_hold():
    cord = np.zeros((20, 20, 60), bool)
    cord[7:13, 8:12, 5:55] = True  # 6 x 4 mm rectangle: 24 mm2
    levels = np.zeros(cord.shape, np.uint8)
    levels[:, :, 35:55] = 2
    levels[:, :, 15:35] = 3
    affine = np.eye(4)
    rows = cord_csa(cord, affine, levels=levels)
    assert {r.vertebral_level for r in rows} == {"C2", "C3", "n/a"}
    assert all(r.csa_mm2 == pytest.approx(24.0, rel=0.01) for r in rows)
    by_level = csa_by_level(rows, slicing(cord, affine)[3])
    assert [r["vertebral_level"] for r in by_level] == ["C2", "C3"]
    assert by_level[0]["n_slices"] == 20 and by_level[0]["cord_volume_mm3"] == pytest.approx(480.0, rel=0.01)
    assert mean_csa((r.vertebral_level, r.csa_mm2) for r in rows) == pytest.approx(24.0, rel=0.01)
    assert mean_csa((r.vertebral_level, r.csa_mm2) for r in cord_csa(cord, affine)) == "n/a", \
        "no level map: no C2-C3 figure"


def test_empty_mask_has_no_slices():
    assert cord_csa(np.zeros((5, 5, 5), bool), np.eye(4)) == []


def test_an_image_without_levels_is_named_in_a_warning(tmp_path, capsys):
    """The participant summary names each processed image that got no vertebral level, and why."""
    import json

    from bids_sclesion.cli.summary import _level_warnings

    bids, out = tmp_path / "bids", tmp_path / "out"
    source = bids / "sub-01" / "anat" / "sub-01_T2starw.nii.gz"
    source.parent.mkdir(parents=True)
    source.write_bytes(b"")
    sidecar = out / "sub-01" / "anat" / "sub-01_space-orig_seg-vertebral_desc-T2starw_dseg.json"
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text(json.dumps({"VertebralLabelling": {"Method": "none", "Reason": "only 50 mm of the spine"}}))
    _level_warnings([source], bids, out)
    printed = capsys.readouterr().out
    assert "WARNING: sub-01_T2starw.nii.gz: no vertebral level (only 50 mm of the spine)" in printed
    sidecar.write_text(json.dumps({"VertebralLabelling": {"Method": "template", "Correlation": 0.6}}))
    _level_warnings([source], bids, out)
    assert capsys.readouterr().out == ""
