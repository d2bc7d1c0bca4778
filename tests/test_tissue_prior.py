"""The grey/white matter prior fitted to a straightened cord (core.tissue_prior) and stage 2 taking it."""
import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from bids_sclesion.core.tissue_prior import (CrossSectionTemplate, fitted_sections, load_template,
                                             section_moments, template_from_maps, tissue_prior)
from bids_sclesion.model.network import NetworkConfig, build_network, load_pretrained

SPACING = (0.5, 0.5, 1.0)
GM_CHALLENGE = Path(__file__).resolve().parents[2] / "shared" / "data" / "gm-challenge-bids"


def _ellipse_cord(shape=(64, 64, 40), semi_mm=(6.5, 4.5), centre=(31.5, 31.5), slices=slice(5, 35)):
    u, v = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    section = ((u - centre[0]) * SPACING[0] / semi_mm[0]) ** 2 + ((v - centre[1]) * SPACING[1] / semi_mm[1]) ** 2 <= 1
    mask = np.zeros(shape, bool)
    mask[:, :, slices] = section[:, :, None]
    return mask


def test_second_moments_give_an_ellipse_its_semi_axes():
    centre, semi, area = section_moments(_ellipse_cord(), SPACING[:2])
    assert np.allclose(semi[20], (6.5, 4.5), atol=0.15)
    assert np.allclose(centre[20], (15.75, 15.75), atol=1e-6)
    assert area[20] == pytest.approx(np.pi * 6.5 * 4.5, rel=0.03)
    assert area[0] == 0


def test_fitted_sections_bridge_a_missing_slice_and_stop_at_the_cord_ends():
    mask = _ellipse_cord()
    mask[:, :, 20] = False  # stage 1 missed a slice
    centre, semi, inside = fitted_sections(mask, SPACING)
    assert inside[5:35].all() and not inside[:5].any() and not inside[35:].any()
    assert np.allclose(semi[20], semi[19], rtol=0.05), "the missing slice takes its neighbours' fit"


def test_prior_sits_inside_the_cord_and_follows_its_size():
    template = load_template()
    mask = _ellipse_cord()
    prior = tissue_prior(mask, SPACING, template)
    assert prior.shape == (2,) + mask.shape
    grey, white = prior
    assert grey[~mask].max() < 0.05, "no grey matter expected outside the cord"
    assert 0.1 < grey[mask].mean() < 0.3, "grey matter is a fifth or so of the cross-section"
    assert white[mask].mean() > 0.6
    assert not prior[:, :, :, :5].any(), "no prior where there is no cord"
    bigger = tissue_prior(_ellipse_cord(semi_mm=(8.0, 5.5)), SPACING, template)[0]
    assert (bigger > 0.5).sum() > 1.3 * (grey > 0.5).sum()


def test_prior_is_left_right_symmetric_and_not_front_back():
    grey = tissue_prior(_ellipse_cord(), SPACING, load_template())[0][:, :, 20]
    assert np.abs(grey - grey[::-1]).max() < 0.25
    assert np.abs(grey - grey[:, ::-1]).mean() > 2 * np.abs(grey - grey[::-1]).mean()


def test_template_from_maps_reads_world_directions():
    # A straight cord with "grey matter" in its anterior half only, stored with the voxel axes reversed.
    mask = _ellipse_cord(shape=(64, 64, 10), slices=slice(0, 10)).astype(np.float32)
    anterior = np.zeros_like(mask)
    anterior[:, 32:] = mask[:, 32:]
    affine = np.diag([-0.5, -0.5, 1.0, 1.0])  # voxel axes run left and posterior
    t = template_from_maps(anterior[::-1, ::-1], (mask - anterior)[::-1, ::-1], mask[::-1, ::-1], affine,
                           np.arange(10))
    c = t.coords
    middle = np.abs(c) < 0.5
    assert t.grey[np.ix_(middle, (c > 0.3) & (c < 0.8))].min() > 0.8, "anterior is +y"
    assert t.grey[:, c < -0.2].max() < 0.05
    assert CrossSectionTemplate.from_dict(t.to_dict()).grey.shape == t.grey.shape


def test_bad_template_file_is_named(tmp_path):
    bad = tmp_path / "t.json"
    bad.write_text('{"grey": [[1, 2]], "white": [[1, 2]], "extent": 1}')
    with pytest.raises(ValueError, match="t.json"):
        load_template(bad)


