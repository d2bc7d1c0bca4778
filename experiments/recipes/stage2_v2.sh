#!/usr/bin/env bash
# Recipe of stage-2 v2: the bundled stage 2 fine-tuned on more phantoms and,
# less often, on real cords with inserted lesions, in two passes (9000 iterations
# at learning rate 1e-3, then 5500 at 5e-4); the second pass is bundled as stage2_v2.
#
# Usage: INIT=MODEL_DIR experiments/recipes/stage2_v2.sh WORK_DIR [ITERATIONS] [SECOND_ITERATIONS]
#
# INIT is the stage 2 that v2 started from (phantoms only), no longer bundled; it is in
# the history of this repository: for f in model.json model.safetensors; do
#   git show ef91490^:bids_sclesion/data/models/stage2/$f > MODEL_DIR/$f; done
# v2 itself is bundled as `stage2_v2`.
#
# WORK_DIR must hold (commands in docs/training.md):
#   train_synth/    bids_sclesion-synth train_synth --subjects 18 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 1000
#   real_cord/      python scripts/make_real_cord_dataset.py real_cord
# The script adds train_synth2/ (24 more phantom subjects, seed 4000) and two
# copies of the real cords with inserted lesions (seeds 101 and 102; the test
# copy uses seed 11).
# The gm-challenge and spine-mini collections are held out of every dataset,
# so the model can be measured on real anatomy it never saw
# (experiments/analyses/compare_cascade.py on real_lesions/, those collections only).
# Batches draw phantoms in 6 of 9 samples, real cords with lesions in 2 and
# healthy real cords in 1 (v1 drew real cords in 3 of 4 and lost precision on
# the phantoms).
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-9000}
SECOND_ITERATIONS=${3:-5500}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
INIT=$(cd "${INIT:?set INIT to the directory of the stage 2 that v2 started from (see the header of this script)}" && pwd)
cd "$WORK"

[ -f train_synth2/dataset_description.json ] ||
    bids_sclesion-synth train_synth2 --subjects 24 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 4000 --first-subject 101
for seed in 101 102; do
    [ -f "real_lesions_train_$seed/dataset_description.json" ] ||
        python "$REPO/scripts/make_real_lesion_dataset.py" real_cord "real_lesions_train_$seed" --seed "$seed"
done

held_out=$(held_out_subjects)
train() {  # train INIT OUT LEARNING_RATE ITERATIONS VAL_EVERY
    # shellcheck disable=SC2086
    bids_sclesion-train train_synth "$2" --config "$REPO/experiments/configs/stage2_v2.yaml" --init-from "$1" \
        --exclude-subjects $held_out --learning-rate "$3" --iterations "$4" --val-every "$5" -w stage2_cache
}
# Pass 1 from the previous stage 2; pass 2 (the bundled model) goes on from pass 1 at half the learning rate.
[ -f stage2_v2/model.safetensors ] || train "$INIT" stage2_v2 1e-3 "$ITERATIONS" 1500
[ -f stage2_v2_pass2/model.safetensors ] || train "$WORK/stage2_v2" stage2_v2_pass2 5e-4 "$SECOND_ITERATIONS" 1100
echo "[stage2_v2] done: $WORK/stage2_v2_pass2"
