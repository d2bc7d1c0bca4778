"""Command-line parser of the BIDS App (``bids_sclesion``)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import __version__
from ..config import (DEFAULT_LOCATOR, DEFAULT_STAGE1, DEFAULT_STAGE1_FALLBACK, DEFAULT_STAGE2, DEFAULT_THRESHOLD,
                      FLIP_ABOVE, PRECISIONS, STAGE1_FLIPS)
from ..core.lesions import DEFAULT_GROW_THRESHOLD, DEFAULT_MIN_LESION_MM3

#: Anatomical suffixes the bundled models are trained for, including the
#: non-standard ones MS datasets use (PSIR, STIR, T2star).
SUPPORTED_SUFFIXES = ("T2w", "T1w", "PSIR", "STIR", "T2starw", "T2star")


class ExitCode:
    """Exit codes, following the BIDS Apps execution conventions."""

    SUCCESS = 0
    FAILURE = 1  # at least one image failed to process
    INVALID_DATASET = 16  # not a BIDS dataset, or validation failed
    INVALID_ARGUMENTS = 17  # arguments that contradict each other or the dataset
    NO_DATA = 18  # the filters select no file
    # Where the BIDS execution conventions borrow them from sysexits.h:
    USAGE = 64  # the command line cannot be parsed (EX_USAGE)
    CANNOT_CREATE = 73  # the output or work directory cannot be created or written (EX_CANTCREAT)
    TEMPORARY_FAILURE = 75  # a participant is being written by another run: try again later (EX_TEMPFAIL)


class AppArgumentParser(argparse.ArgumentParser):
    """Exits with :attr:`ExitCode.USAGE` on a command line it cannot parse (argparse's own is 2)."""

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE, f"{self.prog}: error: {message}\n")


class DefaultsHelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" to an option's help, once: not when the help already says its default, nor for
    switches and options without one (None)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if ("default" in text.lower() or default is None or default is False or default == argparse.SUPPRESS
                or default == [] or not action.option_strings or action.nargs == 0):
            return text
        shown = " ".join(map(str, default)) if isinstance(default, (list, tuple)) else default
        return f"{text} (default: {shown})" if text else f"(default: {shown})"


def _label(value: str) -> str:
    label = value[4:] if value.startswith("sub-") else value
    return label


def _session(value: str) -> str:
    return value[4:] if value.startswith("ses-") else value


