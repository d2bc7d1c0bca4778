#!/usr/bin/env bash
# Stage 2 taught that grey matter is not lesion: the bundled stage 2 (v3) fine-tuned on phantoms whose
# grey matter varies in shape and takes any intensity from white matter's to a lesion's, with lesions on
# and across it (bids_sclesion-synth --varied-grey-matter), beside v3's own phantoms and the real cords
# (healthy, and with inserted lesions). The gm-challenge and spine-mini collections stay out of every
# training dataset, as for v3, so that benchmarks/real_anatomy.py measures the result on them.
#
# Usage: experiments/recipes/stage2_varied_grey_matter.sh WORK_DIR [ITERATIONS]
#   WORK_DIR holds train_synth (bids_sclesion-synth train_synth --subjects 18
#   --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 1000) and real_cord
#   (python scripts/make_real_cord_dataset.py real_cord); the rest is made here.
# Environment: LR (5e-4), THREADS (2), TRAIN_OPTIONS (e.g. --cpu-bf16).
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-3000}
LR=${LR:-5e-4}
THREADS=${THREADS:-2}
TRAIN_OPTIONS=${TRAIN_OPTIONS:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"
[ -f train_gm/dataset_description.json ] ||
    bids_sclesion-synth train_gm --subjects 24 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 7000 \
        --first-subject 201 --varied-grey-matter
for seed in 101 102; do
    [ -f "real_lesions_train_$seed/dataset_description.json" ] ||
        python "$REPO/scripts/make_real_lesion_dataset.py" real_cord "real_lesions_train_$seed" --seed "$seed"
done
held_out=$(held_out_subjects)
# Phantoms in 5 of 8 samples (3 of them with varied grey matter), real cords with lesions in 2, healthy in 1.
# shellcheck disable=SC2086
bids_sclesion-train train_gm stage2_varied_gm --space straight --init-from stage2 \
    --add-dataset train_synth --add-dataset real_lesions_train_101 --add-dataset real_lesions_train_102 \
    --add-dataset real_cord --dataset-weights 3 2 1 1 1 --allow-missing-lesion-labels \
    --exclude-subjects $held_out --learning-rate "$LR" --encoder-lr-scale 1 \
    --iterations "$ITERATIONS" --val-every $(( ITERATIONS / 3 )) --val-max-images 10 --monitor lesion_f1 \
    --nthreads "$THREADS" -w stage2_cache --resume $TRAIN_OPTIONS
echo "[stage2_varied_gm] done: $WORK/stage2_varied_gm"
