"""Vertebral levels: template matching, the level map against the phantoms' exact discs, real landmarks."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from bids_sclesion.core.centerline import extract_centerline
from bids_sclesion.core.vertebrae import (Disc, NoDiscFound, disc_template, discs_from_labels, find_discs,
                                          level_map, match_template, segment_lengths)
from bids_sclesion.phantoms import random_acquisition, random_anatomy, render_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SCT_T2W = SHARED / "sct-t2w-bids"


@pytest.mark.parametrize("scale,start_mm", [(1.0, 150.0), (1.12, 120.0), (0.86, 200.0)])
def test_matching_recovers_a_stretched_part_of_the_template(scale, start_mm):
    template = disc_template()["profile"]
    axis = np.arange(len(template))
    # An "image" profile: 220 mm of the template from start_mm up, stretched by scale.
    s = np.arange(0, 220 * scale)
    image = np.interp(start_mm + s / scale, axis, np.nan_to_num(template))
    r, found_scale, offset = match_template(image, template)
    assert r > 0.95
    assert found_scale == pytest.approx(scale, abs=0.021)
    assert offset == pytest.approx(start_mm, abs=2.0)


def _phantom_discs(anatomy, centerline, shift_z: float) -> list[Disc]:
    """The phantom's exact discs (label 3 = C2/C3 first) at their positions along the centreline."""
    discs = []
    for k, z in enumerate(anatomy.disc_z):
        z = z + shift_z
        if centerline.points[0, 2] <= z <= centerline.points[-1, 2]:
            j = int(np.argmin(np.abs(centerline.points[:, 2] - z)))
            discs.append(Disc(k + 3, j * centerline.step_mm, tuple(centerline.points[j])))
    return discs


@pytest.mark.parametrize("seed", [2, 3])
def test_level_map_agrees_with_the_phantom_vertebrae(seed):
    """Given the discs, each cord voxel gets the level of the vertebra it lies in (SCT numbering)."""
    rng = np.random.default_rng(seed)
    anatomy = random_anatomy(rng, fov_top=110.0)
    acq = random_acquisition(rng, "T2w", anatomy, 110.0)
    image, cord_img, _ = render_image(rng, anatomy, acq)[:3]
    cord = np.asarray(cord_img.dataobj) > 0
    centerline = extract_centerline(cord.astype(np.float32), image.affine)
    discs = _phantom_discs(anatomy, centerline, acq.shift[2])
    assert len(discs) >= 4
    levels = level_map(cord, image.affine, centerline, discs)
    z = (np.argwhere(cord) @ image.affine[:3, :3].T + image.affine[:3, 3])[:, 2] - acq.shift[2]
    disc_z = np.asarray(anatomy.disc_z)
    truth = np.array([3 + int(np.sum(disc_z > zz)) - 1 for zz in z])  # between disc n and n + 1: level n
    found = levels[cord]
    bounded = (z < disc_z[0]) & (z > min(d.point_mm[2] for d in discs) - acq.shift[2])
    agreement = np.mean(found[bounded] == truth[bounded])
    assert agreement >= 0.95, agreement


def test_a_short_axial_slab_gets_no_level():
    rng = np.random.default_rng(5)
    anatomy = random_anatomy(rng, fov_top=110.0)
    acq = random_acquisition(rng, "T2starw", anatomy, 110.0)
    image, cord_img, _ = render_image(rng, anatomy, acq)[:3]
    cord = np.asarray(cord_img.dataobj) > 0
    centerline = extract_centerline(cord.astype(np.float32), image.affine)
    with pytest.raises(NoDiscFound, match="mm of the spine"):
        find_discs(np.asarray(image.dataobj, np.float32), image.affine, centerline)


def _realistic_spine_phantom(seed: int, contrast: str):
    """Subject ``seed - 1000`` of the morphometry benchmark's phantoms with a spine drawn after real anatomy."""
    from bids_sclesion.phantoms.spine import REALISTIC_SPINE_STREAM, random_real_spine

    rng = np.random.default_rng(seed)
    anatomy = random_anatomy(rng, fov_top=110.0)
    anatomy.spine = random_real_spine(np.random.default_rng([seed, REALISTIC_SPINE_STREAM]), len(anatomy.disc_z))
    acq = random_acquisition(rng, contrast, anatomy, 110.0)
    image, cord_img, _ = render_image(rng, anatomy, acq)[:3]
    centerline = extract_centerline((np.asarray(cord_img.dataobj) > 0).astype(np.float32), image.affine)
    return np.asarray(image.dataobj, np.float32), image.affine, centerline, anatomy, acq


def test_a_match_that_leaves_too_much_cord_above_c2c3_is_refused():
    """Subject 0's skull base is above the field of view; the template once numbered its thoracic discs as
    cervical ones (C2/C3 placed 125 mm too low, 117 mm of cord above it). A phantom whose match is right keeps it."""
    data, affine, centerline, _, _ = _realistic_spine_phantom(1000, "T2w")
    with pytest.raises(NoDiscFound, match="mm of cord above its C2/C3 disc"):
        find_discs(data, affine, centerline)
    data, affine, centerline, anatomy, acq = _realistic_spine_phantom(1002, "T1w")
    match = find_discs(data, affine, centerline)
    errors = [d.point_mm[2] - acq.shift[2] - anatomy.disc_z[d.label - 3] for d in match.discs
              if 3 <= d.label < 3 + len(anatomy.disc_z)]
    assert len(errors) >= 5 and np.median(np.abs(errors)) < 4.0


def test_user_disc_labels_are_put_on_the_centreline():
    cord = np.zeros((20, 20, 100), bool)
    cord[8:12, 8:12, :] = True
    centerline = extract_centerline(cord.astype(np.float32), np.eye(4))
    labels = np.zeros(cord.shape, np.uint8)
    labels[10, 14, 80] = 3  # an SCT disc label beside the cord
    labels[10, 14, 62] = 4
    discs = discs_from_labels(labels, np.eye(4), centerline)
    assert [d.label for d in discs] == [3, 4]
    assert discs[0].position_mm == pytest.approx(80 - centerline.points[0, 2], abs=1.0)
    levels = level_map(cord, np.eye(4), centerline, discs)
    assert levels[10, 10, 70] == 3 and levels[10, 10, 85] == 2 and levels[10, 10, 55] == 4
    assert levels[10, 10, 20] == 0, "far below the last disc: no level"


@pytest.mark.realdata
@pytest.mark.skipif(not SCT_T2W.is_dir(), reason="../shared/data/sct-t2w-bids is absent (real landmarks)")
def test_real_landmarks_fall_in_their_levels():
    """C2 and T2 landmarks of the real 3D T2w scans (never used to build the template) get levels 2 and 9."""
    points = sorted(SCT_T2W.glob("derivatives/labels/*/anat/*_label-vertebral_points.nii.gz"))
    assert len(points) == 4
    for path in points:
        sub = path.name.split("_")[0]
        image = nib.load(str(SCT_T2W / sub / "anat" / f"{sub}_T2w.nii.gz"))
        cord = np.asarray(nib.load(str(path).replace("label-vertebral_points", "seg-manual")).dataobj) > 0
        centerline = extract_centerline(cord.astype(np.float32), image.affine)
        match = find_discs(np.asarray(image.dataobj, np.float32), image.affine, centerline)
        levels = level_map(cord, image.affine, centerline, match.discs, segment_lengths(match))
        landmarks = np.asarray(nib.load(str(path)).dataobj)
        for value in (2, 9):
            assert levels[tuple(np.argwhere(landmarks == value)[0])] == value, (sub, value)

