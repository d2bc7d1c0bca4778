import json
import subprocess

import nibabel as nib
import numpy as np
import pytest

from bids_sclesion.phantoms import Tissue, generate_dataset, random_acquisition, random_anatomy, random_lesions, render_image

from .conftest import validator_available


def _render(seed: int, contrast: str):
    rng = np.random.default_rng(seed)
    anatomy = random_anatomy(rng, brainstem=False)
    anatomy.lesions = random_lesions(rng, anatomy, (-40, 100), count=4)
    acq = random_acquisition(rng, contrast, anatomy, 110.0, fov_scale=0.5)
    return anatomy, acq, render_image(rng, anatomy, acq)


def test_generation_is_deterministic():
    a = _render(3, "T2w")[2]
    b = _render(3, "T2w")[2]
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj))
        assert np.allclose(x.affine, y.affine)
    c = _render(4, "T2w")[2]
    assert not np.array_equal(np.asarray(a[0].dataobj), np.asarray(c[0].dataobj)) or a[0].shape != c[0].shape


@pytest.mark.parametrize("contrast", ["T2w", "T2starw"])
def test_fine_lesion_map_gives_the_half_covered_label(contrast):
    from bids_sclesion.core.straighten import apply_points
    from bids_sclesion.model.cascade import voxel_extent_points

    rng = np.random.default_rng(5)
    anatomy = random_anatomy(rng, brainstem=False)
    anatomy.lesions = random_lesions(rng, anatomy, (-40, 100), count=4)
    acq = random_acquisition(rng, contrast, anatomy, 110.0, fov_scale=0.5)
    state = rng.bit_generator.state
    image, cord, lesion, fine = render_image(rng, anatomy, acq, fine_lesion=True)
    rng.bit_generator.state = state
    plain = render_image(rng, anatomy, acq)
    assert len(plain) == 3
    assert np.array_equal(np.asarray(plain[0].dataobj), np.asarray(image.dataobj)), "the image does not change"
    assert fine is not None and np.allclose(fine.header.get_zooms(), min(0.5, min(acq.spacing)))
    truth = np.asarray(lesion.dataobj) > 0
    in_cord = np.asarray(cord.dataobj) > 0
    # The fine map averaged over each thick voxel, where half covered, is the label.
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in truth.shape], indexing="ij"), axis=-1).astype(float)
    centres = ijk @ image.affine[:3, :3].T + image.affine[:3, 3]
    samples = voxel_extent_points(centres, image.header.get_zooms()[:3])
    assert len(samples) == int(np.ceil(max(acq.spacing) / 0.5))
    fraction = np.asarray(fine.dataobj, np.float32)
    covered = np.mean([apply_points(fraction, fine.affine, pts) for pts in samples], axis=0) >= 0.5
    covered &= in_cord
    assert truth.sum() > 20
    assert 2 * (covered & truth).sum() / (covered.sum() + truth.sum()) > 0.9
    assert fraction.max() <= 1.0 and fraction.min() >= 0.0


def test_lesion_free_image_has_no_fine_lesion_map():
    rng = np.random.default_rng(6)
    anatomy = random_anatomy(rng, brainstem=False)
    acq = random_acquisition(rng, "T2w", anatomy, 110.0, fov_scale=0.5)
    assert render_image(rng, anatomy, acq, fine_lesion=True)[3] is None


@pytest.mark.parametrize("contrast", ["T2w", "STIR", "T1w", "PSIR", "T2starw"])
def test_contrast_and_labels(contrast):
    anatomy, acq, (image, cord, lesion) = _render(5, contrast)
    assert "".join(nib.aff2axcodes(image.affine)) == acq.orientation
    data = np.asarray(image.dataobj).astype(float)
    cord_m = np.asarray(cord.dataobj) > 0
    les_m = np.asarray(lesion.dataobj) > 0
    assert cord_m.sum() > 100
    assert not np.any(les_m & ~cord_m), "lesions must lie inside the cord"
    healthy = cord_m & ~les_m
    if les_m.sum() >= 5:
        delta = data[les_m].mean() - data[healthy].mean()
        if contrast in ("T2w", "STIR", "T2starw"):
            assert delta > 0, "lesions are bright on T2-weighted contrasts"
        else:
            assert delta < 0, "lesions are dark on T1w and PSIR"
    if contrast == "PSIR":
        assert data.min() < 0, "PSIR is signed (CSF negative)"
    # The cord sits in CSF: on T2w CSF is brighter than cord, on T1w darker.
    from scipy import ndimage

    around = ndimage.binary_dilation(cord_m, iterations=2) & ~ndimage.binary_dilation(cord_m, iterations=1)
    if contrast in ("T2w", "STIR", "T2starw"):
        assert np.median(data[around]) > np.median(data[healthy])
    elif contrast == "T1w":
        assert np.median(data[around]) < np.median(data[healthy])


