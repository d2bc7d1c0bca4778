"""Grey matter of varied shape, and lesions on or across it (``bids_sclesion-synth --varied-grey-matter``)."""
from __future__ import annotations

import numpy as np

from .anatomy import Anatomy, Lesion

#: Centres of the grey matter's horns in normalised cord coordinates (|u|, v): anterior, posterior.
GREY_MATTER_HORNS = ((0.36, 0.25), (0.2, -0.42))


def vary_grey_matter(rng: np.random.Generator, anatomy: Anatomy) -> None:
    """Give ``anatomy`` a grey matter of another width and position (real butterflies vary)."""
    anatomy.gm_width = float(rng.uniform(0.75, 1.4))
    anatomy.gm_shift = float(rng.uniform(-0.08, 0.08))


def grey_matter_lesions(rng: np.random.Generator, anatomy: Anatomy, z_range: tuple[float, float], count: int,
                        first_id: int = 1) -> list[Lesion]:
    """Lesions centred on a grey matter horn or on its boundary with the white matter, so that a
    lesion on or across the grey matter is labelled a lesion while the grey matter around it is not."""
    lesions = []
    zlo, zhi = z_range[0], min(z_range[1], anatomy.foramen_z - 12)
    for i in range(count):
        half_len = rng.uniform(1.5, 10.0)
        z0 = rng.uniform(zlo + half_len, max(zlo + half_len + 1, zhi - half_len))
        hu, hv = GREY_MATTER_HORNS[int(rng.integers(2))]
        side = 1.0 if rng.random() < 0.5 else -1.0
        # On the horn (offset 0) or reaching across its edge (offset up to about one horn width).
        u = side * hu + rng.normal(0, 0.12)
        v = hv + anatomy.gm_shift + rng.normal(0, 0.12)
        rx, ry = anatomy.cord_radii(np.array([z0]))
        r_lr = float(np.clip(rng.uniform(0.8, 2.5), 0.6, 0.45 * rx[0]))
        r_ap = float(np.clip(r_lr * rng.uniform(0.7, 1.3), 0.6, 0.5 * ry[0]))
        lesions.append(Lesion(lesion_id=first_id + i, z_mm=float(z0), u=float(u), v=float(v),
                              half_length_mm=float(max(half_len, r_lr)), radius_lr_mm=r_lr, radius_ap_mm=r_ap,
                              contrast_gain=float(rng.uniform(0.8, 1.15))))
    return lesions
