"""Centreline and straightening core (numpy/scipy) on a curved synthetic cord."""
import nibabel as nib
import numpy as np
import pytest

from bids_sclesion.core.centerline import CenterlineError, extract_centerline, fit_centerline
from bids_sclesion.core.metrics import dice
from bids_sclesion.core.straighten import (apply_points, displacement_field_image, native_to_straight_points,
                                           straight_grid, straight_to_native_points)
from bids_sclesion.phantoms import random_anatomy


@pytest.fixture(scope="module")
def curved_cord():
    anatomy = random_anatomy(np.random.default_rng(3), brainstem=False)
    anatomy.lateral_amp, anatomy.lordosis_amp = 4.0, 10.0
    xs, ys, zs = np.arange(-20, 20, 0.8), np.arange(-20, 25, 0.8), np.arange(-60, 90, 2.0)
    _, cord, _ = anatomy.render(xs, ys, zs)
    # Store as PSR-like axis order with anisotropic voxels: the code must not assume RAS.
    data = np.transpose(cord, (1, 2, 0))[::-1].astype(np.float32)
    affine = np.zeros((4, 4))
    affine[1, 0], affine[2, 1], affine[0, 2], affine[3, 3] = -0.8, 2.0, 0.8, 1.0
    affine[:3, 3] = [xs[0], ys[-1], zs[0]]
    assert nib.aff2axcodes(affine) == ("P", "S", "R")
    return data, affine, anatomy


def test_straightening_accuracy_and_round_trip(curved_cord):
    data, affine, anatomy = curved_cord
    cl = extract_centerline(data, affine)
    assert cl.points[0, 2] < cl.points[-1, 2], "ordered inferior to superior"
    frames = np.stack([cl.tangents, cl.normals, cl.binormals], axis=1)
    assert np.allclose(frames @ frames.transpose(0, 2, 1), np.eye(3), atol=1e-6)
    # The fitted centreline follows the analytic one.
    x, y = anatomy.centerline(cl.points[:, 2])
    inner = slice(5, -5)
    err = np.hypot(cl.points[inner, 0] - x[inner], cl.points[inner, 1] - y[inner])
    assert np.sqrt(np.mean(err**2)) < 0.5
    grid = straight_grid(cl, radius_mm=12.0, spacing_mm=(0.5, 0.5, 1.0))
    straight = apply_points(data, affine, straight_to_native_points(cl, grid)) >= 0.5
    centre = (np.array(grid.shape[:2]) - 1) / 2
    # Slices along the fitted centreline, 3 mm in from each end.
    first = int(grid.margin_mm / grid.spacing_mm[2]) + 3
    last = straight.shape[2] - int(grid.margin_mm / grid.spacing_mm[2]) - 3
    dev = [np.linalg.norm((np.argwhere(straight[:, :, k]).mean(0) - centre) * 0.5)
           for k in range(first, last) if straight[:, :, k].sum() > 10]
    assert np.sqrt(np.mean(np.square(dev))) < 0.5 and max(dev) < 1.0
    back = apply_points(straight.astype(np.float32), grid.affine,
                        native_to_straight_points(cl, grid, data.shape, affine)) >= 0.5
    assert dice(back, data > 0.5) >= 0.97


