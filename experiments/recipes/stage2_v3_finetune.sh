#!/usr/bin/env bash
# Stage 2 v3 fine-tuned on its phantoms (seed 1000), the real cords with lesions inserted by the literature's
# rules (seeds 101, 102) and the healthy real cords: the tissue prior's control (stage2_tissue_prior.sh), which
# gave fewer false lesions on healthy real cords than v3 at 2000 iterations (0.56 against 0.89 per image).
# Does the same fine-tuning, run longer, keep that and recover inserted-lesion Dice? Nothing else changes.
# The gm-challenge and spine-mini collections stay out of training (benchmarks/real_anatomy.py measures them).
#
# Usage: experiments/recipes/stage2_v3_finetune.sh WORK_DIR [ITERATIONS] [VALIDATIONS]
#   WORK_DIR holds train_synth, real_cord and real_lesions_train_101 / _102 (experiments/datasets.sh makes them).
#   The model is WORK_DIR/stage2_v3_finetune_ITERATIONS (_lrLR when LR is not 5e-4, _seedSEED when SEED is
#   set, _wW1-W2-W3-W4 when WEIGHTS is set); VALIDATIONS (4) validations choose its iteration (lesion F1).
#   Environment: LR (5e-4), SEED (the training's: split, weights, batches; default 0), WEIGHTS (the dataset
#   weights phantoms, inserted 101, inserted 102, healthy real cords; default the config's 3 1 1 1), AUGMENTATION
#   (--augmentation, default standard; the folder gets _AUGMENTATION), DICE_WEIGHT (--dice-weight, default the
#   config's; the folder gets _diceDICE_WEIGHT), THREADS (2), TRAIN_OPTIONS (e.g. --cpu-bf16).
#   About 6 min per 1000 iterations on 2 cores in bfloat16, after the cache is filled.
# Measured: docs/real_anatomy.md.
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-4000}
VALIDATIONS=${3:-4}
LR=${LR:-5e-4}
THREADS=${THREADS:-2}
TRAIN_OPTIONS=${TRAIN_OPTIONS:-}
cd "$WORK"
phantoms train_synth 18 1000
real_lesions 101
real_lesions 102
held_out=$(held_out_subjects)
out=$(finetune_folder "$ITERATIONS")
[ -z "${SEED:-}" ] || TRAIN_OPTIONS="$TRAIN_OPTIONS --seed $SEED"
[ -z "${WEIGHTS:-}" ] || TRAIN_OPTIONS="$TRAIN_OPTIONS --dataset-weights $WEIGHTS"
[ -z "${AUGMENTATION:-}" ] || TRAIN_OPTIONS="$TRAIN_OPTIONS --augmentation $AUGMENTATION"
[ -z "${DICE_WEIGHT:-}" ] || TRAIN_OPTIONS="$TRAIN_OPTIONS --dice-weight $DICE_WEIGHT"
# shellcheck disable=SC2086
bids_sclesion-train train_synth "$out" --config "$DATASETS_REPO/experiments/configs/stage2_v3_finetune.yaml" \
    --exclude-subjects $held_out --learning-rate "$LR" --iterations "$ITERATIONS" \
    --val-every $(( ITERATIONS / VALIDATIONS )) --nthreads "$THREADS" -w stage2_cache $TRAIN_OPTIONS
echo "[stage2_v3_finetune] done: $WORK/$out"
