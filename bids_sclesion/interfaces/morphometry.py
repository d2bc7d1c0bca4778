"""Vertebral levels and cord cross-sectional area of one image (Nipype wrapper over core.vertebrae/morphometry)."""
from __future__ import annotations

import csv
import json
import os

import nibabel as nib
import numpy as np
from nipype.interfaces.base import BaseInterfaceInputSpec, File, SimpleInterface, TraitedSpec, isdefined, traits

from ..core.image import nifti_image
from ..core.centerline import CenterlineError, extract_centerline
from ..core.lesions import LESION_COLUMNS, annotate_levels
from ..core.morphometry import CSA_COLUMNS, LEVEL_COLUMNS, cord_csa, csa_by_level, level_name, slicing
from ..core.vertebrae import NoDiscFound, discs_from_labels, find_discs, level_map, segment_lengths
from ..utils.io import tsv_text

DISC_COLUMNS = ("label", "name", "x_mm", "y_mm", "z_mm", "distance_from_top_mm", "method")
LEVEL_TABLE_COLUMNS = LEVEL_COLUMNS + ("n_lesions", "lesion_volume_mm3")


def disc_name(label: int) -> str:
    """SCT disc label n is the disc above vertebra n: 3 -> "C2/C3"."""
    return f"{level_name(label - 1)}/{level_name(label)}"


def check_same_grid(path: str, reference: nib.Nifti1Image, what: str) -> nib.Nifti1Image:
    """Load ``path`` and refuse it, naming it, unless it lies on ``reference``'s voxel grid."""
    img = nib.load(path)
    if img.shape[:3] != reference.shape[:3] or not np.allclose(img.affine, reference.affine, atol=1e-3):
        raise ValueError(f"{path}: the {what} is not on the image's voxel grid (shape {img.shape[:3]} vs "
                         f"{reference.shape[:3]}, or another affine); give labels drawn on the source image itself")
    return img


class _MorphometryInputSpec(BaseInterfaceInputSpec):
    source_file = File(exists=True, mandatory=True, desc="the source image (its own grid)")
    cord_mask = File(exists=True, mandatory=True, desc="final cord mask on the source grid")
    lesion_mask = File(exists=True, mandatory=True)
    lesion_table = File(exists=True, mandatory=True)
    disc_labels = File(exists=True, desc="user's disc labels (SCT style: one voxel per disc, value = label)")


class _MorphometryOutputSpec(TraitedSpec):
    level_map = File(exists=True)
    disc_table = File(exists=True)
    csa_table = File(exists=True)
    level_table = File(exists=True)
    lesion_table = File(exists=True)
    levels_info = traits.Str(desc="JSON: method, correlation, scale, or why no level was given")


class CordMorphometry(SimpleInterface):
    """Discs, vertebral level map, CSA per slice and per level, and the lesion table's levels."""

    input_spec = _MorphometryInputSpec
    output_spec = _MorphometryOutputSpec

    def _run_interface(self, runtime):
        source = nib.load(self.inputs.source_file)
        cord_img = check_same_grid(self.inputs.cord_mask, source, "cord mask")
        cord = np.asarray(cord_img.dataobj) > 0
        affine = cord_img.affine
        info: dict = {"Method": "none"}
        levels = np.zeros(cord.shape, np.uint8)
        discs = []
        try:
            centerline = extract_centerline(cord.astype(np.float32), affine)
        except CenterlineError as exc:
            centerline, info["Reason"] = None, f"no centreline: {exc}"
        if centerline is not None and isdefined(self.inputs.disc_labels):
            labels = np.asarray(check_same_grid(self.inputs.disc_labels, source, "disc label file").dataobj)
            discs = discs_from_labels(np.rint(labels).astype(int), affine, centerline)
            if not discs:
                raise ValueError(f"{self.inputs.disc_labels}: the disc label file holds no label")
            info = {"Method": "user", "DiscLabels": os.path.basename(self.inputs.disc_labels)}
            levels = level_map(cord, affine, centerline, discs)
        elif centerline is not None:
            try:
                match = find_discs(np.asarray(source.dataobj, np.float32), affine, centerline)
            except NoDiscFound as exc:
                info["Reason"] = str(exc)
            else:
                discs = match.discs
                info = {"Method": "template", "Correlation": match.correlation, "Scale": match.scale}
                levels = level_map(cord, affine, centerline, discs, segment_lengths(match))
        if discs:
            info["Levels"] = [level_name(v) for v in sorted(set(np.unique(levels)) - {0})]
        cwd = runtime.cwd
        nib.save(nifti_image(levels, affine), os.path.join(cwd, "levels.nii.gz"))
        top = centerline.length_mm if centerline is not None else 0.0
        disc_rows = [{"label": d.label, "name": disc_name(d.label), "x_mm": d.point_mm[0], "y_mm": d.point_mm[1],
                      "z_mm": d.point_mm[2], "distance_from_top_mm": round(top - d.position_mm, 2),
                      "method": info["Method"]} for d in discs]
        _write(cwd, "discs.tsv", tsv_text(disc_rows, DISC_COLUMNS))
        csa = cord_csa(cord, affine, centerline, levels if discs else None)
        _write(cwd, "csa.tsv", tsv_text([r.as_row() for r in csa], CSA_COLUMNS))
        lesion = np.asarray(check_same_grid(self.inputs.lesion_mask, source, "lesion mask").dataobj) > 0
        with open(self.inputs.lesion_table, newline="") as fh:
            lesions = list(csv.DictReader(fh, delimiter="\t"))
        if discs:
            lesions = annotate_levels(lesions, lesion, affine, levels)
        _write(cwd, "lesions.tsv", tsv_text(lesions, LESION_COLUMNS))
        per_level = csa_by_level(csa, slicing(cord, affine)[3]) if discs else []
        for row in per_level:
            mine = [r for r in lesions if r["vertebral_level"] == row["vertebral_level"]]
            row["n_lesions"] = len(mine)
            row["lesion_volume_mm3"] = round(sum(float(r["volume_mm3"]) for r in mine), 2)
        _write(cwd, "levels.tsv", tsv_text(per_level, LEVEL_TABLE_COLUMNS))
        self._results.update({"level_map": os.path.join(cwd, "levels.nii.gz"),
                              "disc_table": os.path.join(cwd, "discs.tsv"), "csa_table": os.path.join(cwd, "csa.tsv"),
                              "level_table": os.path.join(cwd, "levels.tsv"),
                              "lesion_table": os.path.join(cwd, "lesions.tsv"), "levels_info": json.dumps(info)})
        return runtime


def _write(cwd: str, name: str, text: str) -> None:
    with open(os.path.join(cwd, name), "w") as fh:
        fh.write(text)
