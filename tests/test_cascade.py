"""Cascade pieces: straightened training cases, field round trips, lesion insertion, augmentation."""
import nibabel as nib
import numpy as np
import pytest

from bids_sclesion.core.centerline import extract_centerline
from bids_sclesion.core.straighten import (displacement_field_image, field_target_points, straight_grid,
                                           straight_to_native_points)
from bids_sclesion.model.cascade import StraightSpace, sample_straight, straighten_labels, unstraighten
from bids_sclesion.training.transforms import RandAxisPermuted
from bids_sclesion.phantoms.insert import insert_lesions

from .test_straighten import curved_cord  # noqa: F401  (module fixture)


def test_field_target_points_inverts_displacement_field(curved_cord):  # noqa: F811
    data, affine, _ = curved_cord
    cl = extract_centerline(data, affine)
    grid = straight_grid(cl, 10.0, (1.0, 1.0, 2.0))
    points = straight_to_native_points(cl, grid)
    field = displacement_field_image(points, grid.affine)
    assert np.allclose(field_target_points(field), points, atol=1e-3)


def test_straightened_labels_put_the_cord_in_the_middle(curved_cord):  # noqa: F811
    data, affine, _ = curved_cord
    rng = np.random.default_rng(0)
    image = nib.Nifti1Image((data * 100 + rng.normal(0, 5, data.shape)).astype(np.float32), affine)
    lesion = np.zeros_like(data, bool)
    space = StraightSpace(radius_mm=8.0, spacing_mm=(0.5, 0.5, 1.0))
    img, labels = straighten_labels(image, data > 0.5, lesion, space)
    assert img.shape == labels.shape[1:] and img.shape[:2] == (33, 33)
    cord = labels[0]
    # Away from the ends, every cross-section holds the cord, centred.
    inner = cord[:, :, 10:-10]
    assert inner.any(axis=(0, 1)).all()
    idx = np.argwhere(inner)
    assert np.allclose(idx[:, :2].mean(axis=0), 16.0, atol=1.0)
    assert not labels[1].any()
    assert 0.0 <= np.percentile(img, 50) <= 1.0


def test_sample_straight_zeroes_outside_the_field_of_view():
    img = nib.Nifti1Image(np.random.default_rng(1).uniform(10, 20, (10, 10, 10)).astype(np.float32), np.eye(4))
    points = np.zeros((2, 1, 1, 3))
    points[1] = 100.0  # far outside
    out = sample_straight(img, points)
    assert out[1, 0, 0] == 0.0 and np.isfinite(out).all()


def test_unstraighten_maps_back_with_zero_outside():
    prob = np.ones((2, 4, 4, 4), np.float32)
    pts = np.array([[[[1.0, 1.0, 1.0]]], [[[50.0, 50.0, 50.0]]]])
    out = unstraighten(prob, np.eye(4), pts)
    assert out.shape == (2, 2, 1, 1)
    assert np.allclose(out[:, 0], 1.0) and np.allclose(out[:, 1], 0.0)


def test_voxel_average_gives_the_covered_fraction_of_thick_voxels():
    # Straight-space maps on a 0.5 mm grid (world = straight space), sample centres at odd quarters.
    straight_affine = np.diag([0.5, 0.5, 0.5, 1.0])
    straight_affine[:3, 3] = [-10.25, -2.0, -2.0]
    x = straight_affine[0, 3] + 0.5 * np.arange(60)
    prob = np.zeros((2, 60, 9, 9), np.float32)
    prob[0, (x >= 0.0) & (x < 4.5)] = 1.0  # a lesion 4.5 mm wide
    prob[1, (x >= -0.5) & (x < 0.5)] = 1.0  # one 1 mm wide
    # Source voxels 3 mm thick along x, centred at -3, 0, 3 and 6 mm.
    centres = np.zeros((4, 1, 1, 3))
    centres[:, 0, 0, 0] = [-3.0, 0.0, 3.0, 6.0]
    covered = unstraighten(prob, straight_affine, centres, (3.0, 0.8, 0.8))[:, :, 0, 0]
    # [-1.5, 1.5] holds 1.5 mm of the first lesion, [1.5, 4.5] is all lesion; the second covers a third.
    assert np.allclose(covered[0], [0.0, 0.5, 1.0, 0.0], atol=0.01)
    assert np.allclose(covered[1], [0.0, 1 / 3, 0.0, 0.0], atol=0.01)
    centre_only = unstraighten(prob, straight_affine, centres)[:, :, 0, 0]
    assert centre_only[1, 1] == pytest.approx(1.0), "at its centre alone the voxel looks all lesion"
    assert np.array_equal(unstraighten(prob, straight_affine, centres, (1.0, 0.8, 0.8))[:, :, 0, 0], centre_only), \
        "no thick axis: nothing to average"


