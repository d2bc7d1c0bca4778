"""Turn an :class:`Anatomy` into an MR image of a given contrast and geometry.

The anatomy is rendered on a fine isotropic grid covering the field of view,
tissue labels are mapped to randomised contrast-specific intensities, lesions
are mixed in by their partial-volume fraction, the result is filtered by the
acquisition's point-spread function and sampled at the voxel centres. Bias
field, Rician noise and a random orientation code come last.
"""
from __future__ import annotations

from dataclasses import dataclass

import nibabel as nib
import numpy as np
from scipy import ndimage

from ..core.image import nifti_image
from .anatomy import Anatomy, Tissue

#: Mean relative intensity per tissue for each contrast (before randomisation).
#: Order follows :class:`Tissue`.  The last entry of each row is the lesion.
_CONTRAST_TABLE: dict[str, dict[str, float]] = {
    # T2w TSE: CSF bright, fat bright, lesion bright in the cord.
    "T2w": dict(AIR=0.0, MUSCLE=0.22, FAT=0.65, CSF=1.0, WM=0.3, GM=0.38, MARROW=0.42, CORTICAL=0.04,
                DISC=0.55, BRAIN=0.36, LIGAMENT=0.06, LESION=0.7),
    # STIR: fat nulled, fluid and lesions bright.
    "STIR": dict(AIR=0.0, MUSCLE=0.2, FAT=0.05, CSF=1.0, WM=0.3, GM=0.36, MARROW=0.14, CORTICAL=0.03,
                 DISC=0.5, BRAIN=0.35, LIGAMENT=0.05, LESION=0.75),
    # T1w MPRAGE: CSF dark, fat bright, lesion slightly dark.
    "T1w": dict(AIR=0.0, MUSCLE=0.42, FAT=0.95, CSF=0.1, WM=0.72, GM=0.6, MARROW=0.7, CORTICAL=0.05,
                DISC=0.38, BRAIN=0.62, LIGAMENT=0.08, LESION=0.45),
    # PSIR (signed, real part): CSF negative, lesion darker than white matter.
    "PSIR": dict(AIR=0.0, MUSCLE=0.45, FAT=0.9, CSF=-0.55, WM=0.8, GM=0.45, MARROW=0.7, CORTICAL=0.02,
                 DISC=0.2, BRAIN=0.55, LIGAMENT=0.05, LESION=0.1),
    # Axial T2*w GRE: grey matter brighter than white matter, bone dark.
    "T2starw": dict(AIR=0.0, MUSCLE=0.25, FAT=0.55, CSF=1.0, WM=0.36, GM=0.55, MARROW=0.18, CORTICAL=0.03,
                    DISC=0.45, BRAIN=0.4, LIGAMENT=0.05, LESION=0.78),
}

CONTRASTS = tuple(_CONTRAST_TABLE)

#: Geometry of each contrast: plane, voxel size range (mm) in RAS order
#: and field-of-view range (mm) in RAS order.
_GEOMETRY = {
    "T2w": "sagittal2d",
    "STIR": "sagittal2d",
    "PSIR": "sagittal2d",
    "T1w": "sagittal3d",
    "T2starw": "axial2d",
}

_ORIENTATIONS = ["RAS", "LAS", "PSR", "LPS", "ASL", "RPI", "PIR", "SPL", "LIP", "RSA"]


@dataclass
class Acquisition:
    contrast: str
    plane: str
    spacing: tuple[float, float, float]  # RAS order
    shape: tuple[int, int, int]  # RAS order
    center: tuple[float, float, float]  # subject frame, mm
    orientation: str
    snr: float
    bias_amplitude: float
    blur_sigma_vox: float
    gain: float
    shift: tuple[float, float, float]  # subject -> scanner translation (mm)

    @property
    def signed(self) -> bool:
        return self.contrast == "PSIR"


