"""Stage 1's fallback: a second whole-image model segments the image where the first finds no plausible cord."""
from __future__ import annotations

import numpy as np
import pytest

from bids_sclesion.model.segment import segment_image, segment_with_fallback
from tests.test_cord_locator import cord_and_blob_image, fake_model


class Exploding:
    """A model that must not run."""

    name = "never"

    def __getattr__(self, item):
        raise AssertionError(f"the fallback ran ({item})")


def test_a_plausible_cord_keeps_the_first_model_and_never_runs_the_fallback():
    img = cord_and_blob_image()
    model = fake_model(0.75, 1.0)
    cord, lesion, used = segment_with_fallback(img, model, Exploding(), precision="float32")
    assert used is model
    np.testing.assert_array_equal(cord, segment_image(img, model, precision="float32")[0])
    assert (cord >= 0.5).sum() > 1000


def test_no_cord_from_the_first_model_is_segmented_again_by_the_fallback(caplog):
    img = cord_and_blob_image()
    blind, fallback = fake_model(5.0, 2.0), fake_model(0.75, 1.0)  # the first sees nothing at all
    with caplog.at_level("WARNING", logger="bids_sclesion"):
        cord, lesion, used = segment_with_fallback(img, blind, fallback, precision="float32")
    assert used is fallback
    assert "not plausible" in caplog.text and fallback.name in caplog.text
    np.testing.assert_array_equal(cord, segment_image(img, fallback, precision="float32")[0])
    np.testing.assert_array_equal(lesion, segment_image(img, fallback, precision="float32")[1])


def test_a_fallback_that_finds_no_plausible_cord_either_leaves_the_first_models_maps(caplog):
    img = cord_and_blob_image()
    blind = fake_model(5.0, 2.0)
    with caplog.at_level("WARNING", logger="bids_sclesion"):
        cord, _, used = segment_with_fallback(img, blind, fake_model(6.0, 1.0), precision="float32")
    assert used is blind and cord.max() < 0.5
    assert "no plausible cord either" in caplog.text


def test_without_a_fallback_the_first_models_maps_are_returned_unchecked():
    img = cord_and_blob_image()
    blind = fake_model(5.0, 2.0)
    cord, _, used = segment_with_fallback(img, blind, None, precision="float32")
    assert used is blind and cord.max() < 0.5


@pytest.mark.parametrize("given, expected", [("none", None), ("stage1_2mm", None), ("stage1", "stage1")])
def test_the_fallback_setting_from_the_command_line(given, expected):
    from bids_sclesion.cli.parser import get_parser
    from bids_sclesion.cli.run import absolute_model, fallback_model

    args = get_parser().parse_args(["bids", "out", "participant", "--stage1-fallback", given])
    args.model = absolute_model(args.model)  # the default whole-image model, stage1_2mm
    got = fallback_model(args)
    assert got == (absolute_model(expected) if expected else None)


def test_the_run_summary_warns_about_each_image_whose_cord_the_fallback_made(tmp_path, capsys):
    import json
    from pathlib import Path

    from bids_sclesion.cli.summary import _fallback_warnings
    from bids_sclesion.derivatives import SourceName

    bids, out = tmp_path / "bids", tmp_path / "out"
    images = [bids / "sub-01" / "anat" / f"sub-01_{suffix}.nii.gz" for suffix in ("T1w", "T2w")]
    for image, used in zip(images, (True, False)):
        mask = SourceName(image, bids).outputs(out)["cord_mask"]
        mask.parent.mkdir(parents=True, exist_ok=True)
        model = {"Name": "stage1+stage2", "Stage1": "stage1", **({"Stage1FallbackUsed": True} if used else {})}
        Path(str(mask).replace(".nii.gz", ".json")).write_text(json.dumps({"Model": model}))
    _fallback_warnings(images, bids, out)
    printed = capsys.readouterr().out
    assert "sub-01_T1w.nii.gz: the first stage-1 model found no plausible spinal cord" in printed
    assert "(stage1)" in printed and "T2w" not in printed


def test_the_plausibility_check_gives_the_reason_and_passes_a_cord():
    from bids_sclesion.model.segment import implausible_cord

    img = cord_and_blob_image()
    cord = segment_image(img, fake_model(0.75, 1.0), precision="float32")[0]
    assert implausible_cord(cord, img.affine) is None
    thin = np.zeros(img.shape, np.float32)
    thin[23:25, 23:25, 8:56] = 1.0  # 4 mm2 over 48 mm: far too thin for a spinal cord
    assert "no spinal cord" in implausible_cord(thin, img.affine)
    assert "no voxel above threshold" in implausible_cord(np.zeros(img.shape, np.float32), img.affine)


def test_a_fallback_given_as_a_loader_is_loaded_only_for_an_image_that_needs_it():
    img = cord_and_blob_image()
    loads = []

    def loader():
        loads.append(1)
        return fake_model(0.75, 1.0)

    segment_with_fallback(img, fake_model(0.75, 1.0), loader, precision="float32")
    assert loads == []
    _, _, used = segment_with_fallback(img, fake_model(5.0, 2.0), loader, precision="float32")
    assert loads == [1] and used.name == "threshold-0.75"
