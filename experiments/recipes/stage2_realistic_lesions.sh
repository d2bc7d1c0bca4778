#!/usr/bin/env bash
# Stage 2 taught on lesions that look like published MS cord lesions: the bundled stage 2 (v3) fine-tuned on
# phantoms whose lesions follow the published pattern (bids_sclesion-synth --realistic-lesions: lateral and
# dorsal columns, mostly reaching the surface, 3-30 mm, oval or wedge, irregular edges) and on the real cords
# with lesions inserted by the same rules (insertion rules v2), beside v3's own phantoms and the healthy real
# cords. One idea, lesion realism, in both kinds of training data. The gm-challenge and spine-mini collections
# stay out of every training dataset, as for v3, so that benchmarks/real_anatomy.py measures the result on them.
#
# Usage: experiments/recipes/stage2_realistic_lesions.sh WORK_DIR [ITERATIONS]
#   WORK_DIR holds train_synth (bids_sclesion-synth train_synth --subjects 18
#   --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 1000) and real_cord
#   (python scripts/make_real_cord_dataset.py real_cord); the rest is made here.
# Environment: LR (5e-4), THREADS (2), TRAIN_OPTIONS (e.g. --cpu-bf16).
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-2000}
LR=${LR:-5e-4}
THREADS=${THREADS:-2}
TRAIN_OPTIONS=${TRAIN_OPTIONS:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"
[ -f train_realistic/dataset_description.json ] ||
    bids_sclesion-synth train_realistic --subjects 24 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 7000 \
        --first-subject 201 --realistic-lesions --nprocs "$THREADS"
for seed in 101 102; do
    [ -f "real_lesions_v2_train_$seed/dataset_description.json" ] ||
        python "$REPO/scripts/make_real_lesion_dataset.py" real_cord "real_lesions_v2_train_$seed" --seed "$seed"
done
held_out=$(held_out_subjects)
# Phantoms in 5 of 8 samples (3 of them with realistic lesions), real cords with lesions in 2, healthy in 1.
# shellcheck disable=SC2086
bids_sclesion-train train_realistic stage2_realistic_lesions --space straight --init-from stage2 \
    --add-dataset train_synth --add-dataset real_lesions_v2_train_101 --add-dataset real_lesions_v2_train_102 \
    --add-dataset real_cord --dataset-weights 3 2 1 1 1 --allow-missing-lesion-labels \
    --exclude-subjects $held_out --learning-rate "$LR" --encoder-lr-scale 1 \
    --iterations "$ITERATIONS" --val-every $(( ITERATIONS / 2 )) --val-max-images 10 --monitor lesion_f1 \
    --nthreads "$THREADS" -w stage2_cache --resume $TRAIN_OPTIONS
echo "[stage2_realistic_lesions] done: $WORK/stage2_realistic_lesions"
