"""Analytic spinal cord anatomy evaluated on any axis-aligned grid.

Coordinates are in millimetres, subject frame, RAS axes (x: left->right,
y: posterior->anterior, z: inferior->superior). The cord runs roughly along z;
its centreline is a smooth curve with lordosis/kyphosis (y) and a lateral
deviation (x). Cross-sections are evaluated in the plane perpendicular to the
local tangent (first-order correction), so curved cords keep their true size.
"""
from __future__ import annotations

from dataclasses import dataclass, field, asdict, replace
from enum import IntEnum

import numpy as np

from .spine import RealSpine, draw_real_vertebrae
from .lesion_shape import LesionGeometry, draw_lesion_geometry, lesion_level, wavy_field


class Tissue(IntEnum):
    """Tissue classes of the phantom label map."""

    AIR = 0
    MUSCLE = 1
    FAT = 2
    CSF = 3
    WM = 4
    GM = 5
    MARROW = 6
    CORTICAL = 7
    DISC = 8
    BRAIN = 9
    LIGAMENT = 10


@dataclass
class Lesion:
    """An ellipsoidal lesion in cord-local coordinates.

    ``u``/``v`` are the centre's normalised cross-section position
    (-1..1 relative to the cord radii, v>0 anterior); ``z_mm`` its height;
    ``half_length_mm`` the half axis along the cord; ``radius_lr_mm`` and
    ``radius_ap_mm`` the cross-section half axes.
    """

    lesion_id: int
    z_mm: float
    u: float
    v: float
    half_length_mm: float
    radius_lr_mm: float
    radius_ap_mm: float
    contrast_gain: float = 1.0
    status: str = "baseline"
    #: "ellipsoid" (the default phantoms), or "oval" / "wedge" drawn by :mod:`.lesion_shape`'s rules
    #: (``--realistic-lesions``): then ``radius_lr_mm`` / ``radius_ap_mm`` are the half width and half depth
    #: of :class:`~.lesion_shape.LesionGeometry`, ``angle`` and ``centre_mm`` place it in the cross-section,
    #: and ``edge_seed`` makes its edge irregular.
    shape: str = "ellipsoid"
    angle: float = 0.0
    centre_mm: float = 0.0
    edge_seed: int = 0

    def scaled(self, factor: float, status: str) -> "Lesion":
        return replace(self, half_length_mm=self.half_length_mm * factor, radius_lr_mm=self.radius_lr_mm * factor,
                       radius_ap_mm=self.radius_ap_mm * factor, status=status)

    def record(self) -> dict:
        """The lesion as the ground-truth sidecar lists it (the shape fields only for shaped lesions)."""
        fields = asdict(self)
        if self.shape == "ellipsoid":
            for key in ("shape", "angle", "centre_mm", "edge_seed"):
                fields.pop(key)
        return fields

    def geometry(self) -> LesionGeometry:
        """The shape of an "oval" or "wedge" lesion, for :func:`~.lesion_shape.lesion_level`."""
        return LesionGeometry("", self.shape, self.angle, self.centre_mm, self.radius_lr_mm, self.radius_ap_mm,
                              self.half_length_mm, True, 0.0)