def random_acquisition(
    rng: np.random.Generator,
    contrast: str,
    anatomy: Anatomy,
    fov_top: float,
    fov_scale: float = 1.0,
    plane: str | None = None,
) -> Acquisition:
    """Draw a plausible protocol for ``contrast``; the FOV ends at ``fov_top``. ``plane`` ("sagittal2d",
    "sagittal3d", "axial2d") replaces the contrast's usual geometry, e.g. a 3D isotropic T2w."""
    plane = plane or _GEOMETRY[contrast]
    if plane not in set(_GEOMETRY.values()):
        raise ValueError(f"unknown acquisition plane {plane!r}; choose from {sorted(set(_GEOMETRY.values()))}")
    if plane == "sagittal2d":
        inplane = rng.uniform(0.6, 0.8)
        spacing = (3.0, inplane, inplane)
        fov = (rng.integers(13, 18) * 3.0, rng.uniform(150, 200), rng.uniform(190, 250))
    elif plane == "sagittal3d":
        spacing = (1.0, 1.0, 1.0)
        fov = (rng.uniform(45, 60), rng.uniform(160, 200), rng.uniform(190, 250))
    else:
        inplane = rng.uniform(0.45, 0.6)
        spacing = (inplane, inplane, float(rng.choice([3.0, 4.0, 5.0])))
        fov = (rng.uniform(90, 140), rng.uniform(90, 140), rng.integers(10, 16) * spacing[2])
    fov = (fov[0], fov[1] * (fov_scale if plane != "axial2d" else 1.0), fov[2] * fov_scale)
    shape = tuple(max(8, int(round(f / s))) for f, s in zip(fov, spacing))
    fov = tuple(n * s for n, s in zip(shape, spacing))
    if plane == "axial2d":
        # Axial T2*w slabs sit on the cervical cord, between C2 and C6.
        zc = anatomy.foramen_z - rng.uniform(45, 90)
        zc = min(zc, fov_top - fov[2] / 2)
    else:
        zc = fov_top - fov[2] / 2
    xc_line, yc_line = anatomy.centerline(np.array([zc]))
    center = (
        float(xc_line[0] + rng.uniform(-4, 4)),
        float(yc_line[0] + (rng.uniform(5, 20) if plane != "axial2d" else rng.uniform(-5, 5))),
        float(zc),
    )
    return Acquisition(
        contrast=contrast,
        plane=plane,
        spacing=tuple(float(s) for s in spacing),
        shape=shape,
        center=center,
        orientation=str(rng.choice(_ORIENTATIONS)),
        snr=float(rng.uniform(12, 35)),
        bias_amplitude=float(rng.uniform(0.1, 0.4)),
        blur_sigma_vox=float(rng.uniform(0.0, 0.5)),
        gain=float(rng.uniform(300, 1500)),
        shift=tuple(float(s) for s in rng.uniform(-30, 30, size=3)),
    )


def tissue_intensities(rng: np.random.Generator, contrast: str) -> tuple[np.ndarray, float]:
    """Randomised intensity per :class:`Tissue` and for lesions (SynthSeg-like jitter,
    keeping each contrast's ordering between cord tissues and lesion)."""
    table = _CONTRAST_TABLE[contrast]
    values = np.zeros(len(Tissue), np.float32)
    for tissue in Tissue:
        base = table[tissue.name]
        values[tissue] = base * rng.uniform(0.85, 1.15) if tissue != Tissue.AIR else 0.0
    wm, lesion = values[Tissue.WM], table["LESION"]
    # Keep lesion/WM contrast between 75 % and 125 % of the nominal one.
    delta = (lesion - table["WM"]) * rng.uniform(0.75, 1.25)
    return values, float(wm + delta)


