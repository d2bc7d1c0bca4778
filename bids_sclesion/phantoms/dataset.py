"""Write synthetic phantoms as a BIDS dataset with ground truth in derivatives/labels."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import __version__
from ..utils.io import write_json, write_nifti, write_text
from .acquisition import CONTRASTS, random_acquisition, render_image, render_tissue_mask
from .anatomy import Tissue, evolve_lesions, random_anatomy, random_lesions, realistic_lesions
from .grey_matter import grey_matter_lesions, vary_grey_matter
from .spine import random_real_spine

_SEQUENCE = {
    "T2w": dict(ScanningSequence="SE", SequenceVariant="SK", MRAcquisitionType="2D", RepetitionTime=3.5, EchoTime=0.1),
    "STIR": dict(ScanningSequence="IR", SequenceVariant="SK", MRAcquisitionType="2D", RepetitionTime=4.0, EchoTime=0.05, InversionTime=0.2),
    "PSIR": dict(ScanningSequence="IR", SequenceVariant="SK", MRAcquisitionType="2D", RepetitionTime=3.0, EchoTime=0.01, InversionTime=0.4),
    "T1w": dict(ScanningSequence="GR\\IR", SequenceVariant="SK\\SP\\MP", MRAcquisitionType="3D", RepetitionTime=2.0, EchoTime=0.0025, InversionTime=0.9),
    "T2starw": dict(ScanningSequence="GR", SequenceVariant="SP", MRAcquisitionType="2D", RepetitionTime=0.6, EchoTime=0.015),
}

_NONSTANDARD_SUFFIXES = ("PSIR", "STIR")
#: Key of the random stream of ``varied_grey_matter`` (beside the subject's seed and index).
_GREY_MATTER_STREAM = 7919
#: Key of the random stream of ``realistic_lesions``.
_LESION_STREAM = 7927
#: Key of the random stream of ``realistic_spine``.
_SPINE_STREAM = 7933
#: Key of the random stream that picks which T2w images are 3D (``t2w_3d_share``).
_T2W_3D_STREAM = 7937


def generate_dataset(
    out_dir: str | Path,
    n_subjects: int,
    n_sessions: int = 1,
    contrasts: Sequence[str] = ("T2w",),
    seed: int = 0,
    fov_scale: float = 1.0,
    first_subject: int = 1,
    grey_matter: bool = False,
    jobs: int = 1,
    varied_grey_matter: bool = False,
    realistic_lesions: bool = False,
    realistic_spine: bool = False,
    t2w_3d_share: float = 0.0,
) -> Path:
    """Generate ``n_subjects`` synthetic subjects under ``out_dir`` (BIDS).

    Each image is drawn from its own random stream keyed by (seed, subject,
    session, contrast), so a given image does not depend on which other
    subjects or contrasts are generated. ``grey_matter`` also writes each
    image's grey matter mask (``<stem>_gmseg-manual``) without changing the images.
    ``jobs`` > 1 makes subjects in that many processes (the same files as one process).
    ``varied_grey_matter`` draws each subject's grey matter shape, each image's grey matter intensity
    anywhere from white matter's to a lesion's, and 0-2 more lesions on or across the grey matter, from a
    random stream of their own (the images change; without it they are those of earlier versions).
    ``realistic_lesions`` draws the lesions by the published pattern of :mod:`.lesion_shape` (columns,
    surface, 3-30 mm, oval or wedge, irregular edges) instead of ellipsoids, as many per subject and from a
    stream of their own: the anatomy and the acquisitions stay those of the same seed without it.
    ``realistic_spine`` draws the vertebrae after real anatomy (:mod:`.spine`: discs of their own height with
    an annulus and a nucleus, the dens and C1's arch), from a stream of its own; only the spine changes.
    ``t2w_3d_share`` makes that share of the T2w images 3D isotropic (1 mm, as common cervical 3D T2w protocols)
    instead of 2D sagittal TSE, picked from a stream of its own: the other images stay those of the same seed.
    """
    if not 0.0 <= t2w_3d_share <= 1.0:
        raise ValueError(f"t2w_3d_share must lie in [0, 1], got {t2w_3d_share}")
    out = Path(out_dir)
    unknown = [c for c in contrasts if c not in CONTRASTS]
    if unknown:
        raise ValueError(f"unknown contrast(s) {unknown}; choose from {list(CONTRASTS)}")
    out.mkdir(parents=True, exist_ok=True)
    _write_dataset_files(out, seed, n_sessions, contrasts)

    indices = range(first_subject, first_subject + n_subjects)
    job = _SubjectJob(out, n_sessions, tuple(contrasts), seed, fov_scale, grey_matter, varied_grey_matter,
                      realistic_lesions, realistic_spine, t2w_3d_share)
    if jobs > 1 and n_subjects > 1:
        from concurrent.futures import ProcessPoolExecutor

        from ..utils.environment import process_context

        with ProcessPoolExecutor(max_workers=min(jobs, n_subjects), mp_context=process_context()) as pool:
            rows = list(pool.map(job, indices))
    else:
        rows = [job(index) for index in indices]

    table = "participant_id\tgroup\n" + "".join(f"{p}\t{g}\n" for p, g in rows)
    existing = out / "participants.tsv"
    if existing.exists() and first_subject > 1:
        old = existing.read_text().splitlines()[1:]
        keep = [line + "\n" for line in old if line.split("\t")[0] not in {p for p, _ in rows}]
        table = "participant_id\tgroup\n" + "".join(sorted(keep + table.splitlines(True)[1:]))
    write_text(table, existing)
    return out


@dataclass(frozen=True)
class _SubjectJob:
    """Makes one subject's images and labels (a picklable callable for worker processes)."""

    out: Path
    n_sessions: int
    contrasts: tuple[str, ...]
    seed: int
    fov_scale: float
    grey_matter: bool
    varied_grey_matter: bool = False
    realistic_lesions: bool = False
    realistic_spine: bool = False
    t2w_3d_share: float = 0.0

    def __call__(self, index: int) -> tuple[str, str]:
        sub = f"{index:02d}"
        rng = np.random.default_rng([self.seed, index])
        fov_top = 110.0
        anatomy = random_anatomy(rng, fov_top=fov_top)
        if self.realistic_spine:
            anatomy.spine = random_real_spine(np.random.default_rng([self.seed, index, _SPINE_STREAM]),
                                              len(anatomy.disc_z))
        z_range = (fov_top - 200.0 * self.fov_scale + 20, fov_top - 10)
        lesions = random_lesions(rng, anatomy, z_range)
        if self.realistic_lesions:  # as many lesions, drawn by the published pattern from a stream of their own
            lesions = realistic_lesions(np.random.default_rng([self.seed, index, _LESION_STREAM]), anatomy, z_range,
                                        len(lesions))
        # A stream of its own, so that the default images stay those of earlier versions.
        gm_rng = np.random.default_rng([self.seed, index, _GREY_MATTER_STREAM]) if self.varied_grey_matter else None
        if gm_rng is not None:
            vary_grey_matter(gm_rng, anatomy)
            lesions = lesions + grey_matter_lesions(gm_rng, anatomy, z_range, int(gm_rng.integers(0, 3)),
                                                    first_id=len(lesions) + 1)
        group = "MS" if lesions else "control"
        for ses_index in range(1, self.n_sessions + 1):
            if ses_index > 1:
                lesions = evolve_lesions(np.random.default_rng([self.seed, index, ses_index]), anatomy, lesions,
                                         z_range)
            anatomy.lesions = lesions
            ses = f"{ses_index:02d}" if self.n_sessions > 1 else None
            for contrast in self.contrasts:
                img_rng = np.random.default_rng([self.seed, index, ses_index, CONTRASTS.index(contrast)])
                acq = random_acquisition(img_rng, contrast, anatomy, fov_top, fov_scale=self.fov_scale,
                                         plane=self._plane(index, ses_index, contrast))
                gm_contrast = float(gm_rng.uniform(0.0, 1.0)) if gm_rng is not None else None
                image, cord, lesion, fine_lesion = render_image(img_rng, anatomy, acq, fine_lesion=True,
                                                                grey_matter_contrast=gm_contrast)
                _write_subject_image(self.out, sub, ses, contrast, acq, image, cord, lesion, anatomy, self.seed)
                if fine_lesion is not None:
                    _write_fine_lesion(self.out, sub, ses, contrast, fine_lesion)
                if self.grey_matter:
                    _write_grey_matter(self.out, sub, ses, contrast, render_tissue_mask(anatomy, acq, Tissue.GM))
        return f"sub-{sub}", group

    def _plane(self, index: int, ses_index: int, contrast: str) -> str | None:
        """"sagittal3d" for the T2w images drawn 3D, else None (the contrast's usual geometry)."""
        if contrast != "T2w" or self.t2w_3d_share <= 0.0:
            return None
        pick = np.random.default_rng([self.seed, index, ses_index, _T2W_3D_STREAM]).random()
        return "sagittal3d" if pick < self.t2w_3d_share else None


def _write_dataset_files(out: Path, seed: int, n_sessions: int, contrasts: Sequence[str]) -> None:
    generated = [{"Name": "bids_sclesion-synth", "Version": __version__, "Description": f"seed {seed}"}]
    write_json(
        {
            "Name": "bids_sclesion synthetic spinal cord phantoms",
            "BIDSVersion": "1.10.0",
            "DatasetType": "raw",
            "License": "CC0",
            "GeneratedBy": generated,
        },
        out / "dataset_description.json",
    )
    write_text(
        "Synthetic spinal cord MRI phantoms with multiple-sclerosis-like lesions.\n"
        "Ground truth cord and lesion masks are in derivatives/labels.\n",
        out / "README",
    )
    write_text("".join(f"*_{s}.*\n" for s in _NONSTANDARD_SUFFIXES), out / ".bidsignore")
    write_json(
        {"group": {"Description": "MS if the phantom has at least one lesion at baseline, else control",
                   "Levels": {"MS": "lesions present", "control": "no lesion"}}},
        out / "participants.json",
    )
    labels = out / "derivatives" / "labels"
    write_json(
        {
            "Name": "Ground truth of the synthetic phantoms",
            "BIDSVersion": "1.10.0",
            "DatasetType": "derivative",
            "GeneratedBy": generated,
        },
        labels / "dataset_description.json",
    )


def _write_subject_image(out, sub, ses, contrast, acq, image, cord, lesion, anatomy, seed):
    parts = [f"sub-{sub}"] + ([f"ses-{ses}"] if ses else [])
    rel_dir = Path(*parts) / "anat"
    stem = "_".join(parts + [contrast])
    nii = rel_dir / f"{stem}.nii.gz"
    write_nifti(image, out / nii)
    sidecar = dict(_SEQUENCE[contrast])
    sidecar.update(
        MagneticFieldStrength=3,
        Manufacturer="bids_sclesion-synth",
        SliceThickness=float(max(acq.spacing) if acq.plane != "sagittal3d" else 1.0),
        PhantomAcquisition={k: v for k, v in asdict(acq).items()},
    )
    write_json(sidecar, out / rel_dir / f"{stem}.json")

    labels_dir = out / "derivatives" / "labels" / rel_dir
    source = f"bids:raw:{nii.as_posix()}"
    write_nifti(cord, labels_dir / f"{stem}_seg-manual.nii.gz")
    write_json({"Type": "cord", "Description": "spinal cord (below the foramen magnum), lesions included",
                "Sources": [source], "SpatialReference": source}, labels_dir / f"{stem}_seg-manual.json")
    write_nifti(lesion, labels_dir / f"{stem}_lesion-manual.nii.gz")
    write_json({"Type": "lesion", "Description": "voxels at least half covered by a lesion",
                "Sources": [source], "SpatialReference": source,
                "Lesions": [les.record() for les in anatomy.lesions], "Seed": seed},
               labels_dir / f"{stem}_lesion-manual.json")


def _label_place(out: Path, sub: str, ses: str | None, contrast: str) -> tuple[Path, str, str]:
    """(labels folder, image stem, BIDS URI of the image) of one phantom image."""
    parts = [f"sub-{sub}"] + ([f"ses-{ses}"] if ses else [])
    stem = "_".join(parts + [contrast])
    labels_dir = out / "derivatives" / "labels" / Path(*parts) / "anat"
    return labels_dir, stem, f"bids:raw:{(Path(*parts) / 'anat' / f'{stem}.nii.gz').as_posix()}"


def _write_grey_matter(out, sub, ses, contrast, mask):
    labels_dir, stem, source = _label_place(out, sub, ses, contrast)
    write_nifti(mask, labels_dir / f"{stem}_gmseg-manual.nii.gz")
    write_json({"Type": "grey matter", "Description": "voxels at least half covered by grey matter (lesions not removed)",
                "Sources": [source], "SpatialReference": source}, labels_dir / f"{stem}_gmseg-manual.json")


#: Entities of the fine lesion map beside ``<stem>_lesion-manual``: ``<stem>_res-fine_lesion-manual``.
FINE_LESION_ENTITY = "res-fine"


def _write_fine_lesion(out, sub, ses, contrast, fraction_img):
    labels_dir, stem, source = _label_place(out, sub, ses, contrast)
    write_nifti(fraction_img, labels_dir / f"{stem}_{FINE_LESION_ENTITY}_lesion-manual.nii.gz")
    write_json({"Type": "lesion", "Description": "partial-volume fraction of the lesions (0-1) on the fine (<= 0.5 mm) grid "
                "they were rendered on, cropped to the lesions; scanner space, not the image's grid",
                "Resolution": f"{fraction_img.header.get_zooms()[0]:.2f} mm isotropic",
                "Sources": [source]},
               labels_dir / f"{stem}_{FINE_LESION_ENTITY}_lesion-manual.json")