@pytest.mark.parametrize("contrast", ["T2w", "T2starw"])
def test_grey_matter_mask_inside_the_cord_and_on_the_image_grid(contrast):
    from bids_sclesion.phantoms.acquisition import render_tissue_mask

    anatomy, acq, (image, cord, _) = _render(5, contrast)
    gm = render_tissue_mask(anatomy, acq, Tissue.GM)
    assert gm.shape == image.shape and np.allclose(gm.affine, image.affine)
    gm_m, cord_m = np.asarray(gm.dataobj) > 0, np.asarray(cord.dataobj) > 0
    share = gm_m.sum() / cord_m.sum()
    assert 0.05 < share < 0.5, f"grey matter is {share:.2f} of the cord"
    # Half-covered voxels of a tissue inside the cord may spill at most one voxel past its mask.
    from scipy import ndimage

    assert not np.any(gm_m & ~ndimage.binary_dilation(cord_m))


def test_grey_matter_labels_leave_the_images_unchanged(tmp_path):
    kw = dict(n_subjects=1, contrasts=("T1w",), seed=7, fov_scale=0.4)
    plain = generate_dataset(tmp_path / "plain", **kw)
    with_gm = generate_dataset(tmp_path / "gm", grey_matter=True, **kw)
    rel = "sub-01/anat/sub-01_T1w.nii.gz"
    assert np.array_equal(np.asarray(nib.load(plain / rel).dataobj), np.asarray(nib.load(with_gm / rel).dataobj))
    labels = with_gm / "derivatives/labels/sub-01/anat"
    assert (labels / "sub-01_T1w_gmseg-manual.nii.gz").exists() and (labels / "sub-01_T1w_gmseg-manual.json").exists()
    assert not list((plain / "derivatives/labels").rglob("*gmseg*"))


@pytest.mark.parametrize("contrast", ["T2starw", "T1w"])
def test_grey_matter_contrast_places_grey_matter_between_white_matter_and_lesion(contrast):
    """t = 0 gives grey matter white matter's intensity, t = 1 a lesion's (the training data that tells them apart)."""
    from bids_sclesion.phantoms.acquisition import render_tissue_mask

    means = {}
    for t in (0.0, 1.0):
        rng = np.random.default_rng(3)
        anatomy = random_anatomy(rng, brainstem=False)
        anatomy.lesions = []
        acq = random_acquisition(rng, contrast, anatomy, 110.0, fov_scale=0.4)
        acq.snr, acq.bias_amplitude = 1e6, 0.0
        image, cord, _ = render_image(rng, anatomy, acq, grey_matter_contrast=t)
        from scipy import ndimage

        data = np.asarray(image.dataobj, np.float64)
        gm = np.asarray(render_tissue_mask(anatomy, acq, Tissue.GM).dataobj) > 0  # half-covered: partial volume
        wm = ndimage.binary_erosion(np.asarray(cord.dataobj) > 0) & ~ndimage.binary_dilation(gm)
        means[t] = data[gm].mean() / data[wm].mean()
    assert means[0.0] == pytest.approx(1.0, abs=0.1)
    # A lesion is brighter than white matter on T2*w and darker on T1w; so is grey matter at t = 1.
    # (partial volume with white matter keeps the thin horns of a 1 mm T1w from the full lesion contrast).
    assert (means[1.0] > means[0.0] + 0.25) if contrast == "T2starw" else (means[1.0] < means[0.0] - 0.1), means


