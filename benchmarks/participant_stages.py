#!/usr/bin/env python
"""Per-stage time and peak memory of the participant level on typical clinical inputs.

Usage: python benchmarks/participant_stages.py [--inputs sag2d,3d] [--threads 1,2] [--devices cpu[,cuda]]
                                              [--precisions float32,auto] [--no-baseline] [--json FILE]
                                              [--stage1 stage1,MODEL_DIR,stage1@LOCATOR]
                                              [--stage1-flips unsure,all,none]

Inputs (phantoms rendered on the grids of real protocols):
  sag2d  sagittal 2D T2w TSE, 320 x 320 x 15 voxels of 0.7 x 0.7 x 3 mm
  3d     3D T2w, 384 x 220 x 52 voxels of 1 mm
Each configuration runs the whole participant level in a fresh process (one image, one process, --omp-nthreads
threads, fresh work directory): wall time, the seconds of each step (from Nipype's results) and the peak resident
memory of the process; on a GPU also the peak GPU memory PyTorch allocated, and the agreement (Dice) of the cord and
lesion masks with those of the first CPU run of the same input, which show whether the GPU path gives the CPU's
result (``--precisions``: the cascade in float32 first, then with the app's default ``auto``, which computes in
bfloat16 on a CPU with native bfloat16: the agreement table then compares the two). PyTorch and MONAI are imported
before the run and timed apart ("imports": a process pays it once, however many images it segments), so the step
times are those of each image of a run; the wall time includes it. The 0.1.0 single-stage pipeline is run in the
same session as the baseline (ratio column). ``--stage1`` runs the cascade once per stage-1 model named (the
bundled ``stage1`` by default), in the same session, so that a candidate is timed beside the bundled one;
``MODEL@LOCATOR`` runs that stage 1 inside the box of ``--cord-locator LOCATOR``, ``MODEL@none`` without one.
``--stage1-flips`` runs each once per value of the app's ``--stage1-flips`` named (default: the app's default).
Targets on a 2-core CPU: whole pipeline <= 30 s per image, segmentation <= 5 s, peak memory <= 3 GB.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

from bids_sclesion.config import DEFAULT_STAGE1
from bids_sclesion.phantoms.acquisition import random_acquisition, render_image
from bids_sclesion.phantoms.anatomy import random_anatomy
from bids_sclesion.workflows.base import node_run_seconds

#: (spacing, shape) in RAS order: x across (left-right), y antero-posterior, z along the body.
INPUTS = {
    "sag2d": dict(contrast="T2w", spacing=(3.0, 0.7, 0.7), shape=(15, 320, 320)),
    "3d": dict(contrast="T2w", spacing=(1.0, 1.0, 1.0), shape=(52, 220, 384)),
}
SEGMENTATION_STEPS = ("segment_cord_lesion", "segment_straightened_cord")


def make_input(kind: str, out: Path, seed: int = 5) -> Path:
    spec = INPUTS[kind]
    rng = np.random.default_rng(seed)
    anatomy = random_anatomy(rng)
    acq = random_acquisition(rng, spec["contrast"], anatomy, fov_top=anatomy.foramen_z + 40.0)
    acq = dataclasses.replace(acq, spacing=spec["spacing"], shape=spec["shape"], orientation="PSR")
    image, _, _ = render_image(rng, anatomy, acq)
    path = out / "sub-01" / "anat" / "sub-01_T2w.nii.gz"
    path.parent.mkdir(parents=True)
    nib.save(image, str(path))
    (out / "dataset_description.json").write_text(json.dumps({"Name": f"benchmark {kind}", "BIDSVersion": "1.10.0"}))
    return path


def run_app(bids: Path, root: Path, threads: int, device: str, extra: list[str], precision: str = "auto") -> dict:
    out, work = root / "out", root / "work"
    cmd = [sys.executable, "-c", _DRIVER, str(root / "peak_kb"), str(bids), str(out), "participant", "-w", str(work),
           "--nprocs", "1", "--omp-nthreads", str(threads), "--device", device, "--precision", precision,
           "--skip-bids-validation", "--no-reports", *extra]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"run failed ({proc.returncode}):\n{proc.stdout.decode()[-3000:]}")
    steps = node_run_seconds(work)
    peak_kb, gpu_bytes, imports = (root / "peak_kb").read_text().split()
    return {"wall": wall, "steps": steps, "peak_mb": int(peak_kb) / 1024, "gpu_peak_mb": int(gpu_bytes) / 2**20,
            "imports": float(imports), "out": str(out)}


def mask_agreement(out_a: Path, out_b: Path) -> dict[str, float]:
    """Dice of the cord and lesion masks of two runs on the same input (1.0 where both are empty)."""
    result = {}
    for label in ("SC", "lesion"):
        a, b = (sorted(Path(o).rglob(f"*_label-{label}_*mask.nii.gz")) for o in (out_a, out_b))
        if len(a) != 1 or len(b) != 1:
            raise SystemExit(f"expected one {label} mask in each of {out_a} and {out_b}, found {len(a)} and {len(b)}")
        x, y = (np.asanyarray(nib.load(str(f[0])).dataobj) > 0 for f in (a, b))
        total = int(x.sum() + y.sum())
        result[label] = 1.0 if total == 0 else 2.0 * int((x & y).sum()) / total
    return result


#: Runs the app in this process (one image, --nprocs 1: every step runs here) and writes the process's peak
#: resident memory. VmHWM belongs to the new program image; the rusage of a child would also count the memory
#: of the benchmark process it was forked from (Linux keeps ru_maxrss across exec).
_DRIVER = """
import re, sys, time
start = time.perf_counter()
import bids_sclesion.model.segment  # PyTorch and MONAI: once per process, whatever the number of images
imports = time.perf_counter() - start
from bids_sclesion.cli.run import main
code = main(sys.argv[2:])
status = open("/proc/self/status").read()
gpu = 0
if "torch" in sys.modules and sys.modules["torch"].cuda.is_initialized():
    gpu = sys.modules["torch"].cuda.max_memory_allocated()