def get_parser() -> argparse.ArgumentParser:
    p = AppArgumentParser(
        prog="bids_sclesion",
        description="Spinal cord and multiple-sclerosis lesion segmentation of a BIDS dataset "
        "(sagittal T2w, STIR, PSIR, T1w MPRAGE, axial T2*w).",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument("bids_dir", type=Path, help="the root of the input BIDS dataset")
    p.add_argument("output_dir", type=Path,
                   help="where the derivatives are written: outside BIDS_DIR, or BIDS_DIR/derivatives/<name>")
    p.add_argument("analysis_level", choices=["participant", "group"], help="processing stage")
    p.add_argument("--version", action="version", version=f"bids_sclesion {__version__}")

    g = p.add_argument_group("selecting data")
    g.add_argument("--participant-label", "--participant_label", nargs="+", type=_label, metavar="LABEL",
                   help="subjects to process, with or without 'sub-' (default: all)")
    g.add_argument("--session-label", nargs="+", type=_session, metavar="LABEL",
                   help="sessions to process, with or without 'ses-' (default: all)")
    g.add_argument("--bids-filter-file", type=Path, metavar="FILE",
                   help="JSON of pybids filters, e.g. {\"acquisition\": \"sag\"}, applied to every query")
    g.add_argument("--contrast", nargs="+", default=None, metavar="SUFFIX",
                   help="image suffixes to process (default: those every model of the run was trained on, with "
                        "aliases such as T2star for T2starw)")
    g.add_argument("--derivatives", nargs="+", type=Path, metavar="DIR",
                   help="derivatives folders with the user's disc labels (SCT style, e.g. "
                        "sub-01/anat/sub-01_T2w_labels-disc.nii.gz: one voxel per disc, value 3 = C2/C3): images "
                        "that have them take their vertebral levels from them instead of the template")
    g.add_argument("--skip-bids-validation", "--skip_bids_validation", action="store_true",
                   help="do not run the BIDS validator on the input")

    g = p.add_argument_group("resources")
    g.add_argument("-w", "--work-dir", type=Path, default=None,
                   help="work directory (intermediate files, cache; rerunning reuses it). Default: OUTPUT_DIR/../work, "
                        "or ./work when OUTPUT_DIR is BIDS_DIR/derivatives/<name>")
    g.add_argument("--nprocs", "--nthreads", type=int, default=None, help="maximum number of parallel processes")
    g.add_argument("--omp-nthreads", type=int, default=None, help="threads per process (torch, ITK)")
    mem = g.add_mutually_exclusive_group()
    mem.add_argument("--mem-gb", "--mem_gb", type=float, default=None, help="memory limit for the scheduler (GB)")
    mem.add_argument("--mem", "--mem-mb", "--mem_mb", type=float, default=None, metavar="MB",
                     help="memory limit for the scheduler in MB (as fMRIPrep's --mem)")
    g.add_argument("--bids-database-dir", type=Path, default=None, metavar="DIR",
                   help="where the pybids index of BIDS_DIR is kept and reused until the dataset changes; share one "
                        "between the tasks of a SLURM array so that the dataset is indexed once. Default: WORK_DIR/bids_db")
    g.add_argument("--stop-on-first-crash", action="store_true",
                   help="stop the whole run at the first step that fails (default: a failed image never stops the others)")
    g.add_argument("--use-plugin", type=Path, default=None, metavar="FILE",
                   help="Nipype plugin YAML, e.g. 'plugin: SLURM' with plugin_args")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                   help="where the network runs: auto uses a GPU when there is one")
    g.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="what the network computes in: auto uses half precision where the hardware computes it "
                        "natively (float16 on a CUDA GPU, bfloat16 on a CPU with AMX or AVX512-BF16, where the "
                        "segmentation step is 1.3-1.4x faster), "
                        "float32 elsewhere; float32 gives the same result on every CPU. The precision used is "
                        "recorded in each output's sidecar (Model.Precision)")

    g = p.add_argument_group("model")
    g.add_argument("--model", default=DEFAULT_STAGE1,
                   help="whole-image model (stage 1 of the cascade): bundled model name or model directory")
    g.add_argument("--cord-locator", default=DEFAULT_LOCATOR or "none", metavar="MODEL",
                   help="coarse whole-image model (bundled name or model directory) that first finds a box around "
                        "the cord; the whole-image model then runs only inside it: faster, but with stage1_2mm more small "
                        "false lesions on healthy real cords (docs/real_anatomy.md). 'none': the whole-image model "
                        f"runs on the whole image (default: {DEFAULT_LOCATOR or 'none'})")
    g.add_argument("--stage1-fallback", default=DEFAULT_STAGE1_FALLBACK or "none", metavar="MODEL",
                   help="whole-image model (bundled name or model directory) that segments an image again, on the "
                        "whole image, where the first model's cord cannot be a spinal cord (too thin, too short, or "
                        "none); its cord is kept if it can, and the sidecars name it. 'none': no second try, the "
                        f"image fails (default: {DEFAULT_STAGE1_FALLBACK or 'none'}, the 1 mm model)")
    g.add_argument("--stage1-flips", choices=STAGE1_FLIPS, default=STAGE1_FLIPS[0],
                   help="where the whole-image model's test-time flips run: 'unsure', only in the sliding windows "
                        f"where its plain pass reaches probability {FLIP_ABOVE} (the masks of 'all' on every real "
                        "image of the benchmark, in 60-80 %% of its time on a 3D image: docs/performance.md); 'all', "
                        "in every window (the results of versions 4.x); 'none', the plain pass alone (fastest; "
                        "not better on real anatomy: docs/real_anatomy.md)")
    g.add_argument("--stage2-model", default=DEFAULT_STAGE2,
                   help="model applied to the straightened cord (stage 2): bundled model name or model directory")
    g.add_argument("--cascade-cord", choices=["mean", "stage2"], default="mean",
                   help="cascade's cord map: mean of both stages' cord probabilities, or stage 2's alone")
    g.add_argument("--tta", action="store_true",
                   help="test-time augmentation of stage 2 (flips): writes a lesion uncertainty map and a "
                        "confidence per lesion in the lesion table (about 4x stage 2's time)")
    g.add_argument("--reports-only", action="store_true",
                   help="only rebuild the subject reports from the outputs already in OUTPUT_DIR (nothing is processed)")
    g.add_argument("--no-reports", action="store_true",
                   help="do not write the per-subject HTML reports (OUT_DIR/sub-XX.html)")
    g.add_argument("--single-stage", action="store_true",
                   help="no cascade: the whole-image model gives the final cord and lesion maps")
    g.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help="probability threshold of the masks")
    g.add_argument("--grow-threshold", type=float, default=DEFAULT_GROW_THRESHOLD, metavar="P",
                   help="each lesion found at --threshold grows into the voxels connected to it whose lesion "
                        "probability reaches P (hysteresis: no new lesion appears); equal to --threshold: no growth "
                        f"(default {DEFAULT_GROW_THRESHOLD}, chosen on real cords with inserted lesions: "
                        "docs/real_anatomy.md)")
    g.add_argument("--min-lesion-volume", type=float, default=DEFAULT_MIN_LESION_MM3, metavar="MM3",
                   help="smaller lesion components are dropped (chosen on a tuning set: "
                        "experiments/analyses/tune_postprocessing.py)")

    g = p.add_argument_group("other")
    g.add_argument("-v", "--verbose", action="count", default=0, help="more messages (-vv for debug)")
    return p
