#!/usr/bin/env bash
# Stage 2 v3 fine-tuned with the tissue prior (the PAM50 grey/white matter cross-section fitted to each
# straightened slice of the cord, two more input channels that start with zero weights): does knowing where
# grey matter should be stop stage 2 from calling real grey matter a lesion? CONTROL=1 (default) also runs the
# same fine-tuning without the prior, so that the prior is the only difference. Data as v3's fine-tunings:
# v3's phantoms of seed 1000, the real cords with inserted lesions (seeds 101, 102) and the healthy real cords;
# the gm-challenge and spine-mini collections stay out of training (benchmarks/real_anatomy.py measures them).
#
# Usage: experiments/recipes/stage2_tissue_prior.sh WORK_DIR [ITERATIONS]
#   WORK_DIR holds train_synth (bids_sclesion-synth train_synth --subjects 18
#   --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 1000), real_cord (python scripts/make_real_cord_dataset.py
#   real_cord) and real_lesions_train_101 / _102 (python scripts/make_real_lesion_dataset.py real_cord
#   real_lesions_train_SEED --seed SEED). Environment: LR (5e-4), THREADS (2), CONTROL (1), TRAIN_OPTIONS
#   (e.g. --cpu-bf16). About 12 min per run of 2000 iterations on 2 cores in bfloat16, after the cache is filled.
# Measured: docs/real_anatomy.md.
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-2000}
LR=${LR:-5e-4}
THREADS=${THREADS:-2}
TRAIN_OPTIONS=${TRAIN_OPTIONS:-}
cd "$WORK"
held_out=$(held_out_subjects)
CONFIG="$DATASETS_REPO/experiments/configs/stage2_v3_finetune.yaml"
train() {  # train OUT [EXTRA ...]
    local out=$1
    shift
    # shellcheck disable=SC2086
    bids_sclesion-train train_synth "$out" --config "$CONFIG" --exclude-subjects $held_out \
        --learning-rate "$LR" --iterations "$ITERATIONS" --val-every $(( ITERATIONS / 2 )) \
        --nthreads "$THREADS" -w stage2_cache $TRAIN_OPTIONS "$@"
}
[ -f stage2_tissue_prior/model.safetensors ] || train stage2_tissue_prior --tissue-prior
if [ "${CONTROL:-1}" = 1 ] && [ ! -f stage2_tissue_prior_control/model.safetensors ]; then
    train stage2_tissue_prior_control
fi
echo "[stage2_tissue_prior] done: $WORK/stage2_tissue_prior $WORK/stage2_tissue_prior_control"
