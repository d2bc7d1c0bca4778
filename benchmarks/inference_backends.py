#!/usr/bin/env python
"""The segmentation networks in PyTorch eager, with torch.compile, and exported to ONNX Runtime.

Usage: python benchmarks/inference_backends.py [--threads 1,2] [--repeats 3]
(ONNX Runtime: pip install onnxruntime onnx onnxscript; skipped when absent.)

For each bundled stage (stage 1 on a whole sagittal T2w at its model's spacing, stage 2 on a straightened cord)
the full Gaussian-blended sliding-window inference runs with each backend as the window predictor, on the same
input. Reported: the median time of the repeats (after one warm-up call, whose time is reported apart because
compilation and export happen there), the ratio to eager, and the largest difference of the probabilities from
eager (a backend is only "correct" when it stays within 1e-3).
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bids_sclesion.model.inference import predict_probabilities
from bids_sclesion.model.io import load_model

TOLERANCE = 1e-3
#: Inputs in the model's own grid (voxels): a 224 x 224 x 45 mm sagittal T2w at stage 1's 1 mm, and a 200 mm
#: cord straightened on stage 2's 64 x 64 x L grid.
SHAPES = {"stage1": (48, 224, 224), "stage2": (64, 64, 210)}


class OnnxPredictor(torch.nn.Module):
    """Runs an exported network with ONNX Runtime; called by the sliding window like the network itself."""

    def __init__(self, network: torch.nn.Module, window: tuple[int, ...], threads: int, directory: Path):
        super().__init__()
        import onnxruntime as ort

        path = directory / "network.onnx"
        example = torch.zeros((1, 1, *window))
        torch.onnx.export(network, (example,), str(path), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch", 2: "i", 3: "j", 4: "k"}, "y": {0: "batch", 2: "i", 3: "j", 4: "k"}},
                          dynamo=False)  # windows shrink to the image where it is smaller than the window
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.from_numpy(self.session.run(["y"], {"x": x.detach().cpu().numpy()})[0])


def _time(predictor, volume, model, repeats: int) -> tuple[float, float, np.ndarray]:
    t0 = time.perf_counter()
    out = predict_probabilities(predictor, volume, roi_size=model.roi_size, size_divisor=model.size_divisor)
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = predict_probabilities(predictor, volume, roi_size=model.roi_size, size_divisor=model.size_divisor)
        times.append(time.perf_counter() - t0)
    return first, statistics.median(times), out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--backends", default="eager,compile,onnx")
    args = p.parse_args()
    rows = []
    rng = np.random.default_rng(0)
    for stage, shape in SHAPES.items():
        model = load_model(stage)
        volume = rng.random(shape).astype(np.float32)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            reference = None
            for backend in args.backends.split(","):
                try:
                    predictor = _predictor(backend, model, threads)
                except Exception as exc:  # a backend missing here is reported, not fatal
                    print(f"{stage} {backend}: unavailable ({type(exc).__name__}: {str(exc)[:200]})", file=sys.stderr)
                    continue
                first, median, out = _time(predictor, volume, model, args.repeats)
                if backend == "eager":
                    reference = out
                diff = float(np.abs(out - reference).max()) if reference is not None else float("nan")
                rows.append(dict(stage=stage, shape=shape, threads=threads, backend=backend, first=first,
                                 median=median, diff=diff))
                print(f"{stage} x{threads} {backend}: first {first:.2f} s, median {median:.2f} s, diff {diff:.1e}",
                      file=sys.stderr, flush=True)
    print(f"\nMachine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}\n")
    print("| network | input (voxels) | threads | backend | first call (s) | median (s) | / eager | max diff | correct |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        eager = next(e for e in rows if e["stage"] == r["stage"] and e["threads"] == r["threads"]
                     and e["backend"] == "eager")
        print(f"| {r['stage']} | {'x'.join(map(str, r['shape']))} | {r['threads']} | {r['backend']} | "
              f"{r['first']:.2f} | {r['median']:.2f} | {r['median'] / eager['median']:.2f} | {r['diff']:.1e} | "
              f"{'yes' if r['diff'] <= TOLERANCE else 'NO'} |")
    return 0


def _predictor(backend: str, model, threads: int):
    network = model.network.eval()
    if backend == "eager":
        return network
    if backend == "compile":
        return torch.compile(network, dynamic=False)
    if backend == "onnx":
        directory = Path(tempfile.mkdtemp())
        return OnnxPredictor(network, model.roi_size, threads, directory)
    raise ValueError(backend)


if __name__ == "__main__":
    raise SystemExit(main())