open(sys.argv[1], "w").write(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1) + f" {gpu} {imports}")
sys.exit(code)
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inputs", default="sag2d,3d")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--devices", default="cpu" + (",cuda" if _cuda() else ""))
    p.add_argument("--precisions", default="float32,auto",
                   help="the cascade's --precision values to run (auto: bfloat16 where the CPU computes it natively)")
    p.add_argument("--no-baseline", action="store_true",
                   help="skip the 0.1.0 single-stage run (no ratio column): for a quick check of a device")
    p.add_argument("--json", type=Path, help="also write the results as JSON")
    p.add_argument("--stage1", default=DEFAULT_STAGE1,
                   help="comma-separated stage-1 models (bundled names or folders): the cascade runs with each")
    p.add_argument("--stage1-flips", default="unsure",
                   help="comma-separated values of the app's --stage1-flips: the cascade runs with each")
    p.add_argument("--stage1-fallback", default=None,
                   help="comma-separated values of the app's --stage1-fallback (e.g. stage1,none): the cascade runs "
                        "with each (default: the app's default only)")
    args = p.parse_args()
    stage1_models = args.stage1.split(",")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.inputs.split(","):
            bids = Path(tmp) / kind / "bids"
            make_input(kind, bids)
            fallbacks = args.stage1_fallback.split(",") if args.stage1_fallback else [None]
            configs = [(_cascade_name(model, flips, fb), dev, int(t), _stage1_options(model, flips, fb), precision)
                       for model in stage1_models for flips in args.stage1_flips.split(",") for fb in fallbacks
                       for dev in args.devices.split(",")
                       for t in (args.threads.split(",") if dev == "cpu" else ["1"])
                       for precision in args.precisions.split(",")]
            if not args.no_baseline:
                configs.append(("0.1.0 single stage", "cpu", 1, ["--model", "default", "--single-stage"], "float32"))
            for i, (name, device, threads, extra, precision) in enumerate(configs):
                result = run_app(bids, Path(tmp) / kind / f"run{i}", threads, device, extra, precision)
                row = {"input": kind, "pipeline": name, "device": device, "threads": threads,
                       "precision": _precision_used(Path(result["out"])), **result}
                reference = next((r for r in rows if r["input"] == kind and r["pipeline"].startswith("cascade")), None)
                if name.startswith("cascade") and reference is not None:
                    row["agreement"] = mask_agreement(Path(reference["out"]), Path(result["out"]))
                rows.append(row)
                print(f"{kind} {name} {device} x{threads} {row['precision']}: {result['wall']:.1f} s, peak {result['peak_mb']:.0f} MB",
                      file=sys.stderr, flush=True)
    steps = sorted({s for r in rows for s in r["steps"]})
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}, torch {_torch_version()}\n")
    print("| input | pipeline | device | threads | precision | " + " | ".join(steps)
          + " | segmentation | all steps | imports | wall | peak memory | peak GPU memory | wall / baseline |")
    print("|---" * (len(steps) + 12) + "|")
    for r in rows:
        seg = sum(r["steps"].get(s, 0.0) for s in SEGMENTATION_STEPS)
        base = next((b for b in rows if b["input"] == r["input"] and b["pipeline"].startswith("0.1.0")), None)
        print(f"| {r['input']} | {r['pipeline']} | {r['device']} | {r['threads']} | {r['precision']} | "
              + " | ".join(f"{r['steps'].get(s, 0.0):.2f}" for s in steps)
              + f" | {seg:.2f} | {sum(r['steps'].values()):.2f} | {r['imports']:.2f} | {r['wall']:.1f} | {r['peak_mb']:.0f} MB | "
              + (f"{r['gpu_peak_mb']:.0f} MB" if r["device"] != "cpu" else "-") + (f" | {r['wall'] / base['wall']:.2f} |" if base else " | - |"))
    print("\nSeconds; 'imports' is PyTorch and MONAI, imported once per process before the run (a process that "
          "segments several images pays it once), so the steps are per image; 'wall' is the whole command "
          "(imports, Python start-up, dataset indexing and workflow set-up included).")
    compared = [r for r in rows if "agreement" in r]
    if compared:
        print("\nAgreement with the first CPU run of the same input (Dice of the masks in the image's own grid):\n")
        print("| input | device | threads | precision | cord Dice | lesion Dice |\n|---|---|---|---|---|---|")
        for r in compared:
            print(f"| {r['input']} | {r['device']} | {r['threads']} | {r['precision']} | {r['agreement']['SC']:.4f} | "
                  f"{r['agreement']['lesion']:.4f} |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def _stage1_options(stage1: str, flips: str = "unsure", fallback: str | None = None) -> list[str]:
    """The app's options for a ``--stage1`` entry (``MODEL`` or ``MODEL@LOCATOR``), a ``--stage1-flips`` and, unless
    None (the app's default), a ``--stage1-fallback``."""
    model, _, locator = stage1.partition("@")
    return (["--model", model, "--stage1-flips", flips] + (["--cord-locator", locator] if locator else [])
            + (["--stage1-fallback", fallback] if fallback else []))


def _cascade_name(stage1: str, flips: str = "unsure", fallback: str | None = None) -> str:
    """The pipeline column of a cascade run: ``cascade`` with the bundled stage 1, else the model's folder name
    (and its locator's), where its flips ran unless in the default's windows, and a fallback other than the default."""
    model, _, locator = stage1.partition("@")
    name = "cascade" if model == DEFAULT_STAGE1 else f"cascade, stage 1 {Path(model).name}"
    return (name + (f" in the box of {Path(locator).name}" if locator else "")
            + {"all": ", flips in every window", "none": ", no flips"}.get(flips, "")
            + (f", fallback {fallback}" if fallback else ""))


def _precision_used(out: Path) -> str:
    """What the networks computed in, from the lesion mask's sidecar (Model.Precision)."""
    sidecar = next(out.rglob("*_label-lesion_*mask.json"), None)
    return json.loads(sidecar.read_text())["Model"].get("Precision", "float32") if sidecar else "n/a"


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def _torch_version() -> str:
    import torch

    return torch.__version__


if __name__ == "__main__":
    raise SystemExit(main())