def test_varied_grey_matter_changes_shape_and_adds_lesions_on_it(tmp_path):
    from bids_sclesion.phantoms.grey_matter import GREY_MATTER_HORNS, grey_matter_lesions, vary_grey_matter

    rng = np.random.default_rng(4)
    anatomy = random_anatomy(rng, brainstem=False)
    xs = ys = np.arange(-10, 10, 0.2)
    zs = np.array([0.0])
    reference = (anatomy.render(xs, ys, zs)[0] == Tissue.GM).sum()
    anatomy.gm_width = 1.4
    assert (anatomy.render(xs, ys, zs)[0] == Tissue.GM).sum() > 1.2 * reference
    vary_grey_matter(rng, anatomy)
    assert 0.75 <= anatomy.gm_width <= 1.4 and abs(anatomy.gm_shift) <= 0.08
    lesions = grey_matter_lesions(rng, anatomy, (-60.0, 60.0), 40)
    horns = np.array(GREY_MATTER_HORNS)
    for les in lesions:
        distance = np.min(np.hypot(abs(les.u) - horns[:, 0], les.v - anatomy.gm_shift - horns[:, 1]))
        assert distance < 0.5, "a grey matter lesion is centred near a horn"
    # The option changes the images; without it they stay those of earlier versions.
    kw = dict(n_subjects=1, contrasts=("T2starw",), seed=7, fov_scale=0.4)
    plain = generate_dataset(tmp_path / "plain", **kw)
    varied = generate_dataset(tmp_path / "varied", varied_grey_matter=True, **kw)
    rel = "sub-01/anat/sub-01_T2starw.nii.gz"
    assert not np.array_equal(np.asarray(nib.load(plain / rel).dataobj), np.asarray(nib.load(varied / rel).dataobj))


def test_tissue_labels_cover_anatomy():
    rng = np.random.default_rng(0)
    anatomy = random_anatomy(rng, brainstem=True)
    xs, ys, zs = np.arange(-40, 40, 1.0), np.arange(-40, 60, 1.0), np.arange(-100, 110, 2.0)
    labels, cord, lesion = anatomy.render(xs, ys, zs)
    present = set(np.unique(labels).tolist())
    for t in (Tissue.CSF, Tissue.WM, Tissue.GM, Tissue.MARROW, Tissue.DISC, Tissue.MUSCLE, Tissue.FAT, Tissue.BRAIN):
        assert int(t) in present, t.name
    # Cord ground truth stops at the foramen magnum (brainstem excluded).
    assert not cord[:, :, zs > anatomy.foramen_z].any()


def test_dataset_layout_and_sessions(synth_longitudinal):
    root = synth_longitudinal
    assert json.loads((root / "dataset_description.json").read_text())["DatasetType"] == "raw"
    imgs = sorted(root.glob("sub-01/ses-*/anat/*_T2w.nii.gz"))
    assert [p.parent.parent.name for p in imgs] == ["ses-01", "ses-02"]
    gt = root / "derivatives/labels/sub-01/ses-02/anat/sub-01_ses-02_T2w_lesion-manual.json"
    meta = json.loads(gt.read_text())
    statuses = {les["status"] for les in meta["Lesions"]}
    assert statuses <= {"stable", "enlarging", "shrinking", "new"}
    base_path = root / "derivatives/labels/sub-01/ses-01/anat/sub-01_ses-01_T2w_lesion-manual.json"
    base = json.loads(base_path.read_text())
    assert {les["status"] for les in base["Lesions"]} <= {"baseline"}


@pytest.mark.skipif(not validator_available(), reason="bids-validator-deno is not installed")
def test_generated_dataset_is_bids_valid(tmp_path):
    out = generate_dataset(tmp_path / "ds", n_subjects=1, contrasts=("T2w", "PSIR", "T2starw"), seed=2, fov_scale=0.4)
    assert (out / ".bidsignore").read_text().count("PSIR") == 1
    proc = subprocess.run(["bids-validator-deno", "--format", "json", str(out)], capture_output=True, text=True)
    issues = json.loads(proc.stdout)["issues"]["issues"]
    errors = [i for i in issues if i["severity"] == "error"]
    assert errors == [], errors


