"""MkDocs hook: publish the bundled models' cards (bids_sclesion/data/models/*/MODEL_CARD.md) under models/."""
from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

MODELS = Path(__file__).resolve().parents[2] / "bids_sclesion" / "data" / "models"


def on_files(files, config):
    cards = sorted(MODELS.glob("*/MODEL_CARD.md"))
    lines = ["# Model cards", "",
             "Every model the app uses by default ships inside the package, with its card: what it was trained on "
             "and how well it does on data it did not see. The cards are the files "
             "`bids_sclesion/data/models/<name>/MODEL_CARD.md`.", ""]
    for card in cards:
        name = card.parent.name
        files.append(File.generated(config, f"models/{name}.md", content=card.read_text()))
        first = next((ln.lstrip("# ").strip() for ln in card.read_text().splitlines() if ln.startswith("#")), name)
        lines.append(f"- [{name}]({name}.md): {first}")
    files.append(File.generated(config, "models/index.md", content="\n".join(lines) + "\n"))
    return files
