"""BIDS-Derivatives naming, sidecars and dataset description (plain functions)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from . import __version__, __url__
from .utils.io import write_json, write_text

#: Files the BIDS specification does not define yet, kept out of validation.
BIDSIGNORE = ["*.html", "*_lesions.tsv", "*_lesions.json", "*_xfm.*", "*_uncertainty.*", "*_discs.*", "*_csa.*",
              "*_levels.*", "group_*", "figures", "sub-*/figures",
              "logs/", ".locks"]

_SOURCE = re.compile(r"^(?P<entities>sub-[A-Za-z0-9]+(?:_[a-z]+-[A-Za-z0-9]+)*)_(?P<suffix>[A-Za-z0-9]+)\.nii(\.gz)?$")


class SourceName:
    """The parts of a raw BIDS image name that derivatives keep."""

    def __init__(self, path: str | os.PathLike, bids_dir: str | os.PathLike):
        self.path = Path(path)
        match = _SOURCE.match(self.path.name)
        if not match:
            raise ValueError(f"{self.path}: not a BIDS image name (sub-<label>[_<entity>-<label>]_<suffix>.nii[.gz])")
        self.entities = match.group("entities")
        self.suffix = match.group("suffix")
        self.relpath = Path(os.path.relpath(self.path, bids_dir)).as_posix()

    @property
    def uri(self) -> str:
        return f"bids:raw:{self.relpath}"

    @property
    def subject(self) -> str:
        return self.entities.split("_")[0][4:]

    @property
    def session(self) -> str | None:
        for part in self.entities.split("_"):
            if part.startswith("ses-"):
                return part[4:]
        return None

    def out_dir(self, root: str | os.PathLike) -> Path:
        return Path(root) / Path(self.relpath).parent


    def derivative(self, root, *, space: str | None = None, label: str | None = None, suffix: str, ext: str,
                   seg: str | None = None) -> Path:
        parts = [self.entities]
        if space:
            parts.append(f"space-{space}")
        if seg:
            parts.append(f"seg-{seg}")
        if label:
            parts.append(f"label-{label}")
        parts.append(f"desc-{self.suffix}")
        return self.out_dir(root) / ("_".join(parts) + f"_{suffix}{ext}")

    def outputs(self, root) -> dict[str, Path]:
        return {
            "lesion_mask": self.derivative(root, space="orig", label="lesion", suffix="mask", ext=".nii.gz"),
            "cord_mask": self.derivative(root, space="orig", label="SC", suffix="mask", ext=".nii.gz"),
            "lesion_prob": self.derivative(root, space="orig", label="lesion", suffix="probseg", ext=".nii.gz"),
            "lesion_table": self.derivative(root, suffix="lesions", ext=".tsv"),
            "level_map": self.derivative(root, space="orig", seg="vertebral", suffix="dseg", ext=".nii.gz"),
            "disc_table": self.derivative(root, suffix="discs", ext=".tsv"),
            "csa_table": self.derivative(root, suffix="csa", ext=".tsv"),
            "level_table": self.derivative(root, suffix="levels", ext=".tsv"),
        }

    def uncertainty(self, root) -> Path:
        """The optional lesion uncertainty map (``--tta``)."""
        return self.derivative(root, space="orig", label="lesion", suffix="uncertainty", ext=".nii.gz")

    def warps(self, root) -> dict[str, Path]:
        """Straightening warps (ITK displacement fields); from/to name the source contrast."""
        base = self.out_dir(root) / self.entities
        straight = f"{self.suffix}straight"
        return {
            "to_straight_xfm": Path(f"{base}_from-{self.suffix}_to-{straight}_mode-image_xfm.nii.gz"),
            "to_orig_xfm": Path(f"{base}_from-{straight}_to-{self.suffix}_mode-image_xfm.nii.gz"),
        }


_LESION_TABLE = re.compile(r"^(?P<entities>.+)_desc-(?P<suffix>[A-Za-z0-9]+)_lesions\.tsv$")


def source_of_lesion_table(table: str | os.PathLike, root: str | os.PathLike) -> SourceName:
    """The source image whose lesion table is ``table`` in the derivatives ``root``.

    The returned name's ``relpath`` is relative to ``root``, which mirrors the
    raw dataset's layout, so ``bids_dir / relpath`` is the source image and
    ``outputs(root)`` its other derivatives.
    """
    table = Path(table)
    match = _LESION_TABLE.match(table.name)
    if not match:
        raise ValueError(f"{table}: not a lesion table name (<entities>_desc-<suffix>_lesions.tsv)")
    return SourceName(table.parent / f"{match['entities']}_{match['suffix']}.nii.gz", root)


def container_info() -> dict | None:
    """Container type and tag when the app runs in one (set by the image)."""
    kind = os.environ.get("BIDS_SCLESION_CONTAINER_TYPE")
    tag = os.environ.get("BIDS_SCLESION_CONTAINER_TAG")
    if kind:
        return {"Type": kind, **({"Tag": tag} if tag else {})}
    return None


def write_dataset_description(out_dir: str | os.PathLike, bids_dir: str | os.PathLike,
                              provenance: dict | None = None) -> Path:
    """``dataset_description.json`` of the derivatives; ``provenance`` (models, settings, revision) of the last run
    is recorded with it (each file's own sidecar says what made that file)."""
    generated = {"Name": "bids_sclesion", "Version": __version__, "CodeURL": __url__}
    container = container_info()
    if container:
        generated["Container"] = container
    desc = {
        "Name": "bids_sclesion: spinal cord MS lesion segmentation",
        "BIDSVersion": "1.10.0",
        "DatasetType": "derivative",
        "GeneratedBy": [generated],
        "SourceDatasets": [{"URL": "bids:raw:"}],
        "DatasetLinks": {"raw": Path(bids_dir).resolve().as_uri()},
    }
    if provenance:
        desc["Provenance"] = provenance
    out = Path(out_dir)
    write_json(desc, out / "dataset_description.json")
    write_text("\n".join(BIDSIGNORE) + "\n", out / ".bidsignore")
    readme = out / "README"
    if not readme.exists():
        write_text(
            "Spinal cord and multiple-sclerosis lesion segmentations produced by bids_sclesion.\n"
            "Masks and probability maps are in each source image's native grid (space-orig);\n"
            "desc-<suffix> names the source contrast. *_lesions.tsv list one lesion per row.\n",
            readme,
        )
    return out / "dataset_description.json"


def mask_sidecar(source: SourceName, kind: str, model: dict, threshold: float, provenance: dict | None = None) -> dict:
    common = {
        "Sources": [source.uri],
        "SpatialReference": source.uri,
        "Model": model,
        "GeneratedBy": [{"Name": "bids_sclesion", "Version": __version__, "CodeURL": __url__}],
    }
    if provenance:  # what made this file: each model's version and weights hash, the settings, the revision
        common["Provenance"] = provenance
    if kind == "lesion_mask":
        return {"Description": "Multiple-sclerosis lesions in the spinal cord (components outside the cord removed)",
                "Type": "Lesion", "Threshold": threshold, **common}
    if kind == "cord_mask":
        return {"Description": "Spinal cord (below the foramen magnum), lesions included", "Type": "ROI",
                "Threshold": threshold, **common}
    if kind == "lesion_prob":
        return {"Description": "Voxel-wise lesion probability from the segmentation network", **common}
    if kind == "lesion_uncertainty":
        return {"Description": "Standard deviation of the lesion probability across the test-time augmented "
                "predictions (plain and flipped along each axis of the straightened cord); 0 where they agree",
                **common}
    if kind == "lesion_table":
        return {
            "Description": "One row per lesion (26-connected component of the lesion mask)",
            "Sources": [source.uri],
            "lesion_id": {"Description": "Component number in the lesion mask"},
            "volume_mm3": {"Description": "Lesion volume", "Units": "mm^3"},
            "centroid_x_mm": {"Description": "Centroid, scanner x (RAS)", "Units": "mm"},
            "centroid_y_mm": {"Description": "Centroid, scanner y (RAS)", "Units": "mm"},
            "centroid_z_mm": {"Description": "Centroid, scanner z (RAS)", "Units": "mm"},
            "extent_along_cord_mm": {"Description": "Length along the local cord axis", "Units": "mm"},
            "distance_from_top_mm": {"Description": "Position along the cord: arc length of the cord centreline "
                                     "from the highest cord point in the field of view to the lesion centroid; "
                                     "n/a when no centreline could be fitted", "Units": "mm"},
            "cord_area_mm2": {"Description": "Cross-sectional area of the cord mask (lesions included) in the "
                              "plane through the lesion centroid perpendicular to the centreline", "Units": "mm^2"},
            "vertebral_level": {"Description": "Vertebral level at the lesion centroid (C1 ... C7, T1 ...), from "
                                "the image's level map (*_seg-vertebral_dseg); n/a where no level could be "
                                "given (see the level map's sidecar)"},
            "vertebral_levels_spanned": {"Description": "Every vertebral level the lesion's voxels touch, superior "
                                         "first, separated by ';'; n/a where none"},
            "mean_probability": {"Description": "Mean network probability over the lesion's voxels"},
            "max_probability": {"Description": "Maximum network probability over the lesion's voxels"},
            "confidence": {"Description": "Share of the test-time augmented predictions (plain and flipped "
                           "along each axis) that find the lesion; n/a when the run used no test-time "
                           "augmentation (--tta)"},
            "Model": model,
            **({"Provenance": provenance} if provenance else {}),
        }
    if kind == "level_map":
        return {"Description": "Vertebral level of each cord voxel (0: none), SCT numbering: 1 = C1 ... 7 = C7, "
                "8 = T1 ... (labels in the .tsv beside it); level n lies between disc n (above) and disc n + 1",
                "Sources": [source.uri], "SpatialReference": source.uri,
                "GeneratedBy": common["GeneratedBy"], **({"Provenance": provenance} if provenance else {})}
    if kind == "disc_table":
        return {"Description": "Intervertebral discs on the cord centreline (SCT labels: 3 = C2/C3)",
                "Sources": [source.uri],
                "label": {"Description": "SCT disc label: the disc above vertebra n has label n"},
                "name": {"Description": "The two vertebrae the disc separates"},
                "x_mm": {"Description": "Scanner x (RAS) of the disc's point on the centreline", "Units": "mm"},
                "y_mm": {"Description": "Scanner y (RAS)", "Units": "mm"},
                "z_mm": {"Description": "Scanner z (RAS)", "Units": "mm"},
                "distance_from_top_mm": {"Description": "Arc length of the centreline from the highest cord point",
                                         "Units": "mm"},
                "method": {"Description": "template: matched with the PAM50 template; user: from the user's "
                           "disc labels"}}
    if kind == "csa_table":
        return {"Description": "Cord cross-sectional area (CSA) of every slice across the cord's main axis, "
                "corrected for the cord's angle to the slice (the centreline's tangent)", "Sources": [source.uri],
                "slice_index": {"Description": "Voxel index along the axis the cord is sliced across"},
                "csa_mm2": {"Description": "Slice area x cos(angle)", "Units": "mm^2"},
                "slice_area_mm2": {"Description": "Cord area in the slice, uncorrected", "Units": "mm^2"},
                "angle_deg": {"Description": "Angle between the cord's tangent and the slice normal",
                              "Units": "degree"},
                "distance_from_top_mm": {"Description": "Arc length from the highest cord point", "Units": "mm"},
                "vertebral_level": {"Description": "Level of the slice's cord voxels (majority); n/a without"}}
    if kind == "level_table":
        return {"Description": "Per vertebral level: mean CSA, length, cord volume, and the lesions whose "
                "centroid lies there (no row when no level could be given)", "Sources": [source.uri],
                "csa_mean_mm2": {"Description": "Mean of the slices' angle-corrected CSA", "Units": "mm^2"},
                "csa_sd_mm2": {"Description": "Standard deviation across the slices", "Units": "mm^2"},
                "length_mm": {"Description": "Length of the level along the cord", "Units": "mm"},
                "cord_volume_mm3": {"Description": "Cord volume in the level", "Units": "mm^3"},
                "lesion_volume_mm3": {"Description": "Volume of the level's lesions", "Units": "mm^3"}}
    raise KeyError(kind)
