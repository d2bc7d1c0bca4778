"""Property-based tests (hypothesis) of the geometry code, and a fuzz test of the NIfTI loading path."""
from __future__ import annotations

import gzip
import io

import nibabel as nib
import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is not installed (it is in the test extras)")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from bids_sclesion.core.centerline import extract_centerline  # noqa: E402
from bids_sclesion.core.image import ImageError, load_image, resample_to_grid, to_canonical  # noqa: E402
from bids_sclesion.core.metrics import dice  # noqa: E402
from bids_sclesion.core.straighten import (apply_points, native_to_straight_points, straight_grid,  # noqa: E402
                                           straight_to_native_points)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _rotation(angles) -> np.ndarray:
    ax, ay, az = angles
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


orientations = st.tuples(
    st.permutations([0, 1, 2]),
    st.tuples(st.booleans(), st.booleans(), st.booleans()),
    st.tuples(*[st.floats(0.3, 4.0)] * 3),
    st.tuples(*[st.floats(-0.5, 0.5)] * 3),  # up to ~29 degrees oblique
    st.tuples(*[st.floats(-100, 100)] * 3),
)


def _affine(perm, flips, zooms, angles, origin) -> np.ndarray:
    axes = np.eye(3)[:, list(perm)] * np.where(flips, -1.0, 1.0)
    affine = np.eye(4)
    affine[:3, :3] = _rotation(angles) @ axes @ np.diag(zooms)
    affine[:3, 3] = origin
    return affine


@FAST
@given(orientation=orientations, shape=st.tuples(*[st.integers(2, 9)] * 3), seed=st.integers(0, 2**16))
def test_reorientation_keeps_every_voxel_at_its_place_in_the_world(orientation, shape, seed):
    affine = _affine(*orientation)
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    canonical = to_canonical(nib.Nifti1Image(data, affine))
    cdata = np.asarray(canonical.dataobj)
    assert sorted(cdata.shape) == sorted(shape)
    # Every canonical voxel holds the value the original has at the same world position.
    ijk = np.argwhere(np.ones(cdata.shape, bool))
    world = nib.affines.apply_affine(canonical.affine, ijk)
    back = np.rint(nib.affines.apply_affine(np.linalg.inv(affine), world)).astype(int)
    assert np.array_equal(cdata[tuple(ijk.T)], data[tuple(back.T)])
    # The canonical axes point to R, A, S as closely as the voxel axes allow.
    assert nib.aff2axcodes(canonical.affine) == ("R", "A", "S")


@FAST
@given(orientation=orientations, shape=st.tuples(*[st.integers(3, 8)] * 3), seed=st.integers(0, 2**16))
def test_resampling_onto_its_own_grid_is_the_identity(orientation, shape, seed):
    affine = _affine(*orientation)
    data = np.random.default_rng(seed).random(shape).astype(np.float32)
    same = resample_to_grid(data, affine, shape, affine, order=1)
    np.testing.assert_allclose(same, data, atol=1e-5)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(lateral=st.floats(0.0, 6.0), lordosis=st.floats(0.0, 12.0), perm=st.permutations([0, 1, 2]),
       flip=st.booleans(), seed=st.integers(0, 1000))
def test_straightening_round_trip_on_random_cords_and_storage_orders(lateral, lordosis, perm, flip, seed):
    from bids_sclesion.phantoms import random_anatomy

    anatomy = random_anatomy(np.random.default_rng(seed), brainstem=False)
    anatomy.lateral_amp, anatomy.lordosis_amp = lateral, lordosis
    xs, ys, zs = np.arange(-18, 18, 0.8), np.arange(-18, 22, 0.8), np.arange(-50, 70, 1.6)
    _, cord, _ = anatomy.render(xs, ys, zs)
    spacing = np.array([0.8, 0.8, 1.6])
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = [xs[0], ys[0], zs[0]]
    # Store the same cord with its axes permuted (and one flipped): the result must not depend on it.
    data = np.transpose(cord.astype(np.float32), perm)
    stored = np.eye(4)
    stored[:3, :3] = affine[:3, :3][:, list(perm)]
    stored[:3, 3] = affine[:3, 3]
    if flip:
        data = data[::-1]
        stored[:3, 3] = stored[:3, 3] + stored[:3, 0] * (data.shape[0] - 1)
        stored[:3, 0] = -stored[:3, 0]
    cl = extract_centerline(data, stored)
    grid = straight_grid(cl, radius_mm=10.0, spacing_mm=(0.5, 0.5, 1.0))
    straight = apply_points(data, stored, straight_to_native_points(cl, grid)) >= 0.5
    back = apply_points(straight.astype(np.float32), grid.affine,
                        native_to_straight_points(cl, grid, data.shape, stored)) >= 0.5
    assert dice(back, data > 0.5) >= 0.95
    # The fitted centreline follows the true one wherever the cord is fully in the field of view.
    x, y = anatomy.centerline(cl.points[:, 2])
    inner = slice(5, -5)
    rmse = np.sqrt(np.mean(np.hypot(cl.points[inner, 0] - x[inner], cl.points[inner, 1] - y[inner]) ** 2))
    assert rmse < 0.8


def _valid_nifti_bytes() -> bytes:
    rng = np.random.default_rng(0)
    img = nib.Nifti1Image(rng.random((6, 5, 4)).astype(np.float32), np.diag([0.7, 0.7, 3.0, 1.0]))
    return img.to_bytes()


VALID = _valid_nifti_bytes()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), max_size=12),
       cut=st.one_of(st.none(), st.integers(0, len(VALID))), compress=st.booleans())
def test_fuzzed_nifti_files_load_or_fail_with_a_named_image_error(tmp_path_factory, edits, cut, compress):
    raw = bytearray(VALID)
    for position, value in edits:
        raw[position] = value
    raw = bytes(raw[:cut] if cut is not None else raw)
    if compress:
        buffer = io.BytesIO()
        with gzip.GzipFile(fileobj=buffer, mode="wb") as fh:
            fh.write(raw)
        raw = buffer.getvalue()
    path = tmp_path_factory.mktemp("fuzz") / ("img.nii.gz" if compress else "img.nii")
    path.write_bytes(raw)
    try:
        img = load_image(path)
    except ImageError as exc:
        assert str(path) in str(exc)
        return
    data = np.asarray(img.dataobj)
    assert data.ndim == 3 and data.dtype == np.float32 and np.all(np.isfinite(data))
    assert np.all(np.isfinite(img.affine)) and abs(np.linalg.det(img.affine[:3, :3])) > 0
