"""Group report (``OUT_DIR/group.html``, figures in ``OUT_DIR/figures/``)."""
from __future__ import annotations

import csv
import html
from pathlib import Path

import numpy as np

from .. import __version__
from ..core.morphometry import LEVEL_NAMES
from ..derivatives import source_of_lesion_table
from ..utils.io import atomic_path, write_text


def _lesion_positions(out_dir: Path, participants: set[str]) -> dict[str, list[float]]:
    """Distance from the top of the cord of every lesion, per contrast."""
    positions: dict[str, list[float]] = {}
    for table in sorted(out_dir.glob("sub-*/**/anat/*_lesions.tsv")):
        source = source_of_lesion_table(table, out_dir)
        if f"sub-{source.subject}" not in participants:
            continue
        with open(table, newline="") as fh:
            for row in csv.DictReader(fh, delimiter="\t"):
                value = row.get("distance_from_top_mm", "n/a")
                if value not in ("n/a", ""):
                    positions.setdefault(source.suffix, []).append(float(value))
    return positions


def _figure(target: Path, draw) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2))
    draw(ax)
    fig.tight_layout()
    with atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return target


def write_group_report(out_dir: Path, rows: list[dict], level_rows: list[dict], longitudinal: list[dict],
                       problems: list[str]) -> Path:
    """``group.html``: failed images first, then the figures and tables of the images with a result."""
    out_dir = Path(out_dir)
    failed = [r for r in rows if r.get("status") == "failed"]
    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    subjects = sorted({r["participant_id"] for r in rows})
    made = group_figures(out_dir, rows, level_rows)
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>bids_sclesion group report</title>"
             "<style>body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1000px}"
             "table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:.2em .5em}"
             "th{background:#f3f3f3}img{max-width:100%}.warning{background:#fff4e5;padding:.4em .8em}</style>"
             "</head><body>",
             f"<h1>Group report</h1><p>bids_sclesion {esc(__version__)}; {len(subjects)} subject(s), "
             f"<span id='n-images'>{len(rows)}</span> image(s). Tables: <code>group_lesions.tsv</code>, "
             "<code>group_levels.tsv</code>"
             f"{', <code>group_longitudinal.tsv</code>, <code>group_lesion_changes.tsv</code>' if longitudinal else ''}."
             "</p>"]
    for problem in problems:
        parts.append(f"<p class='warning'>{esc(problem)}</p>")
    parts.extend(_failed_section(failed))
    for caption, path in made:
        parts.append(f"<figure><img src='{esc(path.relative_to(out_dir).as_posix())}' alt='{esc(caption)}'>"
                     f"<figcaption>{esc(caption)}</figcaption></figure>")
    parts.extend(_tables(rows, longitudinal))
    parts.append("</table></body></html>")
    target = out_dir / "group.html"
    write_text("\n".join(parts) + "\n", target)
    return target


def group_figures(out_dir: Path, rows: list[dict], level_rows: list[dict]) -> list[tuple[str, Path]]:
    """The group figures (caption, file) of the images that have a result."""
    figures = out_dir / "figures"
    subjects = sorted({r["participant_id"] for r in rows})
    counts = {s: sum(int(r["n_lesions"]) for r in rows if r["participant_id"] == s) for s in subjects}
    volumes = {s: sum(float(r["total_lesion_volume_mm3"]) for r in rows if r["participant_id"] == s) for s in subjects}
    made = []

    def bars(ax):
        x = np.arange(len(subjects))
        ax.bar(x - 0.2, [counts[s] for s in subjects], 0.4, label="lesions (all images)", color="#d9534f")
        ax.set_ylabel("lesions")
        ax2 = ax.twinx()
        ax2.bar(x + 0.2, [volumes[s] for s in subjects], 0.4, label="volume", color="#5bc0de")
        ax2.set_ylabel("total volume (mm³)")
        ax.set_xticks(x, subjects, rotation=60, fontsize=7)
        ax.set_title("Lesion count (red) and total volume (blue) per subject")

    made.append(("Lesions per subject", _figure(figures / "group_lesions_per_subject.png", bars)))
    positions = _lesion_positions(out_dir, set(subjects))

    def histogram(ax):
        data = [v for vs in positions.values() for v in vs]
        if data:
            ax.hist([positions[k] for k in sorted(positions)], bins=np.arange(0, max(data) + 10, 10), stacked=True,
                    label=sorted(positions))
            ax.legend(fontsize=7)
        ax.set_xlabel("distance from the top of the cord in the image (mm)")
        ax.set_ylabel("lesions")
        ax.set_title("Where lesions lie along the cord")

    made.append(("Lesions along the cord", _figure(figures / "group_lesion_positions.png", histogram)))
    order = {name: label for label, name in LEVEL_NAMES.items()}
    names = sorted({r["vertebral_level"] for r in level_rows}, key=lambda n: order.get(n, 99))

    def by_level(ax):
        suffixes = sorted({r["suffix"] for r in level_rows})
        bottom = np.zeros(len(names))
        for suffix in suffixes:
            counts = np.array([sum(int(r["n_lesions"]) for r in level_rows
                                   if r["vertebral_level"] == n and r["suffix"] == suffix) for n in names])
            ax.bar(np.arange(len(names)), counts, bottom=bottom, label=suffix)
            bottom += counts
        ax.set_xticks(np.arange(len(names)), names)
        ax.set_ylabel("lesions (all subjects and sessions)")
        ax.set_title("Lesions by vertebral level (level of each lesion's centroid)")
        if suffixes:
            ax.legend(fontsize=7)
        if not names:
            ax.text(0.5, 0.5, "no image has vertebral levels", ha="center", transform=ax.transAxes)

    made.append(("Lesions by vertebral level", _figure(figures / "group_lesions_by_level.png", by_level)))

    def csa_by_level(ax):
        data = [[float(r["csa_mean_mm2"]) for r in level_rows if r["vertebral_level"] == n] for n in names]
        if names:
            ax.boxplot(data, positions=np.arange(len(names)))
            ax.set_xticks(np.arange(len(names)), names)
        ax.axhspan(65, 85, color="#5cb85c", alpha=0.15, label="healthy adult C2-C3, published range")
        ax.set_ylabel("mean CSA (mm²)")
        ax.set_title("Cord cross-sectional area by vertebral level (one value per image)")
        ax.legend(fontsize=7)

    made.append(("Cord area by vertebral level", _figure(figures / "group_csa_by_level.png", csa_by_level)))
    return made


