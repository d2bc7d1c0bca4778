#!/usr/bin/env python
"""A learned disc finder against the PAM50 template match, on phantoms and on the real landmarks.

Usage:
  python experiments/analyses/learned_discs.py WORK_DIR [--train-seeds 24] [--models 3] [--iterations 1200]
      [--inputs all|anterior|anterior-global|band] [--no-extension] [--train-spines real blocks] [--out NAME]

The network reads, along the cord's centreline continued 60 mm above its top (as the template finder
does), the image in front of and behind the cord at several depths (each normalised locally and globally;
``--inputs`` picks which), the share of depths in view and whether each point lies on the cord, and gives at
every point a continuous vertebral coordinate (the SCT disc label: 3 at the C2/C3 disc, 3.5 halfway to
C3/C4 ...) and a disc heatmap. Discs are where the coordinate, fitted monotone, crosses whole numbers, moved
onto the heatmap's peak within 4 mm. It refuses, as the template finder does, less than 100 mm of spine in
view and a C2/C3 disc off the cord, and also a coordinate far from monotone and models that disagree on C2/C3
(more than 8 mm). ``--no-extension`` blanks the 60 mm above the cord (the skull base).

Training: phantoms rendered in memory (seeds 7000 + k; ``--train-spines``; sagittal T2w, STIR, PSIR, T1w) with
their drawn discs, and the PAM50 template (T2w, 1 x 1 x 2 mm) with its disc labels. Tested on the phantoms of
``benchmarks/morphometry.py`` (seeds 1000-1007, both spines) and on the four real 3D T2w with C2 and T2
landmarks (manual cords), none of which it saw; the template finder runs on the same inputs. Rendered phantoms
are cached in WORK_DIR (about 7 min for 24 seeds on 2 cores); training takes about 2.5 min for three models.
Results and the table of every variant tried: docs/morphometry.md, "A learned disc finder" (not adopted: it
numbers phantoms far better and real images not at all).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from scipy import ndimage
from torch import nn

from bids_sclesion.core.centerline import Centerline, extract_centerline
from bids_sclesion.core.vertebrae import (ANCHOR_DISC, BAND_HALF_WIDTH_MM, MIN_OVERLAP_MM, NoDiscFound, band_samples,
                                          discs_from_labels, extend_centerline, find_discs, normalise_profile)
from bids_sclesion.phantoms import random_acquisition, random_anatomy, render_image
from bids_sclesion.phantoms.spine import REALISTIC_SPINE_STREAM, random_real_spine

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
PAM50 = SHARED / "sct-examples" / "template" / "template"
CONTRASTS = ("T2w", "STIR", "PSIR", "T1w")
#: Depths sampled across the cord (mm, + anterior): vertebral bodies and discs in front, laminae and spinous
#: processes behind.
DEPTHS_MM = np.arange(-24.0, 32.1, 4.0)
HEAT_SIGMA_MM = 2.0
#: Share of the training batches drawn from the PAM50 template (the one real-anatomy case with every disc).
PAM50_SHARE = 0.2


# ----------------------------------------------------------------------------------------------- features
def depth_profiles(image: np.ndarray, affine: np.ndarray, centerline: Centerline,
                   depths: np.ndarray = DEPTHS_MM) -> np.ndarray:
    """Mean intensity across a band 8 mm wide at each depth and centreline point: (depths, points), NaN outside."""
    widths = np.arange(-BAND_HALF_WIDTH_MM, BAND_HALF_WIDTH_MM + 1e-6, 1.0)
    values = band_samples(image, affine, centerline, depths, widths)
    enough = np.mean(np.isfinite(values), axis=2) >= 0.5
    counts = np.isfinite(values).sum(axis=2)
    mean = np.nansum(values, axis=2) / np.maximum(counts, 1)
    return np.where(enough, mean, np.nan).T


def features(image: np.ndarray, affine: np.ndarray, centerline: Centerline) -> np.ndarray:
    """Network input along the extended centreline: per depth a local and a global z-score, the share of
    depths in view, and 1 on the cord / 0 on the extension above it. (channels, points), float32."""
    extended = extend_centerline(centerline)
    raw = depth_profiles(image, affine, extended)
    local = np.stack([normalise_profile(row, extended.step_mm) for row in raw])
    finite = raw[np.isfinite(raw)]
    lo, hi = np.percentile(finite, [2, 98]) if finite.size else (0.0, 1.0)
    glob = (raw - lo) / (hi - lo + 1e-6) * 2 - 1
    valid = np.isfinite(raw).mean(axis=0)
    on_cord = (np.arange(len(extended.points)) < len(centerline.points)).astype(float)
    out = np.concatenate([np.nan_to_num(local), np.nan_to_num(glob), valid[None], on_cord[None]])
    return out.astype(np.float32)


# ------------------------------------------------------------------------------------------------ cases
def input_channels(inputs: str) -> np.ndarray:
    """Rows of :func:`features` read by the network."""
    n = len(DEPTHS_MM)
    band = np.flatnonzero((DEPTHS_MM >= 8) & (DEPTHS_MM <= 24))
    rows = {"all": np.arange(2 * n), "anterior": band, "anterior-global": np.concatenate([band, n + band]),
            "band": band}[inputs]
    return np.concatenate([rows, [2 * n, 2 * n + 1]])


def band_input(x: np.ndarray) -> np.ndarray:
    """One profile, as the template finder reads: the mean of the local z-scores 8-24 mm in front of the cord."""
    band = np.flatnonzero((DEPTHS_MM >= 8) & (DEPTHS_MM <= 24))
    return np.concatenate([x[band].mean(axis=0, keepdims=True), x[-2:]]).astype(np.float32)


def phantom_case(args: tuple[int, str, str]) -> dict:
    """Render one phantom (as benchmarks/morphometry.py does) and return its features, discs and truth."""
    seed, contrast, spine = args
    torch.set_num_threads(1)
    rng = np.random.default_rng(seed)
    anatomy = random_anatomy(rng, fov_top=110.0)
    if spine == "real":
        anatomy.spine = random_real_spine(np.random.default_rng([seed, REALISTIC_SPINE_STREAM]), len(anatomy.disc_z))
    acq = random_acquisition(rng, contrast, anatomy, 110.0)
    image, cord_img, _ = render_image(rng, anatomy, acq)[:3]
    cord = np.asarray(cord_img.dataobj) > 0
    data = np.asarray(image.dataobj, np.float32)
    centerline = extract_centerline(cord.astype(np.float32), image.affine)
    extended = extend_centerline(centerline)
    discs = {}
    for k, dz in enumerate(anatomy.disc_z):
        z = dz + acq.shift[2]
        if centerline.points[0, 2] <= z <= centerline.points[-1, 2]:
            discs[k + 3] = float(np.argmin(np.abs(centerline.points[:, 2] - z)) * centerline.step_mm)
    try:
        match = find_discs(data, image.affine, centerline)
        template = {d.label: d.position_mm for d in match.discs}
    except NoDiscFound:
        template = None
    return {"name": f"{spine}-{seed}-{contrast}", "x": features(data, image.affine, centerline),
            "discs": discs, "cord_mm": centerline.length_mm, "step": extended.step_mm, "template": template}


def pam50_case() -> dict:
    load = lambda name: nib.load(str(PAM50 / f"PAM50_small_{name}.nii.gz"))  # noqa: E731
    t2, cord, disc = load("t2"), load("cord"), load("label_disc")
    centerline = extract_centerline(np.asarray(cord.dataobj, np.float32), cord.affine, step_mm=1.0)
    labels = np.asarray(disc.dataobj)
    discs = {int(v): d.position_mm for v in np.unique(labels[labels > 1])
             for d in discs_from_labels((labels == v).astype(np.uint8), disc.affine, centerline)}
    return {"name": "pam50", "x": features(np.asarray(t2.dataobj, np.float32), t2.affine, centerline),
            "discs": discs, "cord_mm": centerline.length_mm, "step": 1.0, "template": None}


def real_cases() -> list[dict]:
    """The four 3D T2w with landmarks (manual cords): features and landmark positions along the cord."""
    root = SHARED / "sct-t2w-bids"
    cases = []
    for path in sorted(root.glob("derivatives/labels/*/anat/*_label-vertebral_points.nii.gz")):
        sub = path.name.split("_")[0]
        image = nib.load(str(root / sub / "anat" / f"{sub}_T2w.nii.gz"))
        marks = np.asarray(nib.load(str(path)).dataobj)
        cord = np.asarray(nib.load(str(path).replace("label-vertebral_points", "seg-manual")).dataobj) > 0
        data = np.asarray(image.dataobj, np.float32)
        centerline = extract_centerline(cord.astype(np.float32), image.affine)
        landmarks = {int(v): discs_from_labels((marks == v).astype(np.uint8), image.affine, centerline)[0].position_mm
                     for v in (2, 9)}
        try:
            match = find_discs(data, image.affine, centerline)
            template = {d.label: d.position_mm for d in match.discs}
        except NoDiscFound:
            template = None
        cases.append({"name": sub, "x": features(data, image.affine, centerline), "landmarks": landmarks,
                      "cord_mm": centerline.length_mm, "step": 1.0, "template": template})
    return cases


def targets(case: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Vertebral coordinate (disc label, interpolated between discs and continued past the outer ones with their
    spacing, so that it is monotone everywhere), where it is in view, and the disc heatmap."""
    n = case["x"].shape[1]
    s = np.arange(n) * case["step"]
    labels = np.array(sorted(case["discs"]), float)
    pos = np.array([case["discs"][int(k)] for k in labels])
    order = np.argsort(pos)
    pos, labels = pos[order], labels[order]
    coord = np.interp(s, pos, labels)
    below, above = s < pos[0], s > pos[-1]
    coord[below] = labels[0] + (s[below] - pos[0]) * (labels[1] - labels[0]) / (pos[1] - pos[0])
    coord[above] = labels[-1] + (s[above] - pos[-1]) * (labels[-1] - labels[-2]) / (pos[-1] - pos[-2])
    mask = case["x"][-2] >= 0.5
    heat = np.zeros(n)
    for p in pos:
        heat = np.maximum(heat, np.exp(-0.5 * ((s - p) / HEAT_SIGMA_MM) ** 2))
    return coord.astype(np.float32), mask, heat.astype(np.float32)


