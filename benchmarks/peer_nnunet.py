#!/usr/bin/env python
"""The app against its peer, measured side by side in one run: nnU-Net's ResEnc-L, as the Spinal Cord
Toolbox's MS lesion model uses it, on the same images as ``participant_stages.py``.

Usage:
  python benchmarks/peer_nnunet.py --peer-python PEER_ENV/bin/python [--inputs sag2d,3d] [--threads 2]
                                   [--planning sag2d,sag2d,3d] [--json FILE]

PEER_ENV is a separate environment with nnU-Net (never a dependency of the app), e.g.
  python3.11 -m venv PEER_ENV && PEER_ENV/bin/pip install torch==2.13.0 &&
  PEER_ENV/bin/pip install --no-deps nnunetv2==2.8.1 dynamic-network-architectures acvl-utils batchgenerators \\
      batchgeneratorsv2 && PEER_ENV/bin/pip install SimpleITK nibabel scikit-image scipy pandas matplotlib tqdm \\
      requests graphviz yacs tifffile blosc2 connected-components-3d einops seaborn imagecodecs threadpoolctl
(``--no-deps`` keeps pip from replacing the CPU build of torch with a CUDA one through torchvision).

The peer: nnU-Net's own planner (``nnUNetPlannerResEncL``) plans a dataset of phantoms of the ``--planning``
geometries (by default the clinical mix: two sagittal 2D, one 3D; the plan's target spacing and patch size are
printed); its ResEnc-L network, with random weights (the architecture and its cost, not its accuracy), runs
through nnU-Net's own predictor in a fresh process per input: preprocessing (resampling to the plan's spacing,
normalisation), the sliding window (one fold, no mirroring: measured), and the export back to the image grid.
Five folds with mirroring (the way the Spinal Cord Toolbox runs its model) are extrapolated from the measured
parts: preprocessing + 40 network passes (5 folds x 8 mirrored copies) + export. Peak memory is the process's
peak resident set. The app: the whole participant level, bundled models, in a fresh process
(``participant_stages.run_app``), its segmentation step and whole command.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from participant_stages import INPUTS, SEGMENTATION_STEPS, make_input, run_app  # noqa: E402

#: Network passes of an ensemble of 5 folds, each averaged over every flip of the 3 axes.
FOLDS, MIRRORED_COPIES = 5, 8

_PEER = r'''
import json, os, resource, sys, time
from pathlib import Path
import numpy as np

work, threads = Path(sys.argv[1]), int(sys.argv[2])
planning, measured = json.loads(sys.argv[3]), json.loads(sys.argv[4])
for key in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
    os.environ[key] = str(work / key)
    (work / key).mkdir(parents=True, exist_ok=True)
import torch
torch.set_num_threads(threads)
import nibabel as nib
from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprint_dataset, plan_experiment_dataset
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import \
    nnUNetPlannerResEncL
from nnunetv2.imageio.simpleitk_reader_writer import SimpleITKIO
from nnunetv2.inference.data_iterators import PreprocessAdapterFromNpy
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.get_network_from_plans import get_network_from_plans
from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

raw = work / "nnUNet_raw" / "Dataset501_SpinalCordBench"
(raw / "imagesTr").mkdir(parents=True, exist_ok=True)
(raw / "labelsTr").mkdir(parents=True, exist_ok=True)
for i, path in enumerate(planning):
    img = nib.load(path)
    label = np.zeros(img.shape, np.uint8)
    centre = tuple(s // 2 for s in img.shape)
    label[tuple(slice(max(c - 3, 0), c + 3) for c in centre)] = 1  # fingerprinting samples intensities under a label
    nib.save(img, str(raw / "imagesTr" / f"case_{i:03d}_0000.nii.gz"))
    nib.save(nib.Nifti1Image(label, img.affine), str(raw / "labelsTr" / f"case_{i:03d}.nii.gz"))
dataset = {"channel_names": {"0": "T2w"}, "labels": {"background": 0, "lesion": 1}, "numTraining": len(planning),
           "file_ending": ".nii.gz"}
(raw / "dataset.json").write_text(json.dumps(dataset))
extract_fingerprint_dataset(501, num_processes=threads, verbose=False)
plans, _ = plan_experiment_dataset(501, nnUNetPlannerResEncL)
plans_manager = PlansManager(plans)
config = plans_manager.get_configuration("3d_fullres")
network = get_network_from_plans(config.network_arch_class_name, config.network_arch_init_kwargs,
                                 config.network_arch_init_kwargs_req_import, 1, 2, deep_supervision=False)
predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=False,
                            perform_everything_on_device=False, device=torch.device("cpu"))
predictor.manual_initialization(network, plans_manager, config, [network.state_dict()], dataset, "nnUNetTrainer",
                                (0, 1, 2))
data, props = SimpleITKIO().read_images([measured])
t0 = time.perf_counter()
item = next(PreprocessAdapterFromNpy([data], None, [props], None, plans_manager, dataset, config, 1))
t1 = time.perf_counter()
logits = predictor.predict_logits_from_preprocessed_data(item["data"]).cpu()
t2 = time.perf_counter()
convert_predicted_logits_to_segmentation_with_correct_shape(logits, plans_manager, config, predictor.label_manager,
                                                            item["data_properties"], num_threads_torch=threads)
t3 = time.perf_counter()
print("PEER " + json.dumps({
    "preprocess_s": t1 - t0, "network_s": t2 - t1, "export_s": t3 - t2,
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "target_spacing": list(config.spacing), "patch_size": list(config.patch_size),
    "network_input_shape": list(item["data"].shape[1:]),
    "parameters_m": sum(p.numel() for p in network.parameters()) / 1e6}))
'''


def run_peer(peer_python: str, planning: list[Path], image: Path, threads: int, work: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), nnUNet_n_proc_DA=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.run([peer_python, "-c", _PEER, str(work), str(threads), json.dumps([str(p) for p in planning]),
                           json.dumps(str(image))], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - t0
    lines = [ln for ln in proc.stdout.decode(errors="replace").splitlines() if ln.startswith("PEER ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"peer run failed ({proc.returncode}):\n{proc.stdout.decode(errors='replace')[-3000:]}")
    out = json.loads(lines[-1][5:])
    out["one_fold_s"] = out["preprocess_s"] + out["network_s"] + out["export_s"]
    out["ensemble_s"] = out["preprocess_s"] + FOLDS * MIRRORED_COPIES * out["network_s"] + out["export_s"]
    out["process_wall_s"] = wall
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--peer-python", required=True, help="python of the environment with nnunetv2")
    p.add_argument("--inputs", default="sag2d,3d")
    p.add_argument("--planning", default="sag2d,sag2d,3d", help="geometries of the phantoms nnU-Net plans on")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args()
    inputs = args.inputs.split(",")
    unknown = [k for k in inputs + args.planning.split(",") if k not in INPUTS]
    if unknown:
        p.error(f"unknown geometry {unknown}; known: {sorted(INPUTS)}")
    results = []
    with tempfile.TemporaryDirectory(prefix="peer_bench_") as tmp:
        root = Path(tmp)
        planning = [make_input(kind, root / f"plan_{i}", seed=100 + i) for i, kind in enumerate(args.planning.split(","))]
        for kind in inputs:
            bids = root / f"bids_{kind}"
            image = make_input(kind, bids)
            app = run_app(bids, root / f"app_{kind}", args.threads, "cpu", [])
            seg = sum(app["steps"].get(s, 0.0) for s in SEGMENTATION_STEPS)
            peer = run_peer(args.peer_python, planning, image, args.threads, root / f"peer_{kind}")
            results.append({"input": kind, "shape": list(INPUTS[kind]["shape"]), "app_segmentation_s": seg,
                            "app_command_s": app["wall"], "app_peak_mb": app["peak_mb"], "peer": peer})
    print(f"Threads: {args.threads}; peer: nnU-Net ResEnc-L (nnUNetPlannerResEncL, 3d_fullres), random weights; "
          f"planned on {args.planning}.")
    print("| input | peer target spacing (mm) | peer patch | peer 1 fold, no mirroring (s) | of which network (s) | "
          f"peer {FOLDS} folds x {MIRRORED_COPIES} mirrored (s, extrapolated) | peer peak memory (GB) | "
          "app segmentation step (s) | app whole command (s) | app peak memory (GB) | "
          "peer 1 fold / app segmentation | peer ensemble / app command |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        peer = r["peer"]
        print(f"| {r['input']} {'x'.join(map(str, r['shape']))} | {'x'.join(f'{s:.2f}' for s in peer['target_spacing'])} "
              f"| {'x'.join(map(str, peer['patch_size']))} | {peer['one_fold_s']:.1f} | {peer['network_s']:.1f} | "
              f"{peer['ensemble_s']:.0f} | {peer['peak_mb'] / 1024:.1f} | {r['app_segmentation_s']:.1f} | "
              f"{r['app_command_s']:.1f} | {r['app_peak_mb'] / 1024:.1f} | "
              f"{peer['one_fold_s'] / r['app_segmentation_s']:.1f}x | {peer['ensemble_s'] / r['app_command_s']:.0f}x |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
