"""Writing derivatives into the output dataset, atomically."""
from __future__ import annotations

import json

import nibabel as nib
import numpy as np
from nipype.interfaces.base import isdefined, BaseInterfaceInputSpec, Directory, File, SimpleInterface, TraitedSpec, traits

from ..core.lesions import DEFAULT_THRESHOLD
from ..core.image import nifti_image
from ..derivatives import SourceName, mask_sidecar
from ..core.morphometry import LEVEL_NAMES
from ..utils.io import copy_file, write_json, write_nifti, write_text


class _SourceSinkInputSpec(BaseInterfaceInputSpec):
    """What every sink needs to name its outputs after the source image."""

    source_file = File(exists=True, mandatory=True)
    bids_dir = Directory(exists=True, mandatory=True)
    out_dir = traits.Str(mandatory=True)


class _SinkInputSpec(_SourceSinkInputSpec):
    cord_mask = File(exists=True, mandatory=True)
    lesion_mask = File(exists=True, mandatory=True)
    lesion_prob = File(exists=True, mandatory=True)
    lesion_table = File(exists=True, mandatory=True)
    model_name = traits.Str(mandatory=True)
    model_version = traits.Str(mandatory=True)
    stage2_model_name = traits.Str(desc="cascade: the model that segmented the straightened cord")
    stage1_fallback_used = traits.Bool(False, usedefault=True,
                                       desc="the stage-1 fallback made the cord (the first model's was not plausible)")
    precision = traits.Str(desc="what the (stage-1) network computed in")
    stage2_precision = traits.Str(desc="cascade: what stage 2 computed in")
    lesion_uncertainty = File(exists=True, desc="optional voxel-wise uncertainty of the lesion probability")
    level_map = File(exists=True, mandatory=True, desc="vertebral level of each cord voxel")
    disc_table = File(exists=True, mandatory=True)
    csa_table = File(exists=True, mandatory=True)
    level_table = File(exists=True, mandatory=True)
    levels_info = traits.Str("{}", usedefault=True, desc="JSON: how the levels were found, or why not")
    threshold = traits.Float(DEFAULT_THRESHOLD, usedefault=True)
    provenance = traits.Str("", usedefault=True, desc="JSON: models (name, version, SHA-256), settings, revision")


class _SinkOutputSpec(TraitedSpec):
    out_files = traits.List(traits.Str())


class DerivativesSink(SimpleInterface):
    """Copy one image's results into OUT_DIR under BIDS-Derivatives names.

    Every file is written to a temporary name and renamed, so a killed run
    never leaves a truncated derivative.
    """

    input_spec = _SinkInputSpec
    output_spec = _SinkOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        source = SourceName(self.inputs.source_file, self.inputs.bids_dir)
        targets = source.outputs(self.inputs.out_dir)
        model = {"Name": self.inputs.model_name, "Version": self.inputs.model_version}
        if isdefined(self.inputs.stage2_model_name):
            model = {"Name": f"{self.inputs.model_name}+{self.inputs.stage2_model_name}",
                     "Version": self.inputs.model_version, "Stage1": self.inputs.model_name,
                     "Stage2": self.inputs.stage2_model_name}
        if self.inputs.stage1_fallback_used:
            model["Stage1FallbackUsed"] = True
        precisions = [p for p in (self.inputs.precision, self.inputs.stage2_precision) if isdefined(p)]
        if precisions:  # on this machine: "auto" gives bfloat16 on some CPUs and float32 on others
            model["Precision"] = "+".join(dict.fromkeys(precisions))
        provenance = json.loads(self.inputs.provenance) if self.inputs.provenance else None
        maps = [(key, getattr(self.inputs, key), targets[key])
                for key in ("lesion_mask", "cord_mask", "lesion_prob", "level_map")]
        if isdefined(self.inputs.lesion_uncertainty):
            maps.append(("lesion_uncertainty", self.inputs.lesion_uncertainty, source.uncertainty(self.inputs.out_dir)))
        written = []
        for key, path, target in maps:
            img = nib.load(path)
            dtype = np.uint8 if key.endswith("mask") or key == "level_map" else np.float32
            write_nifti(nifti_image(np.asarray(img.dataobj), img.affine, dtype), target)
            sidecar = mask_sidecar(source, key, model, self.inputs.threshold, provenance)
            if key == "level_map":  # how the levels were found, or why there are none; and the labels' names
                sidecar["VertebralLabelling"] = json.loads(self.inputs.levels_info)
                write_text("index\tname\n" + "".join(f"{k}\t{name}\n" for k, name in LEVEL_NAMES.items()),
                           target.with_name(target.name.replace(".nii.gz", ".tsv")))
            write_json(sidecar, target.with_name(target.name.replace(".nii.gz", ".json")))
            written.append(str(target))
        for key in ("lesion_table", "disc_table", "csa_table", "level_table"):
            table = copy_file(getattr(self.inputs, key), targets[key])
            write_json(mask_sidecar(source, key, model, self.inputs.threshold, provenance),
                       table.with_suffix(".json"))
            written.append(str(table))
        self._results["out_files"] = written
        return runtime


class _WarpSinkInputSpec(_SourceSinkInputSpec):
    to_straight_xfm = File(exists=True, mandatory=True)
    to_orig_xfm = File(exists=True, mandatory=True)
    cord_length_mm = traits.Float(mandatory=True)


class WarpsSink(SimpleInterface):
    """Copy the straightening warps into OUT_DIR (atomically), with sidecars."""

    input_spec = _WarpSinkInputSpec
    output_spec = _SinkOutputSpec
    always_run = True

    def _run_interface(self, runtime):
        from .. import __version__

        source = SourceName(self.inputs.source_file, self.inputs.bids_dir)
        targets = source.warps(self.inputs.out_dir)
        written = []
        for key, description in (
            ("to_straight_xfm", "resamples the source image into the straightened cord (apply with ANTs)"),
            ("to_orig_xfm", "resamples straightened-cord maps back onto the source grid (apply with ANTs)"),
        ):
            target = copy_file(getattr(self.inputs, key), targets[key])
            write_json({"Description": f"ITK displacement field (vectors in LPS mm) that {description}",
                        "Sources": [source.uri], "CordLengthMM": round(self.inputs.cord_length_mm, 1),
                        "SoftwareVersion": __version__},
                       target.with_name(target.name.replace(".nii.gz", ".json")))
            written.append(str(target))
        self._results["out_files"] = written
        return runtime
