"""Interfaces for image preparation: validation + reorientation, N4, back to the original grid."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from ..core.image import load_image, nifti_image, resample_to_grid, to_canonical
from ..core.preprocess import bias_correct_image
from . import WORK_IMAGE


def _out_path(runtime, name: str) -> str:
    return os.path.join(runtime.cwd, name)


class _ReorientInputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True, desc="anatomical image in any orientation")


class _ReorientOutputSpec(TraitedSpec):
    out_file = File(exists=True, desc="image in the closest canonical (RAS) orientation")


class Reorient(SimpleInterface):
    """Validate the image and reorder its axes to RAS (no interpolation)."""

    input_spec = _ReorientInputSpec
    output_spec = _ReorientOutputSpec

    def _run_interface(self, runtime):
        img = to_canonical(load_image(self.inputs.in_file))
        out = _out_path(runtime, "canonical" + WORK_IMAGE)
        nib.save(img, out)
        self._results["out_file"] = out
        return runtime


class _N4InputSpec(BaseInterfaceInputSpec):
    in_file = File(exists=True, mandatory=True)
    num_threads = traits.Int(1, usedefault=True, nohash=True)


class _N4OutputSpec(TraitedSpec):
    out_file = File(exists=True)


class N4BiasCorrection(SimpleInterface):
    """N4 bias-field correction with antspyx (signed images keep their sign)."""

    input_spec = _N4InputSpec
    output_spec = _N4OutputSpec

    def _run_interface(self, runtime):
        os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(self.inputs.num_threads)
        out = _out_path(runtime, "n4" + WORK_IMAGE)
        nib.save(bias_correct_image(nib.load(self.inputs.in_file)), out)
        self._results["out_file"] = out
        return runtime


class _ToOriginalInputSpec(BaseInterfaceInputSpec):
    in_files = traits.List(File(exists=True), mandatory=True, desc="maps on the canonical grid")
    reference = File(exists=True, mandatory=True, desc="the original image")
    software_version = traits.Str(desc="the app's version and results revision: cached results are recomputed when it changes")


class _ToOriginalOutputSpec(TraitedSpec):
    out_files = traits.List(File(exists=True))


class ResampleToOriginal(SimpleInterface):
    """Bring maps back onto the original image's grid (voxel order and affine)."""

    input_spec = _ToOriginalInputSpec
    output_spec = _ToOriginalOutputSpec

    def _run_interface(self, runtime):
        ref = nib.load(self.inputs.reference)
        outs = []
        for i, path in enumerate(self.inputs.in_files):
            src = nib.load(path)
            data = resample_to_grid(np.asarray(src.dataobj, np.float32), src.affine, ref.shape[:3], ref.affine, order=1)
            out = _out_path(runtime, f"native_{i}{WORK_IMAGE}")
            nib.save(nifti_image(data, ref.affine, np.float32), out)
            outs.append(out)
        self._results["out_files"] = outs
        return runtime
