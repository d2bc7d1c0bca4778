#!/usr/bin/env bash
# Set up, generate a small synthetic dataset, run both levels with the bundled model,
# score the result against the phantoms' ground truth and say where everything is.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# shellcheck disable=SC1091
. .venv/bin/activate
DEMO="${DEMO_DIR:-$PWD/demo}"
rm -rf "$DEMO/bids"
bids_sclesion-synth "$DEMO/bids" --subjects 2 --contrasts T2w,PSIR --seed 4242
bids_sclesion "$DEMO/bids" "$DEMO/derivatives" participant -w "$DEMO/work" --nprocs 2
bids_sclesion "$DEMO/bids" "$DEMO/derivatives" group
echo
echo "Accuracy against the phantoms' ground truth:"
python experiments/analyses/evaluate_outputs.py "$DEMO/bids" "$DEMO/derivatives"
echo
echo "Input dataset:      $DEMO/bids"
echo "Derivatives:        $DEMO/derivatives"
echo "Group table:        $DEMO/derivatives/group_lesions.tsv"
echo "Work directory:     $DEMO/work (rerun reuses it)"