def render_image(
    rng: np.random.Generator, anatomy: Anatomy, acq: Acquisition, fine_lesion: bool = False,
    grey_matter_contrast: float | None = None,
) -> tuple[nib.Nifti1Image, ...]:
    """Render one acquisition. Returns (image, cord mask, lesion mask).

    ``grey_matter_contrast`` t places the grey matter at white matter + t x (lesion - white matter):
    0 is white matter's intensity, 1 a lesion's (default: the contrast's own grey matter intensity).

    With ``fine_lesion`` a fourth item follows: the lesions' partial-volume
    fraction on the fine grid they were rendered on (:func:`fine_lesion_image`),
    or None when no lesion reaches the field of view.
    """
    spacing = np.asarray(acq.spacing)
    shape = np.asarray(acq.shape)
    fov_min, fine, axes = _fine_grid(acq)
    labels, cord, lesion_frac = anatomy.render(*axes)
    fine_image = fine_lesion_image(lesion_frac, fine, axes, acq) if fine_lesion else None

    values, lesion_value = tissue_intensities(rng, acq.contrast)
    if grey_matter_contrast is not None:
        values[Tissue.GM] = values[Tissue.WM] + grey_matter_contrast * (lesion_value - values[Tissue.WM])
    intensity = values[labels]
    # Subtle texture so that tissues are not perfectly flat.
    texture = ndimage.gaussian_filter(rng.standard_normal(labels.shape).astype(np.float32), 2.0)
    intensity *= 1 + 0.8 * texture  # about 4 % standard deviation
    # Coarser heterogeneity (fat septa, vessels, flow) of about 8 %.
    coarse = ndimage.zoom(rng.standard_normal(tuple(max(2, n // 12) for n in labels.shape)).astype(np.float32),
                          [n / max(2, n // 12) for n in labels.shape], order=1)[: labels.shape[0], : labels.shape[1], : labels.shape[2]]
    outside_cord = labels != Tissue.WM
    intensity[outside_cord] *= 1 + 0.08 * coarse[outside_cord]
    # Lesions mix in by their partial volume and vary per lesion.
    if lesion_frac.any():
        intensity = intensity * (1 - lesion_frac) + lesion_frac * lesion_value
    del labels

    # Point-spread function: slice profile and in-plane blur, in fine voxels.
    sigma = spacing / fine * 0.42 + acq.blur_sigma_vox * spacing / fine
    intensity = ndimage.gaussian_filter(intensity, sigma)
    coords = _voxel_coords(acq, fov_min, fine, axes)
    cord_mask = _half_covered(cord, acq, fine, coords)
    lesion_mask = _half_covered(lesion_frac, acq, fine, coords) & cord_mask
    del cord, lesion_frac
    image = ndimage.map_coordinates(intensity, coords, order=1).reshape(tuple(shape))

    # Smooth multiplicative bias field over the field of view.
    norm = [np.linspace(-1, 1, n) for n in shape]
    gx, gy, gz = np.meshgrid(*norm, indexing="ij", sparse=True)
    coeff = rng.normal(0, acq.bias_amplitude / 2, size=6)
    log_bias = coeff[0] * gx + coeff[1] * gy + coeff[2] * gz + coeff[3] * gx * gy + coeff[4] * gz**2 + coeff[5] * gy * gz
    image = image * np.exp(log_bias)

    sigma_noise = abs(float(values[Tissue.WM])) / acq.snr
    if acq.signed:
        image = image + rng.normal(0, sigma_noise, image.shape)
    else:
        image = np.sqrt((image + rng.normal(0, sigma_noise, image.shape)) ** 2 + rng.normal(0, sigma_noise, image.shape) ** 2)
    image = np.clip(image * acq.gain, -32000, 32000).astype(np.int16)

    affine = _ras_affine(acq, fov_min)
    images = tuple(_reorient(arr, affine, acq.orientation)
                   for arr in (image, cord_mask.astype(np.uint8), lesion_mask.astype(np.uint8)))
    return images + (fine_image,) if fine_lesion else images


def fine_lesion_image(lesion_frac: np.ndarray, fine: float, axes: list[np.ndarray], acq: Acquisition,
                      margin_vox: int = 2) -> nib.Nifti1Image | None:
    """The lesions' physical extent: partial-volume fraction on the fine (<= 0.5 mm) rendering grid,
    cropped to the lesions, in scanner space (RAS axes). None when there is no lesion.

    A label on the acquisition's grid marks the voxels at least half covered, so on
    3 mm slices it says how many slices a lesion covers, not how wide it is; this map
    says both, and any grid (e.g. the straightened cord's) can be labelled from it.
    """
    nonzero = np.argwhere(lesion_frac > 0)
    if not len(nonzero):
        return None
    lo = np.maximum(nonzero.min(axis=0) - margin_vox, 0)
    hi = np.minimum(nonzero.max(axis=0) + margin_vox + 1, lesion_frac.shape)
    crop = lesion_frac[tuple(slice(a, b) for a, b in zip(lo, hi))].astype(np.float32)
    affine = np.diag([fine, fine, fine, 1.0])
    affine[:3, 3] = [axes[i][lo[i]] + acq.shift[i] for i in range(3)]
    return nifti_image(crop, affine)


def render_tissue_mask(anatomy: Anatomy, acq: Acquisition, tissue: Tissue) -> nib.Nifti1Image:
    """Voxels of ``acq`` at least half covered by ``tissue`` (e.g. grey matter), on the grid of
    :func:`render_image`. Draws no random numbers, so the images rendered beside it do not change."""
    fov_min, fine, axes = _fine_grid(acq)
    labels, _, _ = anatomy.render(*axes)
    mask = _half_covered(labels == tissue, acq, fine, _voxel_coords(acq, fov_min, fine, axes))
    return _reorient(mask.astype(np.uint8), _ras_affine(acq, fov_min), acq.orientation)


def _ras_affine(acq: Acquisition, fov_min: np.ndarray) -> np.ndarray:
    """Scanner affine of the acquisition's RAS-ordered grid."""
    affine = np.diag(np.append(np.asarray(acq.spacing), 1.0))
    affine[:3, 3] = fov_min + np.asarray(acq.shift)
    return affine


def _fine_grid(acq: Acquisition) -> tuple[np.ndarray, float, list[np.ndarray]]:
    """First voxel centre, step and 1-D axes (mm) of the fine grid the anatomy is rendered on."""
    spacing, shape, center = np.asarray(acq.spacing), np.asarray(acq.shape), np.asarray(acq.center)
    fov_min = center - shape * spacing / 2 + spacing / 2
    fine = float(min(0.5, spacing.min()))
    margin = 3 * spacing.max() / 2 + 2.0
    axes = [np.arange(fov_min[i] - margin, fov_min[i] + (shape[i] - 1) * spacing[i] + margin, fine) for i in range(3)]
    return fov_min, fine, axes


def _voxel_coords(acq: Acquisition, fov_min: np.ndarray, fine: float, axes: list[np.ndarray]) -> np.ndarray:
    """The acquisition's voxel centres in fine-grid index units, shape (3, n voxels)."""
    grid = np.meshgrid(*[(fov_min[i] + np.arange(acq.shape[i]) * acq.spacing[i] - axes[i][0]) / fine
                         for i in range(3)], indexing="ij")
    return np.stack([g.ravel() for g in grid])


def _half_covered(fraction: np.ndarray, acq: Acquisition, fine: float, coords: np.ndarray) -> np.ndarray:
    """Acquisition voxels whose box average of the fine-grid ``fraction`` is at least 0.5."""
    box = np.maximum(1, np.round(np.asarray(acq.spacing) / fine)).astype(int)
    pv = ndimage.uniform_filter(fraction.astype(np.float32), box)
    # An even box is centred half a fine voxel before its output index: sample it that much later,
    # or the labels sit a quarter millimetre off the image along each such axis.
    centred = coords + 0.5 * (box % 2 == 0)[:, None]
    return ndimage.map_coordinates(pv, centred, order=1).reshape(tuple(acq.shape)) >= 0.5


def _reorient(data: np.ndarray, ras_affine: np.ndarray, code: str) -> nib.Nifti1Image:
    """Store RAS-ordered ``data`` with the axis order/flips of ``code``."""
    start = nib.orientations.axcodes2ornt("RAS")
    target = nib.orientations.axcodes2ornt(tuple(code))
    transform = nib.orientations.ornt_transform(start, target)
    out = nib.orientations.apply_orientation(data, transform)
    affine = ras_affine @ nib.orientations.inv_ornt_aff(transform, data.shape)
    return nifti_image(out, affine)