@dataclass
class Anatomy:
    """Random but anatomically ordered parameters of one subject."""

    foramen_z: float
    lordosis_amp: float
    lordosis_center: float
    lordosis_width: float
    kyphosis: float
    lateral_amp: float
    lateral_period: float
    lateral_phase: float
    cord_r_lr: float
    cord_r_ap: float
    enlargement_gain: float
    enlargement_z: float
    canal_margin_lr: float
    canal_margin_ap: float
    disc_z: list[float]
    disc_thickness: float
    body_r_lr: float
    body_r_ap: float
    neck_r_lr: float
    neck_r_ap: float
    neck_offset_ap: float
    lesions: list[Lesion] = field(default_factory=list)
    #: Grey matter shape: horn widths scaled by ``gm_width``, horns moved by ``gm_shift`` (fraction of the
    #: cord's AP radius, >0 anterior). 1 and 0 draw the reference butterfly.
    gm_width: float = 1.0
    gm_shift: float = 0.0
    #: Vertebrae drawn after real anatomy (:mod:`.spine`); ``None`` draws the default blocks.
    spine: RealSpine | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    # -- centreline -----------------------------------------------------
    def centerline(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cord centre (x, y) at heights ``z``."""
        z = np.asarray(z, dtype=np.float64)
        y = self.lordosis_amp * np.exp(-(((z - self.lordosis_center) / self.lordosis_width) ** 2))
        below = np.minimum(z - (self.lordosis_center - 1.6 * self.lordosis_width), 0.0)
        y = y - self.kyphosis * (below / 100.0) ** 2  # mm of kyphosis 100 mm below
        x = self.lateral_amp * np.sin(2 * np.pi * z / self.lateral_period + self.lateral_phase)
        return x, y

    def centerline_slope(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = 0.5
        x1, y1 = self.centerline(z + h)
        x0, y0 = self.centerline(z - h)
        return (x1 - x0) / (2 * h), (y1 - y0) / (2 * h)

    def cord_radii(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Cord half-widths (LR, AP) with the cervical enlargement and medulla."""
        z = np.asarray(z, dtype=np.float64)
        bump = np.exp(-(((z - self.enlargement_z) / 22.0) ** 2))
        rx = self.cord_r_lr * (1 + self.enlargement_gain * bump)
        ry = self.cord_r_ap * (1 + 0.3 * self.enlargement_gain * bump)
        # The medulla widens above the foramen magnum into the pons.
        widen = np.clip((z - self.foramen_z + 5.0) / 30.0, 0.0, 1.0)
        rx = rx * (1 + 0.9 * widen)
        ry = ry * (1 + 1.6 * widen)
        return rx, ry

    # -- label map ------------------------------------------------------
    def render(
        self, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Evaluate the anatomy on the grid ``xs x ys x zs`` (1-D axes, mm).

        Returns ``(labels, cord, lesion)``: the tissue label map (uint8), the
        ground-truth cord mask (bool, cord below the foramen magnum, lesions
        included) and the soft lesion fraction in [0, 1] (float32).
        """
        nx, ny, nz = len(xs), len(ys), len(zs)
        labels = np.empty((nx, ny, nz), np.uint8)
        cord = np.empty((nx, ny, nz), bool)
        lesion = np.zeros((nx, ny, nz), np.float32)
        chunk = max(1, int(4_000_000 // (nx * ny)))
        for k0 in range(0, nz, chunk):
            sl = slice(k0, min(nz, k0 + chunk))
            lab, crd, les = self._render_slab(xs, ys, np.asarray(zs[sl], dtype=np.float64))
            labels[:, :, sl] = lab
            cord[:, :, sl] = crd
            lesion[:, :, sl] = les
        return labels, cord, lesion

    def _render_slab(self, xs, ys, zs):
        X = np.asarray(xs, np.float64)[:, None, None]
        Y = np.asarray(ys, np.float64)[None, :, None]
        Z = zs[None, None, :]
        cx, cy = self.centerline(zs)
        sx, sy = self.centerline_slope(zs)
        cos_x = (1.0 / np.sqrt(1 + sx**2))[None, None, :]
        cos_y = (1.0 / np.sqrt(1 + sy**2))[None, None, :]
        rx, ry = self.cord_radii(zs)
        rx, ry = rx[None, None, :], ry[None, None, :]
        u = (X - cx[None, None, :]) * cos_x
        v = (Y - cy[None, None, :]) * cos_y
        un, vn = u / rx, v / ry
        r = np.sqrt(un**2 + vn**2)
        above_fm = Z > self.foramen_z

        shape = (len(xs), len(ys), len(zs))
        labels = np.full(shape, Tissue.AIR, np.uint8)

        # Body outline: the neck below the skull base, a wider head above.
        head = np.clip((Z - self.foramen_z + 10) / 25.0, 0, 1)
        ax_lr = self.neck_r_lr * (1 + 0.35 * head)
        ax_ap = self.neck_r_ap * (1 + 0.6 * head)
        cy_mean = float(np.mean(self.centerline(np.array([self.lordosis_center]))[1]))
        body_d = np.sqrt((X / ax_lr) ** 2 + ((Y - self.neck_offset_ap - cy_mean + 15 * head) / ax_ap) ** 2)
        inside = body_d <= 1.0
        labels[inside] = Tissue.MUSCLE
        fat_depth = 7.0 / np.minimum(ax_lr, ax_ap)
        labels[inside & (body_d > 1.0 - fat_depth)] = Tissue.FAT

        # Posterior fat between the muscles, along the midline.
        mid_fat = inside & (np.abs(X) < 1.5) & (Y < cy[None, None, :] - 20)
        labels[mid_fat] = Tissue.FAT

        # Head above the foramen magnum: skull ring, brain, cerebellum.
        skull_ring = above_fm & inside & (body_d > 1.0 - fat_depth - 7.0 / np.minimum(ax_lr, ax_ap)) & (
            body_d <= 1.0 - fat_depth
        )
        labels[skull_ring] = Tissue.MARROW
        brain = above_fm & inside & (body_d <= 1.0 - fat_depth - 7.0 / np.minimum(ax_lr, ax_ap))
        labels[brain] = Tissue.BRAIN

        # Trachea: an air tube in front of the spine, below the skull base.
        t_y = cy[None, None, :] + self.canal_margin_ap + self.cord_r_ap + 2 * self.body_r_ap + 14.0
        trachea = (~above_fm) & (Z < self.foramen_z - 45) & ((X / 8.0) ** 2 + ((Y - t_y) / 7.0) ** 2 <= 1)
        labels[trachea] = Tissue.AIR

        # Vertebrae below the foramen magnum (bodies, discs, posterior arches).
        canal_rx = rx + self.canal_margin_lr
        canal_ry = ry + self.canal_margin_ap
        canal_v0 = 0.6  # canal centre slightly anterior to the cord (mm)
        canal_d = np.sqrt((u / canal_rx) ** 2 + ((v - canal_v0) / canal_ry) ** 2)
        self._draw_vertebrae(labels, u, v, Z, zs, canal_d, canal_ry, canal_v0)
        # Clivus: bone in front of the brainstem above the foramen magnum.
        clivus = above_fm & (v > canal_ry + 2) & (v < canal_ry + 14) & (np.abs(u) < 12)
        labels[clivus] = Tissue.MARROW

        # Canal: dura (thin dark ring), CSF, cord. Cisterns widen above the foramen.
        cist = 1 + 1.2 * np.clip((Z - self.foramen_z + 5) / 20.0, 0, 1) * (v < 0)
        canal_d2 = np.sqrt((u / canal_rx) ** 2 + ((v - canal_v0) / (canal_ry * cist)) ** 2)
        labels[(canal_d2 <= 1.12) & (canal_d2 > 1.0)] = Tissue.LIGAMENT
        labels[canal_d2 <= 1.0] = Tissue.CSF
        # Cerebellum behind the brainstem.
        cb = above_fm & (((X / 45.0) ** 2 + ((v + ry + 26.0) / 22.0) ** 2 + ((Z - self.foramen_z - 30.0) / 28.0) ** 2) <= 1)
        labels[cb] = Tissue.BRAIN

        in_cord = r <= 1.0
        labels[in_cord] = Tissue.WM
        gm = in_cord & _butterfly(un, vn, self.gm_width, self.gm_shift) & ~above_fm
        labels[gm] = Tissue.GM

        cord = in_cord & (Z <= self.foramen_z)
        lesion = np.zeros(shape, np.float32)
        for les in self.lesions:
            zlo, zhi = les.z_mm - les.half_length_mm - 2, les.z_mm + les.half_length_mm + 2
            if zhi < zs[0] or zlo > zs[-1]:
                continue
            if les.shape != "ellipsoid":
                frac = _shaped_lesion(les, u, v, Z) * cord
                np.maximum(lesion, frac.astype(np.float32), out=lesion)
                continue
            du = u - les.u * rx
            dv = v - les.v * ry
            q = np.sqrt((du / les.radius_lr_mm) ** 2 + (dv / les.radius_ap_mm) ** 2 + ((Z - les.z_mm) / les.half_length_mm) ** 2)
            # Soft edge, about 0.5 mm wide, for partial volume inside the fine grid.
            width = 0.5 / max(1e-3, min(les.radius_lr_mm, les.radius_ap_mm))
            frac = np.clip((1.0 - q) / width + 0.5, 0.0, 1.0) * cord
            np.maximum(lesion, frac.astype(np.float32), out=lesion)
        return labels, cord, lesion

    def _draw_vertebrae(self, labels, u, v, Z, zs, canal_d, canal_ry, canal_v0) -> None:
        below_skull = Z < self.foramen_z - 4
        body_v0 = canal_v0 + canal_ry + 2.0 + self.body_r_ap
        if self.spine is not None:
            near_disc = draw_real_vertebrae(labels, self.spine, self.foramen_z, self.disc_z,
                                            (self.body_r_lr, self.body_r_ap), u, v, Z, zs, body_v0, Tissue)
            between = ~near_disc[None, None, :]
        else:
            disc_z = np.asarray(self.disc_z, np.float64)
            dz = np.min(np.abs(zs[:, None] - disc_z[None, :]), axis=1)[None, None, :]
            in_disc = dz < self.disc_thickness / 2
            body_d = np.abs(u / self.body_r_lr) ** 2.5 + np.abs((v - body_v0) / self.body_r_ap) ** 2.5
            vert = below_skull & (body_d <= 1.0)
            labels[vert & in_disc] = Tissue.DISC
            bone = vert & ~in_disc
            labels[bone] = Tissue.MARROW
            shell = bone & ((body_d > 0.72) | (dz < self.disc_thickness / 2 + 1.0))
            labels[shell] = Tissue.CORTICAL
            between = ~in_disc & (dz > self.disc_thickness)
        # Posterior arch (laminae) and spinous process, at the level of the bodies.
        arch = below_skull & between & (canal_d > 1.15) & (canal_d < 1.75) & (v < 0.3 * canal_ry)
        labels[arch] = Tissue.CORTICAL
        arch_core = arch & (canal_d > 1.3) & (canal_d < 1.6)
        labels[arch_core] = Tissue.MARROW
        spinous = below_skull & between & (np.abs(u) < 2.5) & (v < -canal_ry * 1.5) & (v > -canal_ry * 1.5 - 22.0)
        labels[spinous] = Tissue.MARROW


def _shaped_lesion(les: Lesion, u: np.ndarray, v: np.ndarray, Z: np.ndarray) -> np.ndarray:
    """Partial-volume fraction of an "oval" or "wedge" lesion at cross-section coordinates ``u`` (towards +x)
    and ``v`` (anterior), mm from the centreline, and heights ``Z``."""
    along = np.broadcast_to(Z - les.z_mm, np.broadcast(u, v, Z).shape)
    radial = u * np.cos(les.angle) + v * np.sin(les.angle)
    across = -u * np.sin(les.angle) + v * np.cos(les.angle)
    level = lesion_level(along, across, radial, les.geometry())
    level = level * (1.0 + 0.12 * wavy_field(les.edge_seed, along, across, radial))
    # Soft edge over about 0.15 of the lesion's size, for partial volume inside the fine grid.
    return np.clip((1.0 - level) / 0.15 + 0.5, 0.0, 1.0)


def _butterfly(un: np.ndarray, vn: np.ndarray, width: float = 1.0, shift: float = 0.0) -> np.ndarray:
    """Grey-matter 'H' shape in normalised cord coordinates (v>0 anterior); ``width`` scales the horns'
    half-widths, ``shift`` moves the whole shape along v."""
    au = np.abs(un)
    vn = vn - shift
    anterior = ((au - 0.36) / (0.2 * width)) ** 2 + ((vn - 0.25) / 0.33) ** 2 <= 1
    # Posterior horns are thin and point backwards and outwards.
    pu = au - (0.16 + 0.22 * np.clip(-vn, 0, 1))
    posterior = (pu / (0.09 * width)) ** 2 + ((vn + 0.42) / 0.4) ** 2 <= 1
    bar = (au < 0.36) & (np.abs(vn + 0.02) < 0.11 * width)
    return (anterior | posterior | bar) & (np.sqrt(un**2 + (vn + shift) ** 2) < 0.9)


def random_anatomy(rng: np.random.Generator, brainstem: bool | None = None, fov_top: float = 110.0) -> Anatomy:
    """Draw a subject. ``fov_top`` is the highest z any image will cover."""
    if brainstem is None:
        brainstem = bool(rng.random() < 0.5)
    foramen_z = fov_top - rng.uniform(25, 55) if brainstem else fov_top + rng.uniform(15, 60)
    # Discs from just below C2 downwards; cervical ~16 mm, thoracic ~22 mm apart.
    disc_z = []
    z = foramen_z - rng.uniform(38, 46)
    for level in range(16):
        disc_z.append(z)
        z -= (rng.uniform(14.5, 17.5) if level < 6 else rng.uniform(20, 24))
    return Anatomy(
        foramen_z=float(foramen_z),
        lordosis_amp=float(rng.uniform(2.0, 12.0)),
        lordosis_center=float(foramen_z - rng.uniform(60, 90)),
        lordosis_width=float(rng.uniform(35, 55)),
        kyphosis=float(rng.uniform(0.0, 25.0)),
        lateral_amp=float(rng.uniform(0.0, 4.0)),
        lateral_period=float(rng.uniform(150, 400)),
        lateral_phase=float(rng.uniform(0, 2 * np.pi)),
        cord_r_lr=float(rng.uniform(4.2, 5.4)),
        cord_r_ap=float(rng.uniform(3.2, 4.1)),
        enlargement_gain=float(rng.uniform(0.1, 0.3)),
        enlargement_z=float(foramen_z - rng.uniform(85, 105)),
        canal_margin_lr=float(rng.uniform(2.5, 4.5)),
        canal_margin_ap=float(rng.uniform(1.8, 3.5)),
        disc_z=[float(d) for d in disc_z],
        disc_thickness=float(rng.uniform(4.0, 6.5)),
        body_r_lr=float(rng.uniform(8.0, 11.0)),
        body_r_ap=float(rng.uniform(7.0, 9.0)),
        neck_r_lr=float(rng.uniform(50, 65)),
        neck_r_ap=float(rng.uniform(48, 60)),
        neck_offset_ap=float(rng.uniform(12, 22)),
    )


def random_lesions(
    rng: np.random.Generator, anatomy: Anatomy, z_range: tuple[float, float], count: int | None = None, first_id: int = 1
) -> list[Lesion]:
    """Draw lesions in the cord between ``z_range`` (mostly white matter)."""
    if count is None:
        count = 0 if rng.random() < 0.1 else int(rng.integers(1, 9))
    lesions = []
    zlo = z_range[0]
    zhi = min(z_range[1], anatomy.foramen_z - 12)
    for i in range(count):
        half_len = rng.uniform(1.0, 10.0)
        z0 = rng.uniform(zlo + half_len, max(zlo + half_len + 1, zhi - half_len))
        # White-matter columns: lateral and dorsal most often.
        angle = rng.choice([0.0, np.pi, -np.pi / 2, -np.pi / 2 + 0.5, -np.pi / 2 - 0.5, np.pi / 2]) + rng.normal(0, 0.35)
        touches_surface = rng.random() < 0.3
        radius = rng.uniform(0.75, 0.95) if touches_surface else rng.uniform(0.35, 0.75)
        rx, ry = anatomy.cord_radii(np.array([z0]))
        # MS cord lesions typically cover a white-matter column: 1-3 mm half-width.
        r_lr = float(np.clip(rng.uniform(1.0, 3.0), 0.6, 0.55 * rx[0]))
        r_ap = float(np.clip(r_lr * rng.uniform(0.7, 1.2), 0.6, 0.6 * ry[0]))
        half_len = max(half_len, r_lr)
        lesions.append(
            Lesion(
                lesion_id=first_id + i,
                z_mm=float(z0),
                u=float(radius * np.cos(angle)),
                v=float(radius * np.sin(angle)),
                half_length_mm=float(half_len),
                radius_lr_mm=r_lr,
                radius_ap_mm=r_ap,
                contrast_gain=float(rng.uniform(0.8, 1.15)),
            )
        )
    return lesions


def realistic_lesions(rng: np.random.Generator, anatomy: Anatomy, z_range: tuple[float, float], count: int,
                      first_id: int = 1) -> list[Lesion]:
    """Draw ``count`` lesions by the published pattern of :mod:`.lesion_shape` (columns, surface, size, oval or
    wedge, irregular edges) between ``z_range``."""
    lesions = []
    zlo, zhi = z_range[0], min(z_range[1], anatomy.foramen_z - 12)
    for i in range(count):
        z_guess = rng.uniform(zlo, max(zlo + 1, zhi))
        rx, ry = (float(r[0]) for r in anatomy.cord_radii(np.array([z_guess])))
        geom = draw_lesion_geometry(rng, rx, ry, "T2w")  # the contrast is the image's, not drawn here
        half_len = geom.half_length_mm
        z0 = float(np.clip(z_guess, zlo + half_len, max(zlo + half_len + 1, zhi - half_len)))
        lesions.append(Lesion(
            lesion_id=first_id + i, z_mm=z0, u=float(geom.centre_mm * np.cos(geom.angle) / rx),
            v=float(geom.centre_mm * np.sin(geom.angle) / ry), half_length_mm=float(half_len),
            radius_lr_mm=float(geom.half_width_mm), radius_ap_mm=float(geom.half_depth_mm),
            contrast_gain=float(rng.uniform(0.8, 1.15)), shape=geom.shape, angle=float(geom.angle),
            centre_mm=float(geom.centre_mm), edge_seed=int(rng.integers(2**31))))
    return lesions


def evolve_lesions(rng: np.random.Generator, anatomy: Anatomy, lesions: list[Lesion], z_range) -> list[Lesion]:
    """Lesions of a later session: some enlarge, some shrink or vanish, some are new."""
    out = []
    for les in lesions:
        p = rng.random()
        if p < 0.3:
            out.append(les.scaled(float(rng.uniform(1.25, 1.6)), "enlarging"))
        elif p < 0.4:
            out.append(les.scaled(float(rng.uniform(0.65, 0.85)), "shrinking"))
        elif p < 0.45:
            continue  # resolved
        else:
            out.append(les.scaled(1.0, "stable"))
    n_new = int(rng.poisson(0.9))
    next_id = max([les.lesion_id for les in lesions], default=0) + 1
    # New lesions take the shape rules of the old ones.
    draw = realistic_lesions if any(les.shape != "ellipsoid" for les in lesions) else random_lesions
    for les in draw(rng, anatomy, z_range, n_new, first_id=next_id):
        les.status = "new"
        out.append(les)
    return out
