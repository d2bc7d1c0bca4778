#!/usr/bin/env bash
# Stage 2 v3 fine-tuned with the healthy real cords drawn three times as often (3 of 8 samples instead of
# 1 of 9): does more real lesion-free anatomy cut the false lesions on real cords? One change only: v3's
# phantoms of seed 1000, the real cords with inserted lesions and the healthy real cords, nothing new.
# The gm-challenge and spine-mini collections stay out of training (benchmarks/real_anatomy.py measures them).
#
# Usage: experiments/recipes/stage2_healthy_real_cords.sh WORK_DIR [ITERATIONS]
#   WORK_DIR holds train_synth (bids_sclesion-synth train_synth --subjects 18
#   --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 1000), real_cord (python scripts/make_real_cord_dataset.py
#   real_cord) and real_lesions_train_101 / _102 (python scripts/make_real_lesion_dataset.py real_cord
#   real_lesions_train_SEED --seed SEED). Environment: LR (5e-4), THREADS (2), TRAIN_OPTIONS (e.g. --cpu-bf16).
# Measured, not bundled: docs/real_anatomy.md.
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-2000}
LR=${LR:-5e-4}
THREADS=${THREADS:-2}
TRAIN_OPTIONS=${TRAIN_OPTIONS:-}
cd "$WORK"
held_out=$(held_out_subjects)
# shellcheck disable=SC2086
bids_sclesion-train train_synth stage2_healthy_weight --space straight --init-from stage2 \
    --add-dataset real_lesions_train_101 --add-dataset real_lesions_train_102 --add-dataset real_cord \
    --dataset-weights 3 1 1 3 --allow-missing-lesion-labels --exclude-subjects $held_out \
    --learning-rate "$LR" --encoder-lr-scale 1 --iterations "$ITERATIONS" --val-every $(( ITERATIONS / 2 )) \
    --val-max-images 10 --monitor lesion_f1 --nthreads "$THREADS" -w stage2_cache --resume $TRAIN_OPTIONS
echo "[stage2_healthy_weight] done: $WORK/stage2_healthy_weight"