def test_displacement_field_is_what_ants_applies(curved_cord, tmp_path):
    ants = pytest.importorskip("ants")
    data, affine, _ = curved_cord
    cl = extract_centerline(data, affine)
    grid = straight_grid(cl, radius_mm=8.0, spacing_mm=(1.0, 1.0, 2.0))
    points = straight_to_native_points(cl, grid)
    image = np.random.default_rng(0).random(data.shape).astype(np.float32)
    ours = apply_points(image, affine, points)
    nib.save(nib.Nifti1Image(image, affine), str(tmp_path / "moving.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros(grid.shape, np.float32), grid.affine), str(tmp_path / "fixed.nii.gz"))
    nib.save(displacement_field_image(points, grid.affine), str(tmp_path / "warp.nii.gz"))
    out = ants.apply_transforms(ants.image_read(str(tmp_path / "fixed.nii.gz")),
                                ants.image_read(str(tmp_path / "moving.nii.gz")),
                                [str(tmp_path / "warp.nii.gz")], interpolator="linear").numpy()
    inside = ours != 0
    assert np.abs(out - ours)[inside].max() < 1e-4


def test_no_cord_is_a_clear_error():
    with pytest.raises(CenterlineError, match="no spinal cord"):
        extract_centerline(np.zeros((10, 10, 10), np.float32), np.eye(4))
    with pytest.raises(CenterlineError, match="at least 5"):
        fit_centerline(np.zeros((2, 3)))
    # Four slices of cord: too few for the spline, said as a centreline error rather than SciPy's.
    short = np.zeros((12, 12, 12), np.float32)
    short[4:8, 4:8, 3:7] = 1.0
    with pytest.raises(CenterlineError, match="the cord spans only 4 slices; at least 5"):
        extract_centerline(short, np.eye(4))


@pytest.mark.parametrize("seed", range(5))
def test_short_jittery_cord_gives_a_steady_frame(seed):
    """A 15 mm axial crop whose slice centroids jitter by a few tenths of a mm (as a network's cord map
    does) must not give a centreline whose tangent swings from slice to slice, nor margins whose slices
    tilt: both smear a lesion along the straightened cord (before revision 3, seeds 3 and 4 tilted the
    grid's corners 9 and 14 mm along the cord)."""
    rng = np.random.default_rng(seed)
    z = np.arange(16.0)
    samples = np.stack([3.0 + 0.05 * z + rng.normal(0, 0.3, z.size), -7.5 + 0.25 * z + rng.normal(0, 0.1, z.size),
                        z], axis=1)
    cl = fit_centerline(samples)
    true_tangent = np.array([0.05, 0.25, 1.0]) / np.linalg.norm([0.05, 0.25, 1.0])
    angles = np.degrees(np.arccos(np.clip(cl.tangents @ true_tangent, -1, 1)))
    assert angles.max() < 5.0, angles
    grid = straight_grid(cl, radius_mm=15.75, spacing_mm=(0.5, 0.5, 1.0), margin_mm=5.0)
    points = straight_to_native_points(cl, grid)
    # Every straight slice, margins included, is a plane across the cord: its corners lie within a
    # couple of mm (along the cord) of its centre, not a tilted cut reaching the next centimetre.
    centre = points[grid.shape[0] // 2, grid.shape[1] // 2]
    corners = points[[0, -1, 0, -1], [0, 0, -1, -1]]
    assert np.abs((corners - centre[None]) @ true_tangent).max() < 2.0
    # Past the ends the grid's slices keep the centreline's spacing along the end tangent.
    assert np.allclose(np.linalg.norm(np.diff(centre, axis=0), axis=1), 1.0, atol=0.05)


def test_sampling_several_maps_at_once_is_sampling_each():
    """Points far outside the grid are not interpolated, yet every value is what SciPy gives for each map alone."""
    from scipy import ndimage

    from bids_sclesion.core.straighten import apply_points_to_maps

    rng = np.random.default_rng(4)
    maps = [rng.random((12, 10, 8)).astype(np.float32) for _ in range(2)]
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    affine[:3, 3] = (-3.0, 2.0, 1.0)
    # voxel coordinates from far outside to far inside, half-voxel edges and the one-voxel fringe included
    vox = np.stack([rng.uniform(-4, n + 3, size=5000) for n in maps[0].shape], axis=-1)
    vox[:6] = [[-0.5, 0, 0], [-0.7, 3, 3], [11.6, 3, 3], [12.0, 3, 3], [-1.0, 3, 3], [11.2, 9.4, 7.5]]
    points64 = vox @ affine[:3, :3].T + affine[:3, 3]
    # float32 points (as the straightening fields give) too: the candidates are found in float32 first
    for points, cval in ((points64, 0.0), (points64, np.nan), (points64.astype(np.float32), 0.0)):
        vox = (points @ np.linalg.inv(affine)[:3, :3].T + np.linalg.inv(affine)[:3, 3]).T
        together = apply_points_to_maps(maps, affine, points, order=1, cval=cval)
        for data, got in zip(maps, together):
            upper = np.array(data.shape)[:, None]
            coords = np.where((vox >= -0.5) & (vox <= upper - 0.5), np.clip(vox, 0, upper - 1), vox)
            expected = ndimage.map_coordinates(data, coords, order=1, mode="constant", cval=cval)
            expected[~np.all((vox > -1) & (vox < upper), axis=0)] = cval
            np.testing.assert_array_equal(got, expected)
            np.testing.assert_array_equal(apply_points(data, affine, points, order=1, cval=cval), expected)
    assert np.isnan(apply_points(maps[0], affine, points64, cval=np.nan)).any()


def test_grid_world_points_are_the_affine_applied_to_every_voxel():
    from bids_sclesion.core.straighten import field_target_points, grid_world_points

    rng = np.random.default_rng(8)
    affine = np.eye(4)
    affine[:3, :3] = rng.normal(size=(3, 3))
    affine[:3, 3] = rng.normal(scale=50, size=3)
    shape = (7, 5, 4)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    expected = ijk @ affine[:3, :3].T + affine[:3, 3]
    np.testing.assert_allclose(grid_world_points(shape, affine), expected, atol=1e-4)
    # A field written by displacement_field_image points back to the positions it was made from.
    targets = expected + rng.normal(size=expected.shape)
    np.testing.assert_allclose(field_target_points(displacement_field_image(targets, affine)), targets, atol=1e-4)
