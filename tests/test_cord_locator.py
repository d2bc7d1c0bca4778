"""The cord locator: a coarse model boxes the cord, the whole-image model runs inside the box only."""
from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from bids_sclesion.core.image import resample_to_grid
from bids_sclesion.model.io import LoadedModel
from bids_sclesion.model.segment import box_on_grid, locate_cord, segment_image


class Threshold(torch.nn.Module):
    """A voxel-wise 'network': cord and lesion where the normalised input exceeds ``level``."""

    def __init__(self, level: float):
        super().__init__()
        self.level = level

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = (x[:, :1] - self.level) * 40.0
        return torch.cat([logits, logits], dim=1)


def fake_model(level: float, spacing: float) -> LoadedModel:
    metadata = {"name": f"threshold-{level}", "spacing_mm": [spacing] * 3,
                "network": {"channels": [4, 8], "strides": [2]},
                "inference": {"roi_size": [16, 16, 16], "overlap": 0.25}}
    return LoadedModel(Threshold(level), metadata, Path("fake"))


def cord_and_blob_image() -> nib.Nifti1Image:
    """1 mm image: a bright cord along z at the centre and a dimmer blob near a corner, on a noisy background."""
    rng = np.random.default_rng(0)
    data = rng.uniform(0.0, 0.2, (48, 48, 64)).astype(np.float32)
    x, y, z = np.meshgrid(*(np.arange(n) for n in data.shape), indexing="ij")
    data[((x - 24) ** 2 + (y - 24) ** 2 <= 9) & (z >= 8) & (z < 56)] = 1.0
    data[(x - 4) ** 2 + (y - 4) ** 2 + (z - 32) ** 2 <= 4] = 0.5
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    affine[:3, 3] = (-20.0, 5.0, 100.0)
    return nib.Nifti1Image(data, affine)


def test_the_model_runs_only_in_the_box_the_locator_draws_around_the_cord():
    img = cord_and_blob_image()
    model = fake_model(0.35, 1.0)  # takes the cord and the blob
    locator = fake_model(0.75, 2.0)  # finds the cord only, on a 2 mm grid
    cord_whole, _ = segment_image(img, model, precision="float32")
    cord_boxed, lesion_boxed = segment_image(img, model, precision="float32", locator=locator)

    blob = np.zeros(img.shape, bool)
    blob[2:7, 2:7, 30:35] = True
    assert cord_whole[blob].max() > 0.9  # the whole-image model calls the blob cord ...
    assert cord_boxed[blob].max() == 0.0 and lesion_boxed[blob].max() == 0.0  # ... not inside the locator's box
    tube = cord_whole >= 0.5
    tube[blob] = False
    assert tube.sum() > 1000
    np.testing.assert_allclose(cord_boxed[tube], cord_whole[tube], atol=1e-5)  # the cord itself is unchanged

    box = locate_cord(img, locator, precision="float32")
    # 10 mm around the cord (x, y 21-27, z 8-55 at 1 mm), to within one 2 mm voxel of the locator's grid.
    origin = img.affine[:3, 3]
    np.testing.assert_allclose(box[0] - origin, (21 - 0.5 - 10, 21 - 0.5 - 10, 8 - 0.5 - 10), atol=2.01)
    np.testing.assert_allclose(box[1] - origin, (27 + 0.5 + 10, 27 + 0.5 + 10, 55 + 0.5 + 10), atol=2.01)


def test_a_locator_that_finds_no_cord_leaves_the_whole_image_to_the_model(caplog):
    img = cord_and_blob_image()
    model = fake_model(0.35, 1.0)
    assert locate_cord(img, fake_model(5.0, 2.0), precision="float32") is None
    with caplog.at_level("INFO", logger="bids_sclesion"):
        cord, _ = segment_image(img, model, precision="float32", locator=fake_model(5.0, 2.0))
    assert "found no cord" in caplog.text
    np.testing.assert_array_equal(cord, segment_image(img, model, precision="float32")[0])


@pytest.mark.parametrize("flip", [False, True])
def test_box_on_grid_covers_the_voxels_the_box_overlaps(flip):
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (10.0, -4.0, 0.0)
    if flip:  # a grid whose first axis runs right to left: the box is the same set of places
        affine[0, 0], affine[0, 3] = -2.0, 10.0 + 2.0 * 19
    shape = (20, 10, 8)
    box = np.array([[13.5, -10.0, 4.0], [19.0, 2.9, 100.0]])
    region = box_on_grid(box, affine, shape)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), -1).reshape(-1, 3)
    centres = nib.affines.apply_affine(affine, ijk)
    half = np.abs(np.diag(affine)[:3]) / 2
    overlaps = np.all((centres + half > box[0]) & (centres - half < box[1]), axis=1).reshape(shape)
    inside = np.zeros(shape, bool)
    inside[region] = True
    np.testing.assert_array_equal(inside, overlaps)


def test_resampling_onto_the_same_grid_copies_the_data():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(6, 7, 8)).astype(np.float32)
    affine = np.diag([1.0, 1.0, 1.0, 1.0])
    out = resample_to_grid(data, affine, data.shape, affine.copy())
    np.testing.assert_array_equal(out, data)
    assert out is not data and not np.shares_memory(out, data)
    shifted = affine.copy()
    shifted[0, 3] = 0.5  # half a voxel over: interpolated, not copied
    assert not np.array_equal(resample_to_grid(data, affine, data.shape, shifted), data)


def test_a_box_smaller_than_the_window_grows_to_it_within_the_grid():
    from bids_sclesion.model.segment import at_least

    grown = at_least((slice(10, 20), slice(0, 5), slice(30, 90)), (16, 16, 16), (100, 12, 100))
    assert grown == (slice(7, 23), slice(0, 12), slice(30, 90))
    assert at_least((slice(95, 100),), (16,), (100,)) == (slice(84, 100),)
