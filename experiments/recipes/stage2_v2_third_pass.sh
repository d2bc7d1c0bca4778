#!/usr/bin/env bash
# Recipe of stage-2 v3: stage-2 v2 (experiments/recipes/stage2_v2.sh, run first when
# its output is missing) trained for a third pass on more data: 20 new phantom
# subjects (seed 5000) and a third copy of the real cords with inserted lesions
# (seed 103), 14000 iterations at learning rate 3e-4, 15 validation images.
#
# Usage: experiments/recipes/stage2_v2_third_pass.sh WORK_DIR [ITERATIONS]
#
# WORK_DIR as for stage2_v2.sh. The gm-challenge and spine-mini
# collections stay held out of every dataset.
# Measured, not bundled (experiments/LOG.md, "Stage 2, third pass"). The measured
# run validated on two subjects v2 had trained on and kept iteration 1400;
# bids_sclesion-train now validates on subjects v2 never saw, so a rerun
# validates differently.
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-14000}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"

[ -f stage2_v2_pass2/model.safetensors ] || bash "$REPO/experiments/recipes/stage2_v2.sh" "$WORK"
[ -f train_synth3/dataset_description.json ] ||
    bids_sclesion-synth train_synth3 --subjects 20 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 5000 --first-subject 201
[ -f real_lesions_train_103/dataset_description.json ] ||
    python "$REPO/scripts/make_real_lesion_dataset.py" real_cord real_lesions_train_103 --seed 103

held_out=$(held_out_subjects)
# Phantoms in 9 of 13 samples, real cords with lesions in 3, healthy real cords in 1 (as v2: 6, 2, 1 of 9).
# shellcheck disable=SC2086
bids_sclesion-train train_synth stage2_v3 --space straight --init-from "$WORK/stage2_v2_pass2" \
    --add-dataset train_synth2 --add-dataset train_synth3 --add-dataset real_lesions_train_101 \
    --add-dataset real_lesions_train_102 --add-dataset real_lesions_train_103 --add-dataset real_cord \
    --dataset-weights 3 3 3 1 1 1 1 --allow-missing-lesion-labels \
    --exclude-subjects $held_out --learning-rate 3e-4 --encoder-lr-scale 0.5 \
    --iterations "$ITERATIONS" --val-every 1400 --val-max-images 15 --monitor lesion_f1 \
    --nthreads 2 -w stage2_cache --resume
echo "[stage2_v3] done: $WORK/stage2_v3"