def test_straightened_labels_from_a_fine_lesion_map(curved_cord):  # noqa: F811
    data, affine, _ = curved_cord
    image = nib.Nifti1Image((data * 100).astype(np.float32), affine)
    cl = extract_centerline(data, affine)
    centre = cl.points[len(cl.points) // 2]
    # A ball of radius 2 mm on a 0.25 mm grid of its own, around a point of the centreline.
    fine_affine = np.diag([0.25, 0.25, 0.25, 1.0])
    fine_affine[:3, 3] = centre - 4.0
    ijk = np.stack(np.meshgrid(*[np.arange(33)] * 3, indexing="ij"), axis=-1)
    world = ijk * 0.25 + fine_affine[:3, 3]
    fraction = (np.linalg.norm(world - centre, axis=-1) <= 2.0).astype(np.float32)
    space = StraightSpace(radius_mm=8.0, spacing_mm=(0.5, 0.5, 1.0))
    no_lesion = np.zeros(data.shape, bool)
    _, plain = straighten_labels(image, data > 0.5, no_lesion, space)
    _, labels = straighten_labels(image, data > 0.5, no_lesion, space,
                                  lesion_fraction=nib.Nifti1Image(fraction, fine_affine))
    assert not plain[1].any() and np.array_equal(plain[0], labels[0])
    volume = labels[1].sum() * 0.5 * 0.5 * 1.0
    assert volume == pytest.approx(4 / 3 * np.pi * 2.0**3, rel=0.2)


@pytest.mark.parametrize("suffix,sign", [("T2w", 1), ("T1w", -1)])
def test_inserted_lesions_lie_in_the_cord_and_change_intensity(curved_cord, suffix, sign):  # noqa: F811
    data, affine, _ = curved_cord
    cord = data > 0.5
    image = np.where(cord, 100.0, 50.0).astype(np.float32)
    out, lesions = insert_lesions(image, affine, cord, suffix, np.random.default_rng(4), n_lesions=3)
    from scipy import ndimage

    assert ndimage.label(lesions)[1] == 3
    assert not np.any(lesions & ~cord)
    assert np.array_equal(out[~cord], image[~cord]), "nothing changes outside the cord"
    change = out[lesions] - image[lesions]
    assert np.all(np.sign(change) == sign) and np.abs(change).mean() > 10


def test_insert_lesions_rejects_unknown_contrast(curved_cord):  # noqa: F811
    data, affine, _ = curved_cord
    with pytest.raises(ValueError, match="no lesion contrast"):
        insert_lesions(data, affine, data > 0.5, "FLAIR", np.random.default_rng(0))


def test_axis_permutation_moves_image_and_label_together():
    rng = np.random.default_rng(0)
    img = rng.normal(size=(1, 8, 8, 8)).astype(np.float32)
    lab = np.stack([img[0] > 0, img[0] > 1]).astype(np.float32)
    t = RandAxisPermuted(prob=1.0, seed=3)
    for _ in range(5):
        out = t({"image": img, "label": lab})
        assert np.array_equal(out["label"][0] > 0, out["image"][0] > 0)
        assert np.array_equal(out["label"][1] > 0, out["image"][0] > 1)
    # Non-cubic patches keep their shape (flips only).
    out = t({"image": img[:, :, :, :4], "label": lab[:, :, :, :4]})
    assert out["image"].shape == (1, 8, 8, 4)


def test_dice_in_labelled_slices_ignores_unlabelled_slices():
    from bids_sclesion.evaluate import dice_in_labelled_slices

    truth = np.zeros((10, 10, 20), bool)
    truth[4:6, 4:6, 5:15] = True  # a 'cord' along the third axis, labelled in slices 5-14
    pred = np.zeros_like(truth)
    pred[4:6, 4:6, 0:20] = True  # the prediction covers the whole cord
    assert dice_in_labelled_slices(pred, truth, np.eye(4)) == pytest.approx(1.0)
    from bids_sclesion.core.metrics import dice

    assert dice(pred, truth) < 0.7


def test_coarse_elastic_keeps_labels_binary_and_is_identity_without_displacement():
    from bids_sclesion.training.transforms import RandCoarseElasticd

    image = np.random.default_rng(0).random((1, 24, 24, 24)).astype(np.float32)
    label = np.zeros((2, 24, 24, 24), np.float32)
    label[:, 8:16, 8:16, :] = 1
    same = RandCoarseElasticd(prob=1.0, magnitude=0.0, seed=0)({"image": image, "label": label})
    assert np.allclose(same["image"], image, atol=1e-4) and np.array_equal(same["label"], label)
    moved = RandCoarseElasticd(prob=1.0, magnitude=2.0, seed=1)({"image": image, "label": label})
    assert set(np.unique(moved["label"])) <= {0.0, 1.0}
    assert not np.array_equal(moved["label"], label)
    assert 0.8 < moved["label"].sum() / label.sum() < 1.2, "a smooth deformation, not a scramble"


def test_thick_slices_average_along_one_axis_only():
    from bids_sclesion.training.transforms import RandThickSliced

    def thick(image):  # the same seed picks the same axis and factor
        return RandThickSliced(prob=1.0, factor_range=(3, 3), seed=0)({"image": image})["image"]

    noise = np.random.default_rng(0).random((1, 20, 21, 22)).astype(np.float32)
    out = thick(noise)
    assert out.shape == noise.shape
    roughness = [np.abs(np.diff(out[0], axis=a)).mean() / np.abs(np.diff(noise[0], axis=a)).mean() for a in range(3)]
    axis = int(np.argmin(roughness))
    # Detail along the thick axis is averaged away; detail across it is kept exactly.
    along = np.indices(noise.shape[1:])[axis] % 2
    across = np.indices(noise.shape[1:])[(axis + 1) % 3] % 2
    assert thick(along[None].astype(np.float32)).std() < 0.25 * along.std()
    assert np.allclose(thick(across[None].astype(np.float32))[0], across, atol=1e-5)
    constant = np.full((1, 10, 10, 10), 0.3, np.float32)
    assert np.allclose(RandThickSliced(prob=1.0, seed=2)({"image": constant})["image"], 0.3)
