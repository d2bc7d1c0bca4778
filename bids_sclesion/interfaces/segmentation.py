"""Interfaces for the segmentation network and the lesion post-processing."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import isdefined, BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..config import PRECISIONS, STAGE1_FLIPS
from ..core.image import nifti_image, voxel_volume
from ..core.lesions import DEFAULT_THRESHOLD, lesion_table, table_to_tsv, threshold_masks, voxel_uncertainty
from . import WORK_IMAGE


class _SegmentInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="canonical, bias-corrected image")
    model = traits.Str("default", usedefault=True, desc="bundled model name or model directory")
    model_hash = traits.Str(desc="content hash of the model weights (re-runs when the model changes)")
    locator = traits.Str("", usedefault=True,
                         desc="bundled model name or directory of a coarse model that boxes the cord first "
                              "(the model then runs inside the box); empty: the model runs on the whole image")
    locator_hash = traits.Str(desc="content hash of the locator's weights")
    fallback = traits.Str("", usedefault=True,
                          desc="bundled model name or directory of a whole-image model that segments the image again "
                               "where the model's cord cannot be a spinal cord; empty: no second try")
    fallback_hash = traits.Str(desc="content hash of the fallback's weights")
    threshold = traits.Float(DEFAULT_THRESHOLD, usedefault=True, desc="cord probability threshold of the cord mask")
    flips = traits.Enum(*STAGE1_FLIPS, usedefault=True, desc="where the test-time flips run (config.STAGE1_FLIPS)")
    software_version = traits.Str(desc="the app's version and results revision: cached results are recomputed when it changes")
    device = traits.Enum("auto", "cpu", "cuda", usedefault=True, nohash=True)
    precision = traits.Enum(*PRECISIONS, usedefault=True, desc="config.PRECISIONS")
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _SegmentOutputSpec(TraitedSpec):
    cord_prob = File(exists=True, desc="cord probability (the input's grid, or the source grid for stage 2)")
    lesion_prob = File(exists=True, desc="lesion probability (same grid)")
    model_name = traits.Str()
    model_version = traits.Str()
    precision = traits.Str(desc="what the network computed in on this machine: float32, bfloat16 or float16")
    fallback_used = traits.Bool(False, desc="the first model's cord was not plausible: the fallback's maps were kept")


class SegmentCordLesion(SimpleInterface):
    """Run the MONAI network (sliding window) and write cord/lesion probabilities."""

    input_spec = _SegmentInputSpec
    output_spec = _SegmentOutputSpec

    def _run_interface(self, runtime):
        from ..model.io import load_model
        from ..model.segment import segment_with_fallback

        model, device = _load_model(self.inputs)
        locator = load_model(self.inputs.locator, device) if self.inputs.locator else None
        # Loaded only for an image whose cord needs it: most never do.
        fallback = (lambda: load_model(self.inputs.fallback, device)) if self.inputs.fallback else None
        img = nib.load(self.inputs.in_file)
        cord, lesion, used = segment_with_fallback(img, model, fallback, device, self.inputs.precision,
                                                   locator=locator, flips=self.inputs.flips,
                                                   threshold=self.inputs.threshold)
        self._results["fallback_used"] = used is not model
        model = used
        self._results.update(_write_probabilities(runtime.cwd, cord, lesion, img.affine, model))
        self._results["precision"] = _dtype_name(device, self.inputs.precision)
        return runtime


def _load_model(inputs):
    """The model of a segmentation node on its device, torch limited to the node's threads."""
    import torch

    from ..model.inference import select_device
    from ..model.io import load_model

    torch.set_num_threads(max(1, inputs.num_threads))
    device = select_device(inputs.device)
    return load_model(inputs.model, device), device


def _dtype_name(device, precision: str) -> str:
    from ..model.inference import inference_dtype

    return str(inference_dtype(device, precision)).replace("torch.", "")


def _write_probabilities(cwd: str, cord: np.ndarray, lesion: np.ndarray, affine: np.ndarray, model) -> dict:
    """Save both probability maps (float32, sform/qform set) and name the model that made them."""
    results = {"model_name": model.name, "model_version": model.version}
    for key, data in (("cord_prob", cord), ("lesion_prob", lesion)):
        out = os.path.join(cwd, key + WORK_IMAGE)
        nib.save(nifti_image(data, affine, np.float32), out)
        results[key] = out
    return results


class _SegmentStraightInputSpec(_SegmentInputSpec):
    model = traits.Str(mandatory=True, desc="stage-2 model name or directory")
    reference = File(exists=True, mandatory=True, desc="the source image (grid of the outputs)")
    to_straight_xfm = File(exists=True, mandatory=True, desc="ITK field on the straight grid (-> native)")
    to_orig_xfm = File(exists=True, mandatory=True, desc="ITK field on the source grid (-> straight)")
    tta = traits.Bool(False, usedefault=True, desc="also predict on flipped copies (uncertainty)")
    cord_prob = File(exists=True, desc="stage-1 cord probability: where a stage 2 with a tissue prior expects the cord")


class _SegmentStraightOutputSpec(_SegmentOutputSpec):
    straight_image = File(exists=True, desc="the straightened, normalised image")
    lesion_copies = File(desc="with tta: lesion probability of each test-time copy (4D, source grid)")