def test_new_prior_inputs_leave_the_pretrained_network_unchanged():
    torch.manual_seed(0)
    old_cfg = NetworkConfig(channels=(4, 8, 16), strides=(2, 2))
    old = build_network(old_cfg).eval()
    new = build_network(dataclasses.replace(old_cfg, in_channels=3)).eval()
    load_pretrained(new, old.state_dict(), pretrained=old)
    x = torch.rand(1, 1, 16, 16, 16)
    with torch.no_grad():
        assert torch.allclose(old(x), new(torch.cat([x, torch.rand(1, 2, 16, 16, 16)], 1)), atol=1e-6)


def test_network_config_refuses_other_input_counts():
    with pytest.raises(ValueError, match="in_channels"):
        NetworkConfig.from_dict({"in_channels": 2})
    assert "in_channels" not in NetworkConfig().to_dict(), "one-input models keep their model.json as before"


@pytest.mark.skipif(not GM_CHALLENGE.is_dir(), reason="../shared/data/gm-challenge-bids is absent")
def test_prior_fitted_to_real_cords_overlaps_their_manual_grey_matter():
    import nibabel as nib

    from bids_sclesion.model.cascade import StraightSpace, straighten_labels

    template = load_template()
    for sub in ("9418", "9584", "9604"):
        img = nib.as_closest_canonical(nib.load(GM_CHALLENGE / f"sub-{sub}/anat/sub-{sub}_run-1_T2starw.nii.gz"))
        labels = GM_CHALLENGE / f"derivatives/labels/sub-{sub}/anat/sub-{sub}_run-1_T2starw"
        cord = nib.as_closest_canonical(nib.load(f"{labels}_seg-manual.nii.gz")).get_fdata() > 0.5
        gm = nib.as_closest_canonical(nib.load(f"{labels}_gmseg-manual.nii.gz")).get_fdata() > 0.5
        _, straight = straighten_labels(img, cord, np.zeros_like(cord), StraightSpace(), extra=[gm])
        grey = tissue_prior(straight[0], SPACING, template)[0]
        gm_straight, white_straight = straight[2], straight[0] & ~straight[2]
        # Measured 0.69-0.76 in manual grey matter against 0.10-0.11 in white matter; front-back flipped, 0.37-0.43.
        assert grey[gm_straight].mean() > 0.6 > 0.2 > grey[white_straight].mean()


def _train_straight(bids, out, cache, *extra):
    from bids_sclesion.cli.train import main as train_main

    return train_main([str(bids), str(out), "--contrast", "T2w", "--space", "straight", "--iterations", "2",
                       "--val-every", "2", "--val-fraction", "0.5", "--channels", "4", "8", "16",
                       "--patch-size", "32", "32", "32", "-w", str(cache), "--nthreads", "1", *extra])


def test_stage2_trained_with_the_prior_segments_with_it(synth_two_subjects, tmp_path):
    from bids_sclesion.model.cascade import segment_straightened
    from bids_sclesion.model.io import load_model

    plain = tmp_path / "plain"
    assert _train_straight(synth_two_subjects, plain, tmp_path / "cache") == 0
    assert not load_model(plain).uses_tissue_prior
    tuned = tmp_path / "tuned"
    assert _train_straight(synth_two_subjects, tuned, tmp_path / "cache", "--init-from", str(plain),
                           "--tissue-prior") == 0
    model = load_model(tuned)
    assert model.uses_tissue_prior
    from bids_sclesion.model.metadata import weights_sha256

    assert model.metadata["training"]["init_from_sha256"] == weights_sha256(plain)
    assert model.metadata["weights_sha256"] == weights_sha256(tuned)
    assert model.metadata["inputs"] == ["image", "grey_matter_prior", "white_matter_prior"]
    assert model.metadata["network"]["in_channels"] == 3
    # Fine-tuned again without asking: a model that took the prior keeps it.
    again = tmp_path / "again"
    assert _train_straight(synth_two_subjects, again, tmp_path / "cache", "--init-from", str(tuned)) == 0
    assert load_model(again).uses_tissue_prior
    volume = np.random.default_rng(0).random((64, 64, 40)).astype(np.float32)
    with pytest.raises(ValueError, match="straightened cord mask"):
        segment_straightened(volume, model)
    prob = segment_straightened(volume, model, cord=_ellipse_cord())
    assert prob.shape == (2, 64, 64, 40) and np.isfinite(prob).all()


def test_the_prior_is_for_stage_2_only(synth_two_subjects, tmp_path, capsys):
    from bids_sclesion.cli.train import main as train_main

    assert train_main([str(synth_two_subjects), str(tmp_path / "m"), "--contrast", "T2w", "--tissue-prior",
                       "--iterations", "1", "--channels", "4", "8", "16", "--nthreads", "1"]) == 1
    assert "--space straight" in capsys.readouterr().err
