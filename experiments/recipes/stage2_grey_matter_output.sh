#!/usr/bin/env bash
# Recipe of the grey matter experiment: the bundled stage 2 (v2) fine-tuned for
# 4000 iterations (learning rate 5e-4) with a third output, grey matter, trained
# on the phantoms' grey matter masks, beside a control run on the same data and
# budget without it. The two are compared on a phantom selection set
# (experiments/analyses/score_straight_space.py) and on the test sets (experiments/LOG.md,
# "Grey matter as a third output").
#
# Usage: experiments/recipes/stage2_grey_matter_output.sh WORK_DIR [ITERATIONS]
#
# WORK_DIR must hold real_cord/ (python scripts/make_real_cord_dataset.py real_cord).
# The script adds train_gm/ (the phantoms of seed 1000 that v2 trained on,
# remade with their grey matter masks: the images are the same) and the real
# cords with inserted lesions of seed 101. The gm-challenge and spine-mini
# collections stay held out of every dataset. Both runs go side by side with
# one thread each (about 25 min each on a 2-core CPU, after 12 min of cached
# preprocessing); CONTROL=0 skips the control run.
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-4000}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"

[ -f train_gm/dataset_description.json ] ||
    bids_sclesion-synth train_gm --subjects 18 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 1000 --grey-matter
[ -f real_lesions_train_101/dataset_description.json ] ||
    python "$REPO/scripts/make_real_lesion_dataset.py" real_cord real_lesions_train_101 --seed 101

held_out=$(held_out_subjects)
train() {  # train OUT [EXTRA ...]
    local out=$1
    shift
    # One validation, at the end: every phantom subject here was a training subject of v2, so a validation
    # score would favour early checkpoints; the choice is made on a separate selection set instead.
    # shellcheck disable=SC2086
    bids_sclesion-train train_gm "$out" --space straight --init-from stage2 \
        --add-dataset real_lesions_train_101 --add-dataset real_cord --dataset-weights 6 2 1 \
        --allow-missing-lesion-labels --exclude-subjects $held_out --learning-rate 5e-4 --encoder-lr-scale 0.5 \
        --iterations "$ITERATIONS" --val-every "$ITERATIONS" --val-max-images 10 --monitor lesion_f1 \
        --nthreads 1 -w stage2_cache --resume "$@"
}
pids=()
[ -f stage2_gm/model.safetensors ] || { train stage2_gm --grey-matter-label gmseg-manual > stage2_gm.log 2>&1 & pids+=($!); }
if [ "${CONTROL:-1}" = 1 ] && [ ! -f stage2_ctl/model.safetensors ]; then
    train stage2_ctl > stage2_ctl.log 2>&1 & pids+=($!)
fi
for pid in "${pids[@]}"; do wait "$pid"; done
echo "[stage2_gm] done: $WORK/stage2_gm $WORK/stage2_ctl"
