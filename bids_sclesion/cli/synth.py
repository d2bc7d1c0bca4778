"""``bids_sclesion-synth``: write a synthetic spinal cord BIDS dataset with ground truth."""
from __future__ import annotations

import argparse
import sys
import time

from .. import __version__
from ..phantoms import CONTRASTS, generate_dataset


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="bids_sclesion-synth",
        description="Generate synthetic spinal cord MRI (BIDS) with cord and lesion ground truth "
        "in derivatives/labels.",
    )
    p.add_argument("out_dir")
    p.add_argument("--subjects", type=int, default=2, help="number of subjects (default 2)")
    p.add_argument("--sessions", type=int, default=1, help="sessions per subject; later sessions evolve lesions")
    p.add_argument("--contrasts", default="T2w", help=f"comma-separated, from {','.join(CONTRASTS)} (default T2w)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--first-subject", type=int, default=1, help="index of the first subject label")
    p.add_argument("--fov-scale", type=float, default=1.0, help="scale the field of view along the cord (smaller = faster)")
    p.add_argument("--grey-matter", action="store_true",
                   help="also write each image's grey matter mask (derivatives/labels, *_gmseg-manual); images unchanged")
    p.add_argument("--varied-grey-matter", action="store_true",
                   help="grey matter of varied shape and of any intensity from white matter's to a lesion's, with "
                        "lesions on and across it (training data that tells grey matter from lesion); changes the images")
    p.add_argument("--realistic-lesions", action="store_true",
                   help="lesions by the published pattern (lateral/dorsal columns, mostly reaching the surface, "
                        "3-30 mm, oval or wedge, irregular edges; docs/phantoms.md) instead of ellipsoids; the "
                        "anatomy and acquisitions stay those of the same seed")
    p.add_argument("--realistic-spine", action="store_true",
                   help="vertebrae drawn after real anatomy (discs of their own height with a dark annulus and a "
                        "nucleus of varied size, thin endplates, the dens and C1's arch; docs/phantoms.md) instead "
                        "of identical blocks; only the spine changes")
    p.add_argument("--t2w-3d-share", type=float, default=0.0, metavar="P",
                   help="share of the T2w images drawn 3D isotropic (1 mm) instead of 2D sagittal TSE (default 0); "
                        "the other images stay those of the same seed")
    p.add_argument("--nprocs", type=int, default=1, metavar="N",
                   help="make subjects in N processes (the files are the same as with one)")
    p.add_argument("--version", action="version", version=f"bids_sclesion {__version__}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    contrasts = [c.strip() for c in args.contrasts.split(",") if c.strip()]
    if args.subjects < 1 or args.sessions < 1 or args.nprocs < 1:
        print("bids_sclesion-synth: error: --subjects, --sessions and --nprocs must be >= 1", file=sys.stderr)
        return 2
    try:
        t0 = time.time()
        out = generate_dataset(args.out_dir, args.subjects, args.sessions, contrasts, args.seed,
                               fov_scale=args.fov_scale, first_subject=args.first_subject,
                               grey_matter=args.grey_matter, jobs=args.nprocs,
                               varied_grey_matter=args.varied_grey_matter,
                               realistic_lesions=args.realistic_lesions,
                               realistic_spine=args.realistic_spine,
                               t2w_3d_share=args.t2w_3d_share)
    except ValueError as exc:
        print(f"bids_sclesion-synth: error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.subjects} subject(s) x {args.sessions} session(s) x {len(contrasts)} contrast(s) to {out} "
          f"in {time.time() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
