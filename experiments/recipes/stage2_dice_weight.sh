#!/usr/bin/env bash
# Does a smaller Dice weight shrink stage 2's lesions along the thick-slice axis?
# Two fine-tunings of the bundled stage 2 that differ only in --dice-weight
# (WEIGHT against the default 1.0), run side by side with one thread each, then
# both and the bundled model scored on the phantom selection set (seed 6000).
#
# Usage: experiments/recipes/stage2_dice_weight.sh WORK_DIR [WEIGHT] [ITERATIONS]
#
# WORK_DIR must hold:
#   train_synth/  bids_sclesion-synth train_synth --subjects 12 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 1000
#   sel_synth/    bids_sclesion-synth sel_synth --subjects 6 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 6000 --first-subject 401
# Every phantom subject of train_synth was one of the bundled model's training
# subjects, so both runs validate once, at the end, and keep their last weights.
set -euo pipefail
WORK=$(cd "$1" && pwd)
WEIGHT=${2:-0.3}
ITERATIONS=${3:-2000}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"

train() {  # train OUT DICE_WEIGHT
    bids_sclesion-train train_synth "$1" --space straight --init-from stage2 --learning-rate 5e-4 \
        --encoder-lr-scale 0.5 --iterations "$ITERATIONS" --val-every "$ITERATIONS" --val-max-images 5 \
        --dice-weight "$2" --nthreads 1 -w "cache_$1" --resume > "$1.log" 2>&1
}
[ -f "stage2_dice$WEIGHT/model.safetensors" ] || train "stage2_dice$WEIGHT" "$WEIGHT" &
[ -f stage2_dice1/model.safetensors ] || train stage2_dice1 1.0 &
wait
python "$REPO/experiments/analyses/score_straight_space.py" sel_synth sel_cache stage2 stage2_dice1 "stage2_dice$WEIGHT" --nthreads 2
