import nibabel as nib
import numpy as np
import pytest

from bids_sclesion.core.image import ImageError, load_image, resample_to_grid, resample_to_spacing, to_canonical
from bids_sclesion.core.intensity import n4_bias_correction, normalize_intensity
from bids_sclesion.core.lesions import lesion_table, table_to_tsv, threshold_masks
from bids_sclesion.core.metrics import dice, f1_score, lesion_detection


def _save(tmp_path, data, affine=None, name="img.nii.gz"):
    path = tmp_path / name
    nib.save(nib.Nifti1Image(data, np.eye(4) if affine is None else affine), str(path))
    return path


def test_load_image_rejects_bad_input(tmp_path):
    empty = tmp_path / "empty.nii.gz"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty.nii.gz.*empty"):
        load_image(empty)
    truncated = tmp_path / "trunc.nii.gz"
    full = _save(tmp_path, np.random.rand(20, 20, 20).astype(np.float32), name="full.nii.gz").read_bytes()
    truncated.write_bytes(full[: len(full) // 2])
    with pytest.raises(ImageError, match="trunc.nii.gz"):
        load_image(truncated)
    with pytest.raises(ImageError, match="3D"):
        load_image(_save(tmp_path, np.random.rand(5, 5, 5, 3).astype(np.float32), name="4d.nii.gz"))
    nan = np.random.rand(6, 6, 6).astype(np.float32)
    nan[1, 1, 1] = np.nan
    with pytest.raises(ImageError, match="NaN"):
        load_image(_save(tmp_path, nan, name="nan.nii.gz"))
    with pytest.raises(ImageError, match="constant"):
        load_image(_save(tmp_path, np.zeros((6, 6, 6), np.float32), name="zero.nii.gz"))


def test_canonical_and_back_is_exact():
    rng = np.random.default_rng(0)
    data = rng.random((12, 10, 8)).astype(np.float32)
    affine = np.array([[0, 0, -3.0, 10], [-0.7, 0, 0, 5], [0, -0.7, 0, -2], [0, 0, 0, 1]])  # PSL-like
    img = nib.Nifti1Image(data, affine)
    can = to_canonical(img)
    assert nib.aff2axcodes(can.affine) == ("R", "A", "S")
    back = resample_to_grid(np.asarray(can.dataobj), can.affine, data.shape, affine, order=1)
    assert np.allclose(back, data, atol=1e-5)


def test_a_reordered_grid_is_gathered_as_interpolation_gives_it(monkeypatch):
    """Back from canonical to the scanner's orientation: the voxels are gathered, the values those of
    interpolating at whole-voxel positions; a grid reaching outside the source is interpolated as before."""
    from bids_sclesion.core import image

    rng = np.random.default_rng(1)
    data = rng.random((12, 10, 8)).astype(np.float32)
    affine = np.array([[0, 0, -3.0, 10], [-0.7, 0, 0, 5], [0, -0.7, 0, -2], [0, 0, 0, 1]])
    can = to_canonical(nib.Nifti1Image(data, affine))
    source = np.asarray(can.dataobj, np.float32)
    mapping = np.linalg.inv(can.affine) @ affine
    gathered = image.reorder_voxels(source, np.round(mapping[:3, :3]), np.round(mapping[:3, 3]), data.shape)
    assert gathered is not None and np.array_equal(gathered, data)
    shifted = affine.copy()
    shifted[:3, 3] += 2 * affine[:3, 0]  # two voxels along the first axis: the last two fall outside
    mapping = np.linalg.inv(can.affine) @ shifted
    assert image.reorder_voxels(source, np.round(mapping[:3, :3]), np.round(mapping[:3, 3]), data.shape) is None
    fast = [resample_to_grid(source, can.affine, data.shape, a) for a in (affine, shifted)]
    monkeypatch.setattr(image, "reorder_voxels", lambda *args: None)
    interpolated = [resample_to_grid(source, can.affine, data.shape, a) for a in (affine, shifted)]
    for got, expected in zip(fast, interpolated):
        np.testing.assert_array_equal(got, expected)


def test_resample_to_spacing_keeps_field_of_view():
    data = np.zeros((30, 30, 10), np.float32)
    data[10:20, 10:20, 3:7] = 1
    affine = np.diag([0.5, 0.5, 3.0, 1.0])
    out, new_affine = resample_to_spacing(data, affine, 1.0)
    assert out.shape == (15, 15, 30)
    c_old = affine[:3, :3] @ (np.argwhere(data > 0.5).mean(0)) + affine[:3, 3]
    c_new = new_affine[:3, :3] @ (np.argwhere(out > 0.5).mean(0)) + new_affine[:3, 3]
    assert np.allclose(c_old, c_new, atol=0.6)


def test_resampling_keeps_the_end_slices_of_a_thick_slab():
    # Three 5 mm slices cover 15 mm: at 1 mm every one of the 15 new slices lies inside a source slice.
    data = np.ones((8, 8, 3), np.float32)
    out, _ = resample_to_spacing(data, np.diag([1.0, 1.0, 5.0, 1.0]), 1.0)
    assert out.shape == (8, 8, 15) and np.all(out == 1), [float(out[..., k].min()) for k in range(15)]
    # Points more than half a voxel past the edge are outside (cval), along a tilted grid too.
    tilt = np.array([[0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, -2.0], [0.0, 0.0, 0.0, 1.0]])
    out = resample_to_grid(data, np.diag([1.0, 1.0, 5.0, 1.0]), (15, 8, 8), tilt, cval=-1.0)
    inside = (np.arange(15) - 2.0) / 5.0  # source slice coordinate of each target index along the first axis
    expected = np.where((inside >= -0.5) & (inside <= 2.5), 1.0, -1.0)
    assert np.array_equal(out[:, 0, 0], expected)


def test_straight_sampling_keeps_the_half_voxel_beyond_the_edge_centres():
    from bids_sclesion.core.straighten import apply_points

    data = np.arange(27, dtype=np.float32).reshape(3, 3, 3) + 1
    points = np.array([[-0.4, 1, 1], [-0.6, 1, 1], [2.4, 1, 1], [2.6, 1, 1], [1, 1, 1]], float)
    out = apply_points(data, np.eye(4), points, cval=0.0)
    assert out.tolist() == [data[0, 1, 1], 0.0, data[2, 1, 1], 0.0, data[1, 1, 1]]


def test_n4_removes_a_smooth_bias_and_keeps_sign():
    rng = np.random.default_rng(1)
    x, y, z = np.meshgrid(*[np.linspace(-1, 1, 40)] * 3, indexing="ij")
    truth = np.where(x**2 + y**2 < 0.6, 1.0, 0.5).astype(np.float32) + rng.normal(0, 0.01, x.shape).astype(np.float32)
    bias = np.exp(0.4 * x + 0.2 * z).astype(np.float32)
    corrected = n4_bias_correction(truth * bias, (1.0, 1.0, 1.0), shrink_factor=1)
    inner = x**2 + y**2 < 0.5
    cv_before = np.std((truth * bias)[inner]) / np.mean((truth * bias)[inner])
    cv_after = np.std(corrected[inner]) / np.mean(corrected[inner])
    assert cv_after < 0.5 * cv_before
    signed = n4_bias_correction(-truth * bias, (1.0, 1.0, 1.0), shrink_factor=1)
    assert np.all(signed < 0)


def test_normalize_intensity_range():
    data = np.random.default_rng(0).normal(100, 20, (20, 20, 20)).astype(np.float32)
    out = normalize_intensity(data)
    assert -1.0 <= out.min() and out.max() <= 2.0
    assert 0.3 < np.median(out) < 0.7


def test_metrics():
    a = np.zeros((10, 10, 10), bool)
    b = a.copy()
    a[2:4, 2:4, 2:4] = True
    b[3:5, 2:4, 2:4] = True
    assert dice(a, b) == pytest.approx(0.5)
    assert dice(np.zeros(3, bool), np.zeros(3, bool)) == 1.0
    truth = np.zeros((20, 20, 20), bool)
    truth[1:3, 1:3, 1:3] = True  # lesion 1 (detected)
    truth[10:12, 10:12, 10:12] = True  # lesion 2 (missed)
    pred = np.zeros_like(truth)
    pred[2:4, 2:4, 2:4] = True  # overlaps lesion 1 by 1 voxel of 8
    pred[16:18, 16:18, 16:18] = True  # false positive
    det = lesion_detection(pred, truth)
    assert (det.true_lesions, det.detected, det.predicted_lesions, det.false_positives) == (2, 1, 2, 1)
    assert det.f1 == pytest.approx(0.5)
    assert lesion_detection(pred, truth, min_overlap=0.2).detected == 0  # 1/8 < 20 %
    assert f1_score(0, 0, 0, 0) == 1.0


def test_lesions_grow_by_hysteresis_without_new_lesions():
    from bids_sclesion.core.lesions import grow_lesions

    cord_p = np.zeros((30, 30, 30), np.float32)
    cord_p[5:25, 5:25, :] = 0.9
    les_p = np.zeros_like(cord_p)
    les_p[10:16, 10:16, 10:16] = 0.35  # a halo around ...
    les_p[12:14, 12:14, 12:14] = 0.8  # ... a core above the threshold
    les_p[20:23, 20:23, 20:23] = 0.45  # below the threshold everywhere: not a lesion, grown or not
    _, plain = threshold_masks(cord_p, les_p)
    cord, grown = threshold_masks(cord_p, les_p, grow_threshold=0.3)
    assert plain.sum() == 8 and grown.sum() == 6 ** 3  # the core, then the core with its halo
    assert not grown[21, 21, 21] and cord[grown].all()
    assert np.array_equal(threshold_masks(cord_p, les_p, grow_threshold=0.5)[1], plain)  # at the threshold: none
    # Growth follows connectivity only: a lesion touching a region above the low threshold takes all of it.
    lesion = np.zeros_like(plain)
    lesion[12, 12, 12] = True
    grown_one = grow_lesions(lesion, les_p, 0.3)
    assert grown_one.sum() == 6 ** 3 and not grown_one[21, 21, 21]  # the unconnected 0.45 blob stays out
    # Small lesions are dropped before they grow: --min-lesion-volume keeps its meaning.
    assert not threshold_masks(cord_p, les_p, min_lesion_mm3=10.0, grow_threshold=0.3)[1].any()


def test_threshold_masks_drops_lesions_outside_the_cord():
    cord_p = np.zeros((30, 30, 30), np.float32)
    cord_p[10:20, 10:20, :] = 0.9
    les_p = np.zeros_like(cord_p)
    les_p[12:15, 12:15, 5:9] = 0.8  # inside
    les_p[1:4, 1:4, 1:4] = 0.95  # outside the cord
    cord, lesion = threshold_masks(cord_p, les_p)
    assert lesion[13, 13, 6] and not lesion[2, 2, 2]
    rows = lesion_table(lesion, les_p, cord, np.diag([0.5, 0.5, 2.0, 1.0]))
    assert len(rows) == 1
    assert rows[0].volume_mm3 == pytest.approx(36 * 0.5)
    # Along the cord (z, 2 mm voxels): 4 voxels -> 8 mm.
    assert rows[0].extent_along_cord_mm == pytest.approx(8.0, abs=0.1)
    assert rows[0].mean_probability == pytest.approx(0.8, abs=1e-4)
    # The cord is a 5 x 5 mm square along z (60 mm): area 25 mm2; lesion centroid at z = 13 mm
    # (voxels 5-8 of 2 mm), the top of the cord at z = 58 mm.
    assert rows[0].cord_area_mm2 == pytest.approx(25.0, rel=0.05)
    assert rows[0].distance_from_top_mm == pytest.approx(58.0 - 13.0, abs=1.5)
    assert rows[0].vertebral_level == "n/a"
    levels = np.zeros(cord.shape, np.int16)
    levels[:, :, :7] = 5  # C5 below z = 14 mm, C4 above: the lesion (z 10-16 mm) spans both
    levels[:, :, 7:20] = 4
    row = lesion_table(lesion, les_p, cord, np.diag([0.5, 0.5, 2.0, 1.0]), levels=levels)[0]
    assert row.vertebral_level == "C5" and row.vertebral_levels_spanned == "C4;C5"
    assert rows[0].vertebral_levels_spanned == "n/a"
    from bids_sclesion.core.lesions import annotate_levels

    annotated = annotate_levels([{"lesion_id": "1", "vertebral_level": "n/a"}], lesion,
                                np.diag([0.5, 0.5, 2.0, 1.0]), levels)
    assert annotated[0]["vertebral_level"] == "C5" and annotated[0]["vertebral_levels_spanned"] == "C4;C5"
    assert table_to_tsv(rows).splitlines()[0].startswith("lesion_id\tvolume_mm3")


def test_lesion_confidence_counts_the_copies_that_find_each_lesion():
    from bids_sclesion.core.lesions import lesion_table, voxel_uncertainty

    lesion = np.zeros((20, 20, 20), bool)
    lesion[2:4, 2:4, 2:4] = True
    lesion[12:15, 12:15, 12:15] = True
    cord = np.ones_like(lesion)
    prob = lesion.astype(np.float32) * 0.9
    copies = np.stack([prob, prob, prob, prob])
    copies[1:, 2:4, 2:4, 2:4] = 0.1  # only one copy of four finds the first lesion
    rows = lesion_table(lesion, prob, cord, np.eye(4), copies, threshold=0.5)
    assert sorted(r.confidence for r in rows) == [0.25, 1.0]
    assert lesion_table(lesion, prob, cord, np.eye(4))[0].confidence == "n/a"
    u = voxel_uncertainty(copies)
    assert u.shape == lesion.shape and u[3, 3, 3] > 0.3 and u[13, 13, 13] == 0.0


@pytest.mark.parametrize("radius_mm,length_mm,plausible", [(4.5, 12, True), (4.5, 120, True), (10.0, 40, False),
                                                           (4.5, 6, False), (2.0, 60, False)])
def test_cord_plausibility_tells_a_cord_from_a_blob(radius_mm, length_mm, plausible):
    from bids_sclesion.core.centerline import CenterlineError, check_cord_plausible, extract_centerline

    shape = (40, 40, int(length_mm) + 10)
    x, y, z = np.meshgrid(*[np.arange(n) - n / 2 for n in shape[:2]], np.arange(shape[2]), indexing="ij")
    cord = ((x ** 2 + y ** 2 <= radius_mm ** 2) & (z >= 5) & (z < 5 + length_mm)).astype(np.float32)
    affine = np.eye(4)
    centerline = extract_centerline(cord, affine)
    if plausible:
        check_cord_plausible(cord > 0.5, affine, centerline)
    else:
        with pytest.raises(CenterlineError, match="no spinal cord in the field of view"):
            check_cord_plausible(cord > 0.5, affine, centerline)


@pytest.mark.parametrize("start_mm,plausible", [(70, False), (2, True), (150, True)])
def test_a_cord_in_the_middle_of_a_long_field_of_view_must_reach_an_end(start_mm, plausible):
    """A cord-sized blob 24 mm long, alone in the middle of a 180 mm field of view, is not a spinal cord; the same
    blob reaching either end of the image is (a cord runs on beyond the field of view)."""
    from bids_sclesion.core.centerline import CenterlineError, check_cord_plausible, extract_centerline

    shape = (40, 40, 180)
    x, y, z = np.meshgrid(*[np.arange(n) - n / 2 for n in shape[:2]], np.arange(shape[2]), indexing="ij")
    end = min(start_mm + 24, shape[2] - 1)
    cord = ((x ** 2 + y ** 2 <= 4.5 ** 2) & (z >= start_mm) & (z <= end)).astype(np.float32)
    centerline = extract_centerline(cord, np.eye(4))
    if plausible:
        check_cord_plausible(cord > 0.5, np.eye(4), centerline)
    else:
        with pytest.raises(CenterlineError, match="reaches neither end"):
            check_cord_plausible(cord > 0.5, np.eye(4), centerline)
