#!/usr/bin/env bash
# The bundled stage 2 (v2) trained on for one more pass on the phantoms' corrected
# labels (results revision 4: labels centred on their voxels), with v2's data and
# sampling (experiments/LOG.md, "Results revision 4"), at a quarter of v2's first
# learning rate so that it moves towards the corrected labels without forgetting.
#
# Usage: experiments/recipes/stage2_v2_relabelled.sh WORK_DIR [ITERATIONS] [CACHE_DIR]
#
# WORK_DIR must hold the datasets of experiments/recipes/stage2_v2.sh made with this
# version (train_synth: 18 subjects of seed 1000, train_synth2: 24 of seed 4000,
# real_lesions_train_101 and _102, real_cord); CACHE_DIR (default
# stage2_cache_r4) keeps the preprocessed images.
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-3000}
CACHE=${3:-stage2_cache_r4}
cd "$WORK"
held_out=$(held_out_subjects)
# shellcheck disable=SC2086
bids_sclesion-train train_synth stage2_v2_r4 --space straight --init-from stage2 \
    --add-dataset train_synth2 --add-dataset real_lesions_train_101 --add-dataset real_lesions_train_102 \
    --add-dataset real_cord --dataset-weights 3 3 1 1 1 --allow-missing-lesion-labels \
    --exclude-subjects $held_out --learning-rate 2.5e-4 --encoder-lr-scale 0.5 \
    --iterations "$ITERATIONS" --val-every "$ITERATIONS" --val-max-images 10 --monitor lesion_f1 \
    --nthreads 2 -w "$CACHE" --resume
echo "[stage2_v2_r4] done: $WORK/stage2_v2_r4"