def test_subjects_made_in_processes_are_the_files_of_one_process(tmp_path):
    serial = generate_dataset(tmp_path / "serial", 3, contrasts=("T2w", "T2starw"), seed=31, fov_scale=0.4)
    pooled = generate_dataset(tmp_path / "pooled", 3, contrasts=("T2w", "T2starw"), seed=31, fov_scale=0.4, jobs=2)
    files = sorted(p.relative_to(serial) for p in serial.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(pooled) for p in pooled.rglob("*") if p.is_file())
    assert len([f for f in files if f.name.endswith("_T2w.nii.gz")]) == 3
    for rel in files:
        if rel.suffix == ".gz":
            a, b = nib.load(str(serial / rel)), nib.load(str(pooled / rel))
            assert np.array_equal(np.asarray(a.dataobj), np.asarray(b.dataobj)) and np.allclose(a.affine, b.affine)
        else:
            assert (serial / rel).read_text() == (pooled / rel).read_text(), rel


def test_realistic_lesions_follow_the_shape_rules_inside_the_cord():
    from bids_sclesion.phantoms.anatomy import realistic_lesions

    rng = np.random.default_rng(5)
    anatomy = random_anatomy(rng, brainstem=False)
    anatomy.lesions = realistic_lesions(rng, anatomy, (-60.0, 80.0), 12)
    assert {les.shape for les in anatomy.lesions} <= {"oval", "wedge"}
    xs = np.arange(-15, 15, 0.5)
    ys = np.arange(-15, 25, 0.5)
    zs = np.arange(-70, 95, 0.5)
    _, cord, lesion = anatomy.render(xs, ys, zs)
    assert lesion.max() > 0.5 and not np.any((lesion > 0) & ~cord), "lesions only inside the cord"
    for les in anatomy.lesions:
        assert 3.0 <= 2 * les.half_length_mm <= 30.0
        # A lesion's own extent along the cord stays within its drawn length (plus the soft edge).
        alone = [les]
        anatomy.lesions, saved = alone, anatomy.lesions
        _, _, own = anatomy.render(xs, ys, zs)
        anatomy.lesions = saved
        heights = zs[np.any(own > 0.5, axis=(0, 1))]
        if heights.size:
            assert heights.max() - heights.min() <= 2 * les.half_length_mm + 1.5
            # Less than half of the cord's cross-section in any slice.
            share = (own > 0.5).sum(axis=(0, 1)) / np.maximum(cord.sum(axis=(0, 1)), 1)
            assert share.max() <= 0.55


def test_realistic_lesions_option_changes_lesions_only(tmp_path):
    kw = dict(n_subjects=1, contrasts=("T2w",), seed=7, fov_scale=0.4)
    plain = generate_dataset(tmp_path / "plain", **kw)
    shaped = generate_dataset(tmp_path / "shaped", realistic_lesions=True, **kw)
    labels = "derivatives/labels/sub-01/anat/sub-01_T2w"
    cord = [np.asarray(nib.load(f"{root}/{labels}_seg-manual.nii.gz").dataobj) for root in (plain, shaped)]
    assert np.array_equal(*cord), "the same anatomy"
    lesions = [json.loads((root / f"{labels}_lesion-manual.json").read_text())["Lesions"] for root in (plain, shaped)]
    assert lesions[0] is not None and len(lesions[0]) == len(lesions[1])
    assert all("shape" not in les for les in lesions[0]), "the default sidecar is that of earlier versions"
    assert all(les["shape"] in ("oval", "wedge") for les in lesions[1])


