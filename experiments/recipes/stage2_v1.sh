#!/usr/bin/env bash
# Recipe of the bundled stage-2 model (v1) and of the two fold models that
# measure it on real cords it never saw.
#
# Usage: experiments/recipes/stage2_v1.sh WORK_DIR [ITERATIONS] [FOLD_ITERATIONS]
#
# WORK_DIR must hold (see docs/training.md for the commands that make them):
#   train_synth/   bids_sclesion-synth train_synth --subjects 18 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 1000
#   real_cord/     python scripts/make_real_cord_dataset.py real_cord   (the real images of ../shared/data)
# The script adds two copies of the real cords with synthetic lesions
# (different lesions in each copy; the test copy of docs/training.md uses
# another seed) and trains, each run fine-tuned from the bundled stage 2:
#   stage2_v1/fold-A   without the gm-challenge and spine-mini collections,
#   stage2_v1/fold-B   without the sct-t2w and sct-examples collections,
#   stage2_v1/final    on everything (the candidate for bundling; measured in experiments/LOG.md).
# Batches draw equally from: phantoms, real cords with lesions (two copies),
# and real healthy cords (lesion-free cases).
set -euo pipefail
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-2500}
FOLD_ITERATIONS=${3:-1500}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"

for seed in 101 102; do
    [ -f "real_lesions_train_$seed/dataset_description.json" ] ||
        python "$REPO/scripts/make_real_lesion_dataset.py" real_cord "real_lesions_train_$seed" --seed "$seed"
done

collection() {  # subjects of one collection (participants.tsv "source" column)
    awk -F'\t' -v s="$1" 'NR > 1 && $2 == s {print $1}' real_cord/participants.tsv
}

train() {  # train OUT ITERATIONS [extra options]
    local out=$1 iterations=$2
    shift 2
    if [ -f "$out/model.safetensors" ]; then echo "[stage2_v1] $out exists"; return; fi
    bids_sclesion-train train_synth "$out" --space straight --init-from stage2 \
        --add-dataset real_lesions_train_101 --add-dataset real_lesions_train_102 --add-dataset real_cord \
        --allow-missing-lesion-labels --learning-rate 5e-4 --encoder-lr-scale 0.5 \
        --iterations "$iterations" --val-every 500 --monitor lesion_f1 --nthreads 2 -w stage2_cache --resume "$@"
}

# shellcheck disable=SC2046
train stage2_v1/fold-A "$FOLD_ITERATIONS" --exclude-subjects $(collection gm-challenge) $(collection spine-mini)
# shellcheck disable=SC2046
train stage2_v1/fold-B "$FOLD_ITERATIONS" --exclude-subjects $(collection sct-t2w) $(collection sct-examples)
train stage2_v1/final "$ITERATIONS"

# Per-collection names for experiments/analyses/compare_cascade.py --stage2-folds.
for source in gm-challenge spine-mini; do ln -sfn fold-A "stage2_v1/fold-$source"; done
for source in sct-t2w sct-examples; do ln -sfn fold-B "stage2_v1/fold-$source"; done
echo "[stage2_v1] done: $WORK/stage2_v1"
