"""Per-subject HTML report (``OUT_DIR/sub-XX.html``, figures in ``sub-XX/figures/``).

Built from the derivatives on disk and the raw images, after the workflow:
a report can be regenerated at any time and shows exactly what was written.
"""
from __future__ import annotations

import csv
import html
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from .. import __version__
from ..derivatives import SourceName
from ..utils.io import write_text
from .figures import View, axial_mosaic, levels_sagittal, sagittal_mosaic, straight_panel

LOGGER = logging.getLogger("bids_sclesion.reports")

#: A lesion found by fewer test-time copies than this is flagged.
LOW_CONFIDENCE = 0.5


@dataclass
class ImageSection:
    source: str
    suffix: str
    figures: list[tuple[str, str]] = field(default_factory=list)  # (caption, path relative to OUT_DIR)
    lesions: list[dict] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    model: dict = field(default_factory=dict)
    levels: list[dict] = field(default_factory=list)  # rows of the per-level table
    failed: str | None = None  # why no result exists


def _canonical(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    img = nib.as_closest_canonical(nib.load(str(path)))
    return np.asarray(img.dataobj, np.float32), tuple(float(z) for z in img.header.get_zooms()[:3])


def image_warnings(cord: np.ndarray, lesion_rows: list[dict]) -> list[str]:
    """What a reader should check before trusting the result."""
    out = []
    if not cord.any():
        out.append("No spinal cord was found in the field of view: no lesion can be reported for this image.")
    else:
        # A cord that touches the in-plane border is cut by the field of view.
        edges = cord[0].any() or cord[-1].any() or cord[:, 0].any() or cord[:, -1].any()
        if edges:
            out.append("The cord touches the in-plane border of the field of view: part of it may lie outside "
                       "the image, and lesions there are missed.")
        extent = np.flatnonzero(cord.any(axis=(0, 1)))
        if extent.size and extent.size < 0.3 * cord.shape[2] and cord.shape[2] > 10:
            out.append(f"The cord covers only {extent.size} of {cord.shape[2]} slices along the superior-inferior "
                       "axis: check that the segmentation did not stop early.")
    low = [r["lesion_id"] for r in lesion_rows
           if r.get("confidence", "n/a") not in ("n/a", "") and float(r["confidence"]) < LOW_CONFIDENCE]
    if low:
        out.append(f"Low confidence (found by fewer than {LOW_CONFIDENCE:.0%} of the test-time copies): "
                   f"lesion(s) {', '.join(low)}.")
    return out


def build_image_section(source_path: Path, bids_dir: Path, out_dir: Path) -> ImageSection:
    """Figures and facts of one processed image (figures are written now)."""
    source = SourceName(source_path, bids_dir)
    section = ImageSection(source=source_path.name, suffix=source.suffix)
    outputs = source.outputs(out_dir)
    missing = [k for k, p in outputs.items() if not p.exists()]
    if missing:
        section.failed = f"no result ({', '.join(missing)} missing): see the run's log and crash files"
        return section
    with open(outputs["lesion_table"], newline="") as fh:
        section.lesions = list(csv.DictReader(fh, delimiter="\t"))
    sidecar = outputs["lesion_mask"].with_name(outputs["lesion_mask"].name.replace(".nii.gz", ".json"))
    if sidecar.exists():
        section.model = json.loads(sidecar.read_text()).get("Model", {})
    image, zooms = _canonical(source_path)
    cord, _ = _canonical(outputs["cord_mask"])
    lesion, _ = _canonical(outputs["lesion_mask"])
    view = View(image, cord > 0, lesion > 0, zooms)
    section.warnings = image_warnings(view.cord, section.lesions)
    figures = out_dir / f"sub-{source.subject}" / "figures"
    stem = f"{source.entities}_desc-{source.suffix}"
    section.figures.append(("Sagittal slices, cord (blue) and lesions (red)",
                            _rel(sagittal_mosaic(view, figures / f"{stem}_sagittal.png"), out_dir)))
    section.figures.append(("Axial slices through the lesions",
                            _rel(axial_mosaic(view, figures / f"{stem}_axial.png"), out_dir)))
    with open(outputs["level_table"], newline="") as fh:
        section.levels = list(csv.DictReader(fh, delimiter="\t"))
    level_sidecar = outputs["level_map"].with_name(outputs["level_map"].name.replace(".nii.gz", ".json"))
    labelling = json.loads(level_sidecar.read_text()).get("VertebralLabelling", {}) if level_sidecar.exists() else {}
    from ..core.morphometry import LEVEL_NAMES

    if labelling.get("Method") == "none":
        section.warnings.append(f"No vertebral level: {labelling.get('Reason', 'unknown')}. Lesion levels and "
                                "per-level CSA are n/a for this image.")
        how = "none could be given"
    else:
        how = ("from the user's disc labels" if labelling.get("Method") == "user" else
               f"template match, correlation {labelling.get('Correlation')}")
    # Always drawn (an empty map shows the slice alone), so every image has the same figures.
    levels, _ = _canonical(outputs["level_map"])
    section.figures.append((f"Vertebral levels of the cord ({how})",
                            _rel(levels_sagittal(view, np.rint(levels).astype(int), LEVEL_NAMES,
                                                 figures / f"{stem}_levels.png"), out_dir)))
    warp = source.warps(out_dir)["to_straight_xfm"]
    if warp.exists():
        straight = _straighten(source_path, outputs["lesion_mask"], warp)
        if straight is not None:
            section.figures.append(("Straightened cord (whole length), lesions (red)",
                                    _rel(straight_panel(*straight, figures / f"{stem}_straight.png"), out_dir)))
    return section


def _straighten(image_path: Path, lesion_path: Path, warp_path: Path):
    from ..core.straighten import apply_points, field_target_points

    try:
        warp = nib.load(str(warp_path))
        points = field_target_points(warp)
    except (ValueError, OSError) as exc:
        LOGGER.warning("%s: cannot read the straightening warp (%s)", warp_path, exc)
        return None
    img = nib.load(str(image_path))
    les = nib.load(str(lesion_path))
    image = apply_points(np.asarray(img.dataobj, np.float32), img.affine, points, order=1)
    lesion = apply_points(np.asarray(les.dataobj, np.float32), les.affine, points, order=0) > 0.5
    zooms = tuple(float(z) for z in warp.header.get_zooms()[:3])
    return image, lesion, zooms


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def write_subject_report(subject: str, sources: list[Path], bids_dir: Path, out_dir: Path,
                         failures: dict[str, str] | None = None) -> Path:
    """``OUT_DIR/sub-<subject>.html``: every image of the subject, its figures, lesions and warnings."""
    failures = failures or {}
    sections = []
    for path in sorted(sources):
        try:
            section = build_image_section(Path(path), bids_dir, out_dir)
        except Exception as exc:  # a broken derivative must not hide the other images
            LOGGER.warning("%s: report section failed (%s)", path, exc)
            section = ImageSection(source=Path(path).name, suffix="", failed=f"report could not be made: {exc}")
        if Path(path).name in failures:
            section.failed = failures[Path(path).name]
        sections.append(section)
    target = out_dir / f"sub-{subject}.html"
    write_text(render_html(subject, sections, run_about(out_dir)), target)
    return target


def run_about(out_dir: Path) -> dict:
    """What the report's "About" says: the last run's command line, date, versions, models and settings
    (``logs/config-*.toml`` and the provenance of ``dataset_description.json``)."""
    import tomllib

    about: dict = {}
    try:
        about["provenance"] = json.loads((out_dir / "dataset_description.json").read_text()).get("Provenance", {})
    except (OSError, ValueError):
        about["provenance"] = {}
    configs = sorted((out_dir / "logs").glob("config-*.toml"), key=lambda f: f.stat().st_mtime)
    if configs:
        try:
            environment = tomllib.loads(configs[-1].read_text()).get("environment", {})
            about.update(command_line=environment.get("command_line", ""), python=environment.get("python", ""),
                         torch=environment.get("torch", ""), settings_file=_rel(configs[-1], out_dir))
            about["date"] = time.strftime("%Y-%m-%d %H:%M", time.localtime(configs[-1].stat().st_mtime))
        except (OSError, ValueError):
            pass
    return about


_CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1100px;color:#222}
h1{font-size:1.5em}h2{font-size:1.2em;border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
.warning{background:#fff4e5;border-left:4px solid #f0a030;padding:.4em .8em;margin:.3em 0}
.failed{background:#fdecea;border-left:4px solid #d93025;padding:.4em .8em}
figure{margin:.8em 0}figure img{max-width:100%;background:#000}figcaption{font-size:.85em;color:#555}
table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:right}
th{background:#f3f3f3}.meta{font-size:.85em;color:#555}
"""

_COLUMNS = [("lesion_id", "lesion"), ("volume_mm3", "volume (mm³)"), ("extent_along_cord_mm", "length (mm)"),
            ("distance_from_top_mm", "from top (mm)"), ("vertebral_level", "level"),
            ("vertebral_levels_spanned", "levels spanned"),
            ("cord_area_mm2", "cord area (mm²)"), ("mean_probability", "mean p"), ("confidence", "confidence")]


def _about_html(about: dict) -> list[str]:
    esc = html.escape
    rows = [("date", about.get("date", "")), ("command line", about.get("command_line", "")),
            ("software", about.get("provenance", {}).get("Software", f"bids_sclesion {__version__}")),
            ("results revision", about.get("provenance", {}).get("ResultsRevision", "")),
            ("Python / PyTorch", " / ".join(v for v in (about.get("python"), about.get("torch")) if v))]
    for role, model in about.get("provenance", {}).get("Models", {}).items():
        rows.append((f"model ({role.lower()})", f"{model.get('Name')} {model.get('Version')}, weights SHA-256 "
                     f"{str(model.get('SHA256', ''))[:16]}..."))
    for key, value in about.get("provenance", {}).get("Settings", {}).items():
        rows.append((key, value))
    if about.get("settings_file"):
        rows.append(("all settings", about["settings_file"]))
    cells = "".join(f"<tr><th>{esc(str(k))}</th><td style='text-align:left'>{esc(str(v))}</td></tr>"
                    for k, v in rows if v not in ("", None))
    return ["<section id='about'><h2>About</h2>", f"<table class='about'>{cells}</table>",
            "<p class='meta'>Methods text with references: <code>logs/CITATION.md</code>.</p></section>"]


def render_html(subject: str, sections: list[ImageSection], about: dict | None = None) -> str:
    esc = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sub-{esc(subject)}: "
             f"bids_sclesion report</title><style>{_CSS}</style></head><body>",
             f"<h1>sub-{esc(subject)}</h1>",
             f"<p class='meta'>bids_sclesion {esc(__version__)}; {len(sections)} image(s). Masks and tables are in "
             f"<code>sub-{esc(subject)}/</code> beside this page.</p>"]
    total = sum(len(s.lesions) for s in sections if not s.failed)
    parts.append(f"<p>Lesions in all images: <span id='total-lesions'>{total}</span></p>")
    failed = [s for s in sections if s.failed]
    parts.append("<section id='errors'><h2>Errors</h2>")
    if failed:
        parts.append("<ul>" + "".join(f"<li class='failed'>{esc(s.source)}: {esc(s.failed)}</li>" for s in failed)
                     + "</ul>")
    else:
        parts.append("<p>No errors: every image of this subject was processed.</p>")
    parts.append("</section>")
    for k, s in enumerate(sections):
        parts.append(f"<section class='image' id='image-{k}' data-source='{esc(s.source)}'>")
        parts.append(f"<h2>{esc(s.source)}</h2>")
        if s.failed:
            parts.append(f"<p class='failed'>Failed: {esc(s.failed)}</p></section>")
            continue
        if s.model:
            models = "; ".join(f"{esc(str(k2))}: {esc(str(v.get('Name', v)) if isinstance(v, dict) else str(v))}"
                               for k2, v in s.model.items())
            parts.append(f"<p class='meta'>Model: {models}</p>")
        for w in s.warnings:
            parts.append(f"<p class='warning'>{esc(w)}</p>")
        parts.append(f"<p>Lesions: <span class='lesion-count'>{len(s.lesions)}</span>, total volume "
                     f"{sum(float(r['volume_mm3']) for r in s.lesions):.1f} mm³</p>")
        for caption, src in s.figures:
            parts.append(f"<figure><img src='{esc(src)}' alt='{esc(caption)}'><figcaption>{esc(caption)}"
                         "</figcaption></figure>")
        if s.lesions:
            parts.append("<table class='lesions'><tr>" + "".join(f"<th>{esc(h)}</th>" for _, h in _COLUMNS) + "</tr>")
            for row in s.lesions:
                parts.append("<tr>" + "".join(f"<td>{esc(str(row.get(c, 'n/a')))}</td>" for c, _ in _COLUMNS)
                             + "</tr>")
            parts.append("</table>")
        if s.levels:
            parts.append("<table class='levels'><tr><th>level</th><th>CSA mean (mm²)</th><th>CSA SD (mm²)</th>"
                         "<th>length (mm)</th><th>cord volume (mm³)</th><th>lesions</th><th>lesion volume (mm³)</th>"
                         "</tr>")
            for row in s.levels:
                parts.append("<tr>" + "".join(f"<td>{esc(str(row.get(c, 'n/a')))}</td>" for c in (
                    "vertebral_level", "csa_mean_mm2", "csa_sd_mm2", "length_mm", "cord_volume_mm3", "n_lesions",
                    "lesion_volume_mm3")) + "</tr>")
            parts.append("</table>")
        parts.append("</section>")
    parts.extend(_about_html(about or {}))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"