def test_a_spine_drawn_after_real_anatomy():
    """Per-disc heights with an annulus around a nucleus of its own size, thin endplates, the dens rising
    from C2 to its tip below the foramen magnum; the default phantoms are untouched by the option."""
    from bids_sclesion.phantoms.anatomy import Tissue
    from bids_sclesion.phantoms.spine import random_real_spine

    rng = np.random.default_rng(11)
    anatomy = random_anatomy(rng, brainstem=True)
    default_labels = anatomy.render(np.array([0.0]), np.arange(-10.0, 40.0, 0.5), np.arange(-150.0, 100.0, 0.5))[0]
    anatomy.spine = random_real_spine(np.random.default_rng(1), len(anatomy.disc_z))
    zs = np.arange(-150.0, 100.0, 0.25)
    cx, cy = anatomy.centerline(zs)
    # A column through the middle of the vertebral bodies (the cord is nearly straight here).
    canal_ry = anatomy.cord_r_ap + anatomy.canal_margin_ap
    body_v = 0.6 + canal_ry + 2.0 + anatomy.body_r_ap
    nucleus_v = body_v - 0.1 * anatomy.body_r_ap  # the nucleus's centre
    column = np.array([anatomy.render(np.array([cx[k]]), np.array([cy[k] + nucleus_v]), np.array([z]))[0][0, 0, 0]
                       for k, z in enumerate(zs)])
    for i, (z, half) in enumerate(zip(anatomy.disc_z, anatomy.spine.disc_half_heights)):
        if not zs[0] + 10 < z < zs[-1] - 10:
            continue
        in_disc = np.abs(zs - z) < half - 0.3
        assert np.isin(column[in_disc], [Tissue.LIGAMENT, Tissue.DISC]).all(), i
        if anatomy.spine.nucleus_fractions[i] > 0.1:
            assert (column[in_disc] == Tissue.DISC).any(), i
        endplate = (np.abs(zs - z) > half + 0.1) & (np.abs(zs - z) < half + 0.7)
        assert (column[endplate] == Tissue.CORTICAL).all(), i
    tip = anatomy.foramen_z - anatomy.spine.dens_tip_below_foramen
    dens_v = body_v - 0.35 * anatomy.body_r_ap
    k = int(np.argmin(np.abs(zs - (tip - 6.0))))
    assert anatomy.render(np.array([cx[k]]), np.array([cy[k] + dens_v]), np.array([zs[k]]))[0][0, 0, 0] in (
        Tissue.MARROW, Tissue.CORTICAL)
    k = int(np.argmin(np.abs(zs - (tip + 1.5))))
    assert anatomy.render(np.array([cx[k]]), np.array([cy[k] + dens_v]), np.array([zs[k]]))[0][0, 0, 0] not in (
        Tissue.MARROW, Tissue.CORTICAL)
    anatomy.spine = None
    again = anatomy.render(np.array([0.0]), np.arange(-10.0, 40.0, 0.5), np.arange(-150.0, 100.0, 0.5))[0]
    assert np.array_equal(default_labels, again)


def test_realistic_spine_option_changes_the_spine_only(tmp_path):
    kw = dict(n_subjects=1, contrasts=("T2w",), seed=7, fov_scale=0.4)
    plain = generate_dataset(tmp_path / "plain", **kw)
    spine = generate_dataset(tmp_path / "spine", realistic_spine=True, **kw)
    labels = "derivatives/labels/sub-01/anat/sub-01_T2w"
    for suffix in ("seg-manual", "lesion-manual"):
        truth = [np.asarray(nib.load(f"{root}/{labels}_{suffix}.nii.gz").dataobj) for root in (plain, spine)]
        assert np.array_equal(*truth), suffix
    images = [np.asarray(nib.load(f"{root}/sub-01/anat/sub-01_T2w.nii.gz").dataobj) for root in (plain, spine)]
    assert not np.array_equal(*images), "the vertebrae differ"


def test_t2w_3d_share_makes_isotropic_t2w_and_leaves_other_images(tmp_path):
    kw = dict(n_subjects=1, contrasts=("T2w", "STIR"), seed=7, fov_scale=0.4)
    plain = generate_dataset(tmp_path / "plain", **kw)
    three_d = generate_dataset(tmp_path / "3d", t2w_3d_share=1.0, **kw)
    zooms = [nib.load(f"{root}/sub-01/anat/sub-01_T2w.nii.gz").header.get_zooms() for root in (plain, three_d)]
    assert sorted(zooms[0])[-1] == pytest.approx(3.0), "2D sagittal TSE by default"
    assert np.allclose(zooms[1], 1.0), "1 mm isotropic with the option"
    stir = [np.asarray(nib.load(f"{root}/sub-01/anat/sub-01_STIR.nii.gz").dataobj) for root in (plain, three_d)]
    assert np.array_equal(*stir), "the other contrasts are those of the same seed"
    with pytest.raises(ValueError, match="t2w_3d_share"):
        generate_dataset(tmp_path / "bad", t2w_3d_share=1.5, **kw)
    with pytest.raises(ValueError, match="plane"):
        random_acquisition(np.random.default_rng(0), "T2w", random_anatomy(np.random.default_rng(0)), 110.0,
                           plane="coronal")
