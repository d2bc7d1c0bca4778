"""What made a run's outputs: models (version, SHA-256 of the weights), settings, results revision; the run's
settings file (``logs/config-<time>.toml``) and a methods text with references (``logs/CITATION.md``)."""
from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from .__about__ import __results_revision__, __url__, __version__
from .config import FLIP_ABOVE
from .utils.io import write_text


def run_provenance(stage1: dict, stage2: dict | None, settings: dict, locator: dict | None = None,
                   fallback: dict | None = None) -> dict:
    """The record every sidecar of a run carries; ``stage1``, ``stage2``, the cord ``locator`` and stage 1's
    ``fallback`` are the models' identities (``model.metadata.model_identity``: name, own version, weights' SHA-256)."""
    models = {"Stage1" if stage2 else "Model": stage1}
    if stage2:
        models["Stage2"] = stage2
    if locator:
        models["CordLocator"] = locator
    if fallback:
        models["Stage1Fallback"] = fallback
    return {"Software": f"bids_sclesion {__version__}", "ResultsRevision": __results_revision__, "Models": models,
            "Settings": settings}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value))  # a TOML basic string is a JSON string


def to_toml(sections: dict[str, dict]) -> str:
    """TOML of ``{section: {key: value}}`` (values: str, bool, numbers, lists, nested dicts; None left out)."""
    lines = []

    def table(name: str, values: dict) -> None:
        scalars = {k: v for k, v in values.items() if v is not None and not isinstance(v, dict)}
        lines.append(f"[{name}]")
        lines.extend(f"{json.dumps(str(k))} = {_toml_value(v)}" for k, v in scalars.items())
        lines.append("")
        for key, sub in values.items():
            if isinstance(sub, dict):
                table(f"{name}.{json.dumps(str(key))}", sub)

    for name, values in sections.items():
        table(name, values)
    return "\n".join(lines)


_ROLE_WORDS = {"CordLocator": "cord locator", "Stage1Fallback": "stage-1 fallback"}


def citation_text(provenance: dict) -> str:
    """Methods paragraph and references for a run, to paste into a paper."""
    models = provenance["Models"]
    settings = provenance["Settings"]
    described = "; ".join(f"{_ROLE_WORDS.get(role, role.lower())} `{m['Name']}` version {m['Version']} "
                          f"(weights SHA-256 {m['SHA256'][:16]}...)" for role, m in models.items())
    cascade = "Stage2" in models
    where = ("inside a box around the cord that a coarser 3D U-Net had found first" if "CordLocator" in models
             else "on the whole image")
    if settings.get("Stage1Flips") == "unsure":
        where += (" (its flipped test-time copies computed only in the sliding windows where the plain pass "
                  f"reached a probability of {FLIP_ABOVE})")
    elif settings.get("Stage1Flips") == "none":
        where += " (without test-time flips)"
    if "Stage1Fallback" in models:
        where += (" (where that cord could not be a spinal cord, the stage-1 fallback segmented the whole image "
                  "again and its cord was kept if it could)")
    steps = (f"the cord was found {where} by a 3D U-Net, the image straightened along the cord's "
             "centreline, and the cord and lesions segmented on the straightened cord by a second 3D U-Net, "
             "whose maps were brought back to the image's own grid" if cascade else
             f"the cord and lesions were segmented by a 3D U-Net {where}")
    grow = settings.get("LesionGrowThreshold")
    grown = (f", each lesion then grown into the voxels connected to it of probability at least {grow} (hysteresis)"
             if grow is not None and grow < settings.get("Threshold", grow) else "")
    return f"""# Methods and citation

Spinal cord and multiple-sclerosis lesion segmentation was performed with bids_sclesion {__version__}
({__url__}; results revision {provenance['ResultsRevision']}), a BIDS App [1, 2] built on Nipype [3] and
PyBIDS [4]. Each anatomical image was reoriented to RAS and corrected for intensity non-uniformity with N4 [5]
(ANTs, through antspyx); then {steps}. The networks are MONAI [6] U-Nets run with PyTorch [7]; images were
read and written with NiBabel [8]. Lesion voxels were those of probability at least {settings.get('Threshold')}
inside the cord{grown}; lesions smaller than {settings.get('MinLesionVolumeMM3')} mm3 were removed. Models: {described}.

This text was written by the software for this run; adapt it to your paper, and cite the references below.

## References

1. Gorgolewski KJ, Auer T, Calhoun VD, et al. The brain imaging data structure, a format for organizing and
   describing outputs of neuroimaging experiments. Sci Data 2016;3:160044.
2. Gorgolewski KJ, Alfaro-Almagro F, Auer T, et al. BIDS apps: improving ease of use, accessibility, and
   reproducibility of neuroimaging data analysis methods. PLoS Comput Biol 2017;13:e1005209.
3. Gorgolewski K, Burns CD, Madison C, et al. Nipype: a flexible, lightweight and extensible neuroimaging data
   processing framework in Python. Front Neuroinform 2011;5:13.
4. Yarkoni T, Markiewicz CJ, de la Vega A, et al. PyBIDS: Python tools for BIDS datasets. J Open Source Softw
   2019;4:1294.
5. Tustison NJ, Avants BB, Cook PA, et al. N4ITK: improved N3 bias correction. IEEE Trans Med Imaging
   2010;29:1310-1320.
6. Cardoso MJ, Li W, Brown R, et al. MONAI: an open-source framework for deep learning in healthcare.
   arXiv:2211.02701, 2022.
7. Paszke A, Gross S, Massa F, et al. PyTorch: an imperative style, high-performance deep learning library.
   NeurIPS 2019.
8. Brett M, Markiewicz CJ, Hanke M, et al. NiBabel (software). https://nipy.org/nibabel
"""


def write_run_logs(out_dir: str | Path, provenance: dict, execution: dict,
                   segmentation: dict | None = None) -> tuple[Path, Path]:
    """``logs/config-<time>.toml`` (this run's settings, one file per run) and ``logs/CITATION.md``.

    ``segmentation`` is the run's :class:`~bids_sclesion.config.SegmentationSettings` as handed to the workflow.
    """
    import torch

    logs = Path(out_dir) / "logs"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    config = logs / f"config-{stamp}.toml"
    n = 1
    while config.exists():  # two runs in the same second keep both files
        n += 1
        config = logs / f"config-{stamp}-{n}.toml"
    environment = {"version": __version__, "results_revision": __results_revision__,
                   "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
                   "command_line": " ".join(sys.argv)}
    sections = {"environment": environment, "execution": execution, "settings": provenance["Settings"],
                "models": provenance["Models"]}
    if segmentation:
        sections["segmentation"] = segmentation
    write_text(to_toml(sections), config)
    citation = write_text(citation_text(provenance), logs / "CITATION.md")
    return config, citation