class SegmentStraightened(SimpleInterface):
    """Stage 2: segment on the straightened cord, then map the probabilities back."""

    input_spec = _SegmentStraightInputSpec
    output_spec = _SegmentStraightOutputSpec

    def _run_interface(self, runtime):
        from ..core.straighten import apply_points, field_target_points
        from ..model.cascade import sample_straight, segment_straightened, unstraighten

        model, device = _load_model(self.inputs)
        img = nib.load(self.inputs.in_file)
        to_straight = nib.load(self.inputs.to_straight_xfm)
        native_points = field_target_points(to_straight)
        straight_image = sample_straight(img, native_points)
        cord = None
        if model.uses_tissue_prior and isdefined(self.inputs.cord_prob):
            cord_img = nib.load(self.inputs.cord_prob)
            cord = apply_points(np.asarray(cord_img.dataobj, np.float32), cord_img.affine, native_points,
                                order=1, cval=0.0) >= 0.5
        prob = segment_straightened(straight_image, model, device, tta=self.inputs.tta, cord=cord,
                                    precision=self.inputs.precision)
        self._results["precision"] = _dtype_name(device, self.inputs.precision)
        ref = nib.load(self.inputs.reference)
        straight_points = field_target_points(nib.load(self.inputs.to_orig_xfm))
        if straight_points.shape[:3] != ref.shape[:3]:
            raise ValueError(f"{self.inputs.to_orig_xfm}: grid {straight_points.shape[:3]} is not the grid of "
                             f"{self.inputs.reference} {ref.shape[:3]}")
        zooms = ref.header.get_zooms()[:3] if model.voxel_average else None
        if self.inputs.tta:
            copies = unstraighten(prob[:, 1], to_straight.affine, straight_points, zooms)
            out = os.path.join(runtime.cwd, "lesion_copies" + WORK_IMAGE)
            nib.save(nib.Nifti1Image(np.moveaxis(copies, 0, -1), ref.affine), out)
            self._results["lesion_copies"] = out
            prob = prob.mean(axis=0)
        native = unstraighten(prob, to_straight.affine, straight_points, zooms)
        self._results.update(_write_probabilities(runtime.cwd, native[0], native[1], ref.affine, model))
        out = os.path.join(runtime.cwd, "straight_image" + WORK_IMAGE)  # uncompressed, as every work image
        nib.save(nib.Nifti1Image(straight_image, to_straight.affine), out)
        self._results["straight_image"] = out
        return runtime


class _PostInputSpec(BaseInterfaceInputSpec):
    cord_prob = File(exists=True, mandatory=True)
    lesion_prob = File(exists=True, mandatory=True)
    extra_cord_prob = File(exists=True, desc="another cord probability (same grid), averaged with cord_prob")
    lesion_copies = File(exists=True, desc="lesion probabilities of test-time copies (4D): confidence, uncertainty")
    threshold = traits.Float(DEFAULT_THRESHOLD, usedefault=True)
    grow_threshold = traits.Float(DEFAULT_THRESHOLD, usedefault=True,
                                  desc="lesions grow into connected voxels down to this probability (hysteresis)")
    min_lesion_mm3 = traits.Float(0.0, usedefault=True)


class _PostOutputSpec(TraitedSpec):
    cord_mask = File(exists=True)
    lesion_mask = File(exists=True)
    lesion_table = File(exists=True)
    lesion_uncertainty = File(desc="with lesion_copies: voxel-wise standard deviation across the copies")
    n_lesions = traits.Int()


class PostprocessLesions(SimpleInterface):
    """Threshold, drop lesion components outside the cord, tabulate lesions."""

    input_spec = _PostInputSpec
    output_spec = _PostOutputSpec

    def _run_interface(self, runtime):
        cimg, limg = nib.load(self.inputs.cord_prob), nib.load(self.inputs.lesion_prob)
        cord_p = np.asarray(cimg.dataobj, np.float32)
        if isdefined(self.inputs.extra_cord_prob):
            cord_p = 0.5 * (cord_p + np.asarray(nib.load(self.inputs.extra_cord_prob).dataobj, np.float32))
        les_p = np.asarray(limg.dataobj, np.float32)
        vox = voxel_volume(cimg.affine)
        cord, lesion = threshold_masks(cord_p, les_p, self.inputs.threshold, self.inputs.min_lesion_mm3, vox,
                                       grow_threshold=self.inputs.grow_threshold)
        copies = None
        if isdefined(self.inputs.lesion_copies):
            copies = np.moveaxis(np.asarray(nib.load(self.inputs.lesion_copies).dataobj, np.float32), -1, 0)
            out = os.path.join(runtime.cwd, "lesion_uncertainty" + WORK_IMAGE)
            nib.save(nib.Nifti1Image(voxel_uncertainty(copies), cimg.affine), out)
            self._results["lesion_uncertainty"] = out
        rows = lesion_table(lesion, les_p, cord, cimg.affine, copies, self.inputs.threshold)
        for key, data in (("cord_mask", cord), ("lesion_mask", lesion)):
            out = os.path.join(runtime.cwd, key + WORK_IMAGE)
            nib.save(nifti_image(data, cimg.affine, np.uint8), out)
            self._results[key] = out
        out = os.path.join(runtime.cwd, "lesions.tsv")
        with open(out, "w") as fh:
            fh.write(table_to_tsv(rows))
        self._results["lesion_table"] = out
        self._results["n_lesions"] = len(rows)
        return runtime