# ------------------------------------------------------------------------------------------------ network
class DiscNet(nn.Module):
    """Dilated 1-D residual CNN: receptive field about 260 mm at 1 mm steps."""

    def __init__(self, in_channels: int, width: int = 32, dilations: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64, 1)):
        super().__init__()
        self.stem = nn.Conv1d(in_channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(nn.Sequential(nn.Conv1d(width, width, 3, padding=d, dilation=d),
                                                  nn.GroupNorm(4, width), nn.GELU()) for d in dilations)
        self.head = nn.Conv1d(width, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = h + block(h)
        return self.head(h)


def augment(case: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stretch along the cord (0.85-1.18), cut the inferior end (other fields of view), add noise."""
    x = case["x"]
    coord, mask, heat = targets(case)
    n = x.shape[1]
    f = rng.uniform(0.85, 1.18)
    src = np.arange(0, n - 1, 1.0 / f)
    idx = np.arange(n)
    x = np.stack([np.interp(src, idx, row) for row in x])
    coord = np.interp(src, idx, coord)
    mask = np.interp(src, idx, mask.astype(float)) > 0.999
    heat = np.interp(src, idx, heat)
    cord_end = int(np.argmin(x[-1] > 0.5)) or x.shape[1]
    cut = int(rng.uniform(0, max(1, cord_end - 120))) if rng.random() < 0.6 else 0
    x, coord, mask, heat = x[:, cut:], coord[cut:], mask[cut:], heat[cut:]
    x = x.copy()
    if rng.random() < 0.5:  # less sharp spines (thicker slices, other scanners)
        x[:-2] = ndimage.gaussian_filter1d(x[:-2], rng.uniform(0.5, 3.0), axis=1)
    x[:-2] *= rng.uniform(0.6, 1.4, (x.shape[0] - 2, 1))
    x[:-2] += rng.normal(0, 0.15, x[:-2].shape) * rng.uniform(0, 1.5)
    return x.astype(np.float32), coord.astype(np.float32), mask, heat.astype(np.float32)


def train_model(cases: list[dict], seed: int, iterations: int, batch: int = 8) -> DiscNet:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = DiscNet(cases[0]["x"].shape[0])
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=iterations)
    weights = np.array([PAM50_SHARE * (len(cases) - 1) / (1 - PAM50_SHARE) if c["name"] == "pam50" else 1.0
                        for c in cases])
    weights /= weights.sum()
    for it in range(iterations):
        items = [augment(cases[i], rng) for i in rng.choice(len(cases), batch, p=weights)]
        n = max(x.shape[1] for x, *_ in items)
        xb = np.zeros((batch, items[0][0].shape[0], n), np.float32)
        cb, mb, hb, vb = (np.zeros((batch, n), np.float32) for _ in range(4))
        for b, (x, c, m, h) in enumerate(items):
            xb[b, :, :x.shape[1]], cb[b, :len(c)], mb[b, :len(m)], hb[b, :len(h)] = x, c, m, h
            vb[b, :x.shape[1]] = 1
        out = net(torch.from_numpy(xb))
        m, v = torch.from_numpy(mb), torch.from_numpy(vb)
        coord_loss = (nn.functional.smooth_l1_loss(out[:, 1], torch.from_numpy(cb), reduction="none") * m).sum() \
            / m.sum().clamp(min=1)
        heat_loss = (nn.functional.binary_cross_entropy_with_logits(out[:, 0], torch.from_numpy(hb), reduction="none",
                                                                    pos_weight=torch.tensor(5.0)) * v).sum() / v.sum()
        loss = coord_loss + heat_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if it % 250 == 0 or it == iterations - 1:
            print(f"  model {seed} it {it}: coord {coord_loss.item():.3f} heat {heat_loss.item():.3f}", flush=True)
    return net.eval()


# ------------------------------------------------------------------------------------------------ decoding
def decreasing_fit(y: np.ndarray) -> np.ndarray:
    """Least-squares non-increasing fit (pool adjacent violators)."""
    blocks = []  # [mean, count]
    for v in y:
        blocks.append([float(v), 1])
        while len(blocks) > 1 and blocks[-2][0] < blocks[-1][0]:
            m2, c2 = blocks.pop()
            m1, c1 = blocks.pop()
            blocks.append([(m1 * c1 + m2 * c2) / (c1 + c2), c1 + c2])
    return np.concatenate([np.full(c, m) for m, c in blocks])


def crossings(coord: np.ndarray, step: float) -> dict[int, float]:
    """Position of each whole disc label where a non-increasing coordinate crosses it."""
    out = {}
    for label in range(2, 30):
        idx = np.flatnonzero((coord[:-1] >= label) & (coord[1:] < label))
        if len(idx) == 1:
            i = idx[0]
            frac = (coord[i] - label) / (coord[i] - coord[i + 1])
            out[label] = (i + frac) * step
    return out


#: Largest departure (in vertebrae) of a model's coordinate from its monotone fit along the cord.
MAX_NON_MONOTONE = 0.5


def model_discs(out: np.ndarray, valid: np.ndarray, step: float) -> tuple[dict[int, float] | None, float]:
    """Discs of one model's output on the points in view, and how far its coordinate is from monotone."""
    first, last = np.flatnonzero(valid)[[0, -1]]
    coord = out[1][first:last + 1]
    fit = decreasing_fit(coord)
    found = {k: v + first * step for k, v in crossings(fit, step).items()}
    return found, float(np.max(np.abs(coord - fit)))


def predict(nets: list[DiscNet], case: dict) -> tuple[dict[int, float] | None, str]:
    """Discs (label -> position mm) from the models' mean, or None and why."""
    x = case["x"]
    step = case["step"]
    valid = x[-2] >= 0.5
    if valid.sum() * step < MIN_OVERLAP_MM:
        return None, "field of view too short"
    with torch.no_grad():
        outs = [net(torch.from_numpy(x[None]))[0].numpy() for net in nets]
    anchors = []
    for o in outs:
        found, wobble = model_discs(o, valid, step)
        if wobble > MAX_NON_MONOTONE:
            return None, f"a model's coordinate is not monotone (by {wobble:.2f})"
        anchors.append(found.get(ANCHOR_DISC))
    if any(a is None for a in anchors):
        return None, "C2/C3 not in view for a model"
    if max(anchors) - min(anchors) > 8.0:
        return None, f"models disagree on C2/C3 by {max(anchors) - min(anchors):.0f} mm"
    mean = np.mean(outs, axis=0)
    discs, _ = model_discs(mean, valid, step)
    if discs.get(ANCHOR_DISC, np.inf) > case["cord_mm"]:
        return None, "C2/C3 not on the cord"
    heat = 1 / (1 + np.exp(-mean[0]))
    refined = {}
    for label, p in discs.items():
        i = int(round(p / step))
        lo, hi = max(0, i - int(4 / step)), min(len(heat), i + int(4 / step) + 1)
        j = lo + int(np.argmax(heat[lo:hi]))
        refined[label] = j * step if heat[j] > 0.3 else p
    return {k: v for k, v in refined.items() if 0 <= v <= case["cord_mm"]}, "ok"


def score_phantom(found: dict[int, float] | None, truth: dict[int, float]) -> tuple[str, list[float]]:
    if found is None:
        return "refused", []
    errors = [found[k] - truth[k] for k in found if k in truth]
    if errors and np.median(np.abs(errors)) < 7.0:
        return "right", np.abs(errors).tolist()
    return "wrong", []


def level_at(discs: dict[int, float], s: float) -> int | None:
    for n in sorted(discs):
        if n + 1 in discs and discs[n + 1] < s <= discs[n]:
            return n
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("work", type=Path)
    ap.add_argument("--train-seeds", type=int, default=40)
    ap.add_argument("--models", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=1500)
    ap.add_argument("--nprocs", type=int, default=2)
    ap.add_argument("--inputs", choices=("all", "anterior", "anterior-global", "band"), default="all",
                    help="channels read: every depth locally and globally normalised, or only the band 8-24 mm in "
                         "front of the cord (locally normalised, or both)")
    ap.add_argument("--no-extension", action="store_true",
                    help="blank the 60 mm above the cord's top (the skull base): count from the cord alone")
    ap.add_argument("--train-spines", nargs="+", default=["real", "blocks"],
                    help="phantom spines trained on (the blocks' thick bright discs are unlike real ones)")
    ap.add_argument("--out", default=None, help="results name (default: the inputs)")
    args = ap.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()

    def cached(name: str, jobs: list) -> list[dict]:
        path = args.work / f"{name}.npz"
        if path.exists():
            return list(np.load(path, allow_pickle=True)["cases"])
        with Pool(args.nprocs) as pool:
            cases = pool.map(phantom_case, jobs, chunksize=1)
        np.savez(path, cases=np.array(cases, dtype=object))
        return cases

    train = cached(f"train_{args.train_seeds}", [(7000 + k, c, s) for k in range(args.train_seeds)
                                                 for c in CONTRASTS for s in ("real", "blocks")])
    test = cached("test", [(1000 + k, c, s) for k in range(8) for c in CONTRASTS for s in ("real", "blocks")])
    train = [c for c in train if c["name"].split("-")[0] in args.train_spines] + [pam50_case()]
    real = real_cases()
    keep = input_channels(args.inputs)
    for case in train + test + real:
        if args.no_extension:
            case["x"][:, case["x"][-1] < 0.5] = 0.0
        case["x"] = band_input(case["x"]) if args.inputs == "band" else case["x"][keep]
    print(f"data: {len(train)} training cases, {len(test)} test phantoms, {len(real)} real ({time.time() - t0:.0f} s)",
          flush=True)
    name = args.out or args.inputs
    t1 = time.time()
    nets = [train_model(train, seed, args.iterations) for seed in range(args.models)]
    print(f"training: {time.time() - t1:.0f} s for {args.models} models", flush=True)
    for i, net in enumerate(nets):
        torch.save(net.state_dict(), args.work / f"discnet_{name}_{i}.pt")

    results = {}
    for spine in ("real", "blocks"):
        rows = {"network": {"right": 0, "wrong": 0, "refused": 0, "errors": []},
                "template": {"right": 0, "wrong": 0, "refused": 0, "errors": []}}
        for case in (c for c in test if c["name"].startswith(spine + "-")):
            for method, found in (("network", predict(nets, case)[0]), ("template", case["template"])):
                outcome, errors = score_phantom(found, case["discs"])
                rows[method][outcome] += 1
                rows[method]["errors"] += errors
        for method, r in rows.items():
            e = r.pop("errors")
            r["median_error_mm"] = round(float(np.median(e)), 2) if e else None
            r["p90_error_mm"] = round(float(np.percentile(e, 90)), 2) if e else None
        results[spine] = rows
        print(f"phantoms, {spine} spine: {json.dumps(rows)}")
    real_rows = []
    for case in real:
        found, why = predict(nets, case)
        row = {"image": case["name"]}
        for method, discs in (("network", found), ("template", case["template"])):
            if discs is None:
                row[method] = why if method == "network" else "n/a"
                continue
            row[method] = {("C2" if v == 2 else "T2"): level_at(discs, s) for v, s in case["landmarks"].items()}
        real_rows.append(row)
        print(f"real {json.dumps(row)}")
    results["real"] = real_rows
    (args.work / f"learned_discs_{name}.json").write_text(json.dumps(results, indent=1))
    print(f"total {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
