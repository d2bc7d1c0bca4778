"""Interface computing the cord straightening warps from a cord probability map."""
from __future__ import annotations

import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, traits

from . import WORK_IMAGE
from ..core.lesions import DEFAULT_THRESHOLD
from ..core.centerline import plausible_centerline
from ..core.straighten import straightening_fields


class _StraightenInputSpec(BaseInterfaceInputSpec):
    cord_prob = File(exists=True, mandatory=True, desc="cord probability on the source grid")
    radius_mm = traits.Float(20.0, usedefault=True, desc="half-width of the straight grid across the cord")
    spacing_mm = traits.Tuple((0.5, 0.5, 1.0), traits.Float, traits.Float, traits.Float, usedefault=True,
                              desc="straight grid voxel size: across (2) and along the cord")
    software_version = traits.Str(desc="the app's version: cached warps are recomputed when it changes")


class _StraightenOutputSpec(TraitedSpec):
    to_straight_xfm = File(exists=True, desc="ITK displacement field: source image -> straightened cord")
    to_orig_xfm = File(exists=True, desc="ITK displacement field: straightened cord -> source grid")
    cord_length_mm = traits.Float()


class CordStraighteningWarps(SimpleInterface):
    """Centreline fit and both straightening displacement fields."""

    input_spec = _StraightenInputSpec
    output_spec = _StraightenOutputSpec

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.cord_prob)
        to_straight, to_orig, cl = straightening_fields(np.asarray(img.dataobj, np.float32), img.affine,
                                                        self.inputs.radius_mm, tuple(self.inputs.spacing_mm))
        for key, field in (("to_straight_xfm", to_straight), ("to_orig_xfm", to_orig)):
            # Uncompressed in the work folder: stage 2 reads both fields; the warps sink compresses the derivatives.
            out = os.path.join(runtime.cwd, f"{key}{WORK_IMAGE}")
            nib.save(field, out)
            self._results[key] = out
        self._results["cord_length_mm"] = cl.length_mm
        return runtime


class _CheckCordInputSpec(BaseInterfaceInputSpec):
    cord_prob = File(exists=True, mandatory=True, desc="cord probability on the source grid")
    threshold = traits.Float(DEFAULT_THRESHOLD, usedefault=True)


class _CheckCordOutputSpec(TraitedSpec):
    cord_prob = File(exists=True, desc="the input, passed on once the cord is plausible")


class CheckSpinalCord(SimpleInterface):
    """Fail when the cord map cannot be a spinal cord (too thin, thick or short), else pass it on.

    The cascade refuses such images when it straightens them; without a
    cascade this check keeps lesion outputs from being written for them.
    """

    input_spec = _CheckCordInputSpec
    output_spec = _CheckCordOutputSpec

    def _run_interface(self, runtime):
        img = nib.load(self.inputs.cord_prob)
        prob = np.asarray(img.dataobj, np.float32)
        plausible_centerline(prob, img.affine, threshold=self.inputs.threshold)
        self._results["cord_prob"] = self.inputs.cord_prob
        return runtime
