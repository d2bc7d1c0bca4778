"""Report figures: mosaics of an image with cord and lesion contours (numpy + matplotlib only)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

CORD_COLOUR = "#33c3f0"
LESION_COLOUR = "#ff3b30"


@dataclass
class View:
    """A canonical (RAS) image with its masks, ready to draw."""

    image: np.ndarray
    cord: np.ndarray
    lesion: np.ndarray
    zooms: tuple[float, float, float]


def _window(image: np.ndarray, mask: np.ndarray | None = None) -> tuple[float, float]:
    """Display range from robust percentiles (inside the cord's neighbourhood when there is one)."""
    values = image[mask] if mask is not None and mask.any() else image[np.isfinite(image)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [1, 99.5])
    return float(lo), float(hi if hi > lo else lo + 1.0)


def _neighbourhood(cord: np.ndarray, margin: int) -> np.ndarray:
    from scipy import ndimage

    return ndimage.binary_dilation(cord, iterations=margin) if cord.any() else np.ones_like(cord, bool)


def _crop_box(mask: np.ndarray, margins: tuple[int, int, int]) -> tuple[slice, slice, slice]:
    if not mask.any():
        return tuple(slice(0, n) for n in mask.shape)
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - np.asarray(margins), 0)
    hi = np.minimum(idx.max(0) + np.asarray(margins) + 1, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


def _draw(ax, image2d, cord2d, lesion2d, aspect, window):
    ax.imshow(image2d.T, cmap="gray", origin="lower", vmin=window[0], vmax=window[1], aspect=aspect,
              interpolation="nearest")
    for mask, colour, width in ((cord2d, CORD_COLOUR, 0.8), (lesion2d, LESION_COLOUR, 1.2)):
        if mask.any() and not mask.all():
            ax.contour(mask.T.astype(float), levels=[0.5], colors=colour, linewidths=width)
    ax.set_axis_off()


def sagittal_mosaic(view: View, target: Path, n_slices: int = 5) -> Path:
    """Sagittal slices (left to right) through the cord, cord and lesion contours."""
    cord_x = np.flatnonzero(view.cord.any(axis=(1, 2)))
    if cord_x.size:
        lesion_x = np.flatnonzero(view.lesion.any(axis=(1, 2)))
        xs = np.unique(np.linspace(cord_x.min(), cord_x.max(), n_slices).round().astype(int))
        if lesion_x.size:  # always show the slice through the largest lesion cross-section
            best = int(lesion_x[np.argmax([view.lesion[x].sum() for x in lesion_x])])
            xs = np.unique(np.append(xs[np.abs(xs - best) > 0][: n_slices - 1], best))
    else:
        xs = np.unique(np.linspace(0, view.image.shape[0] - 1, n_slices).round().astype(int))
    margin_vox = [max(1, int(round(15 / z))) for z in view.zooms]
    box = _crop_box(view.cord, (0, margin_vox[1], margin_vox[2]))
    window = _window(view.image, _neighbourhood(view.cord, 3))
    aspect = view.zooms[2] / view.zooms[1]
    return _save_row(
        [(view.image[x][box[1], box[2]], view.cord[x][box[1], box[2]], view.lesion[x][box[1], box[2]], f"x={x}")
         for x in xs], aspect, window, target)


def axial_mosaic(view: View, target: Path, n_slices: int = 8) -> Path:
    """Axial slices through the lesions (or spread along the cord without lesions)."""
    from scipy import ndimage

    zs: list[int] = []
    if view.lesion.any():
        lab, n = ndimage.label(view.lesion)
        sizes = ndimage.sum(view.lesion, lab, range(1, n + 1))
        for i in np.argsort(sizes)[::-1][:n_slices]:
            zs.append(int(round(ndimage.center_of_mass(lab == i + 1)[2])))
    cord_z = np.flatnonzero(view.cord.any(axis=(0, 1)))
    if len(zs) < n_slices and cord_z.size:
        extra = np.linspace(cord_z.min(), cord_z.max(), n_slices - len(zs) + 2)[1:-1].round().astype(int)
        zs.extend(int(z) for z in extra)
    if not zs:
        zs = list(np.linspace(0, view.image.shape[2] - 1, n_slices).round().astype(int))
    zs = sorted(set(zs))
    margin_vox = [max(1, int(round(12 / z))) for z in view.zooms]
    panels = []
    window = _window(view.image, _neighbourhood(view.cord, 3))
    for z in zs:
        cord2d = view.cord[:, :, z]
        box = _crop_box(cord2d[..., None] if cord2d.any() else view.cord.any(axis=2)[..., None],
                        (margin_vox[0], margin_vox[1], 0))[:2]
        panels.append((view.image[:, :, z][box], cord2d[box], view.lesion[:, :, z][box], f"z={z}"))
    return _save_row(panels, view.zooms[1] / view.zooms[0], window, target)


def straight_panel(image: np.ndarray, lesion: np.ndarray, zooms: tuple[float, float, float], target: Path) -> Path:
    """The straightened cord: middle coronal and sagittal planes along the whole cord, lesions outlined."""
    cx, cy = image.shape[0] // 2, image.shape[1] // 2
    cord = np.zeros_like(lesion, bool)
    window = _window(image)
    panels = [(image[:, cy, :], cord[:, cy, :], lesion.any(axis=1), "coronal"),
              (image[cx, :, :], cord[cx, :, :], lesion.any(axis=0), "sagittal")]
    return _save_row(panels, None, window, target, aspects=[zooms[2] / zooms[0], zooms[2] / zooms[1]])


def _save_row(panels, aspect, window, target: Path, aspects=None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(len(panels), 1)
    fig, axes = plt.subplots(1, n, figsize=(2.2 * n, 3.2), squeeze=False)
    for k, (ax, (img, cord, lesion, title)) in enumerate(zip(axes[0], panels)):
        _draw(ax, img, cord, lesion, aspects[k] if aspects else aspect, window)
        ax.set_title(title, fontsize=8)
        ax.title.set_color("white")
    return _save_on_black(fig, target)


def _save_on_black(fig, target: Path) -> Path:
    """Write a figure as a PNG on a black background, atomically, and free it."""
    import matplotlib.pyplot as plt

    from ..utils.io import atomic_path

    fig.patch.set_facecolor("black")
    fig.tight_layout(pad=0.3)
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=110, facecolor="black")
    plt.close(fig)
    return target


def levels_sagittal(view: View, levels: np.ndarray, names: dict[int, str], target: Path) -> Path:
    """The sagittal slice through most of the cord with each vertebral level coloured and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = int(np.argmax(view.cord.sum(axis=(1, 2)))) if view.cord.any() else view.image.shape[0] // 2
    margin_vox = [max(1, int(round(25 / z))) for z in view.zooms]
    box = _crop_box(view.cord, (0, margin_vox[1], margin_vox[2]))
    image2d = view.image[x][box[1], box[2]]
    level2d = levels[x][box[1], box[2]]
    window = _window(view.image, _neighbourhood(view.cord, 3))
    fig, ax = plt.subplots(figsize=(3.6, 6.0))
    ax.imshow(image2d.T, cmap="gray", origin="lower", vmin=window[0], vmax=window[1],
              aspect=view.zooms[2] / view.zooms[1], interpolation="nearest")
    shown = np.ma.masked_equal(level2d.astype(float), 0)
    ax.imshow(shown.T, cmap="tab20", vmin=1, vmax=20, alpha=0.55, origin="lower",
              aspect=view.zooms[2] / view.zooms[1], interpolation="nearest")
    for value in np.unique(level2d[level2d > 0]):
        ys, zs = np.nonzero(level2d == value)
        ax.text(ys.max() + 3, zs.mean(), names.get(int(value), str(value)), color="white", fontsize=8,
                va="center")
    title = f"vertebral levels, x={x}" if (level2d > 0).any() else f"no vertebral level, x={x}"
    ax.set_title(title, fontsize=8, color="white")
    ax.set_axis_off()
    return _save_on_black(fig, target)