def _failed_section(failed: list[dict]) -> list[str]:
    esc = html.escape
    parts = []
    parts.append(f"<section id='failed'><h2>Failed images (<span id='n-failed'>{len(failed)}</span>)</h2>")
    if failed:
        parts.append("<p class='warning'>These images have no result from their latest participant run; they are "
                     "left out of the figures and sums below.</p><table class='failed'><tr><th>subject</th>"
                     "<th>session</th><th>image</th><th>reason</th></tr>")
        parts.extend(f"<tr><td>{esc(r['participant_id'])}</td><td>{esc(r['session_id'])}</td>"
                     f"<td>{esc(r['source'])}</td><td>{esc(r['failure_reason'])}</td></tr>" for r in failed)
        parts.append("</table>")
    else:
        parts.append("<p>None: every image selected has a result.</p>")
    parts.append("</section>")
    return parts


def _tables(rows: list[dict], longitudinal: list[dict]) -> list[str]:
    """Per contrast, change between sessions, and one row per image."""
    esc = html.escape
    parts = []
    parts.append("<h2>Per contrast</h2><table><tr><th>contrast</th><th>images</th><th>lesions</th>"
                 "<th>mean lesions / image</th><th>mean volume / image (mm³)</th></tr>")
    for suffix in sorted({r["suffix"] for r in rows}):
        sel = [r for r in rows if r["suffix"] == suffix]
        n = sum(int(r["n_lesions"]) for r in sel)
        vol = np.mean([float(r["total_lesion_volume_mm3"]) for r in sel])
        parts.append(f"<tr><td>{esc(suffix)}</td><td>{len(sel)}</td><td>{n}</td><td>{n / len(sel):.2f}</td>"
                     f"<td>{vol:.1f}</td></tr>")
    parts.append("</table>")
    if longitudinal:
        parts.append("<h2>Change between sessions</h2><table class='longitudinal'><tr><th>subject</th><th>image</th>"
                     "<th>sessions</th><th>new</th><th>enlarging</th><th>stable</th><th>shrinking</th>"
                     "<th>disappeared</th></tr>")
        for r in longitudinal:
            parts.append(f"<tr><td>{esc(r['participant_id'])}</td><td>{esc(r['image'])}</td>"
                         f"<td>{esc(r['session_earlier'])} → {esc(r['session_later'])}</td>"
                         + "".join(f"<td>{r['n_' + k]}</td>" for k in ("new", "enlarging", "stable", "shrinking",
                                                                        "disappeared")) + "</tr>")
        parts.append("</table>")
    parts.append("<h2>Images</h2><table><tr><th>subject</th><th>session</th><th>image</th><th>lesions</th>"
                 "<th>volume (mm³)</th><th>levels</th><th>C2-C3 CSA (mm²)</th><th>report</th></tr>")
    for r in rows:
        parts.append(f"<tr><td>{esc(r['participant_id'])}</td><td>{esc(r['session_id'])}</td>"
                     f"<td>{esc(r['source'])}</td><td>{r['n_lesions']}</td><td>{r['total_lesion_volume_mm3']}</td>"
                     f"<td>{esc(str(r.get('levels', 'n/a')))}</td><td>{esc(str(r.get('csa_c2c3_mm2', 'n/a')))}</td>"
                     f"<td><a href='{esc(r['participant_id'])}.html'>{esc(r['participant_id'])}.html</a></td></tr>")
    return parts
