#!/usr/bin/env bash
# A wider stage 2 trained from scratch for many more patches than the bundled one saw, for a GPU.
#
# The bundled stage 2 ([16, 32, 64, 128] channels, 2.4 MB) fits its own training
# phantoms to a lesion Dice of only 0.751 (experiments/LOG.md, "How well stage 2 fits
# its own training phantoms"): capacity and training patches, not data, bound it.
# This recipe makes every dataset of stage2_v2_third_pass.sh (62 phantom subjects, three
# copies of the real cords with inserted lesions, the healthy real cords; the
# gm-challenge and spine-mini collections held out) with N processes, trains a
# wider network on them with batches made by N worker processes, and scores it
# beside the bundled stage 2 on the phantom selection set (seed 6000) through the
# warps of one cascade run (experiments/analyses/score_stage2_native.py).
#
# Usage: experiments/recipes/stage2_wide_gpu.sh WORK_DIR [ITERATIONS] [CHANNELS ...]
#   defaults: 20000 iterations, channels 32 64 128 256
# Environment: DEVICE (cuda), JOBS (CPU cores: nproc), BATCH (8), LR (2e-3),
#   MINUTES (stop training after this wall time; unset: none), SUBJECTS_SCALE (1:
#   the full datasets; a larger integer divides every phantom set's subject count by it), SELECTION (1; 0 skips
#   the selection-set scoring, e.g. on a lent GPU machine where the model is scored on real anatomy afterwards).
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(mkdir -p "$1" && cd "$1" && pwd)
ITERATIONS=${2:-20000}
shift $(( $# > 1 ? 2 : 1 ))
CHANNELS=${*:-32 64 128 256}
DEVICE=${DEVICE:-cuda}
JOBS=${JOBS:-$(nproc)}
BATCH=${BATCH:-8}
LR=${LR:-2e-3}
SCALE=${SUBJECTS_SCALE:-1}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"
contrasts=T2w,T1w,PSIR,STIR,T2starw

synth() {  # synth DIR SUBJECTS SEED FIRST
    [ -f "$1/dataset_description.json" ] ||
        bids_sclesion-synth "$1" --subjects $(( ($2 + SCALE - 1) / SCALE )) --contrasts $contrasts --seed "$3" \
            --first-subject "$4" --nprocs "$JOBS"
}
synth train_synth 18 1000 1
synth train_synth2 24 4000 101
synth train_synth3 20 5000 201
[ -f real_cord/dataset_description.json ] || python "$REPO/scripts/make_real_cord_dataset.py" real_cord
for seed in 101 102 103; do
    [ -f "real_lesions_train_$seed/dataset_description.json" ] ||
        python "$REPO/scripts/make_real_lesion_dataset.py" real_cord "real_lesions_train_$seed" --seed "$seed"
done
held_out=$(held_out_subjects)

limit=()
[ -n "${MINUTES:-}" ] && limit=(--max-minutes "$MINUTES")
# shellcheck disable=SC2086
bids_sclesion-train train_synth stage2_wide --space straight \
    --add-dataset train_synth2 --add-dataset train_synth3 --add-dataset real_lesions_train_101 \
    --add-dataset real_lesions_train_102 --add-dataset real_lesions_train_103 --add-dataset real_cord \
    --dataset-weights 3 3 3 1 1 1 1 --allow-missing-lesion-labels --exclude-subjects $held_out \
    --channels $CHANNELS --batch-size "$BATCH" --learning-rate "$LR" --iterations "$ITERATIONS" \
    --val-every $(( ITERATIONS / 5 > 0 ? ITERATIONS / 5 : 1 )) --val-max-images 15 --monitor lesion_f1 \
    --workers "$JOBS" --device "$DEVICE" -w stage2_cache --resume "${limit[@]}"

[ "${SELECTION:-1}" = 0 ] && { echo "[stage2_wide] done: $WORK/stage2_wide (selection set skipped)"; exit 0; }
# The selection set: one cascade run gives the straightened images and warps both models are scored through.
synth sel_synth 6 6000 401
[ -f sel_out/dataset_description.json ] ||
    bids_sclesion sel_synth sel_out participant -w sel_work --nprocs "$JOBS" --omp-nthreads 1
python "$REPO/experiments/analyses/score_stage2_native.py" sel_synth sel_work stage2 "$WORK/stage2_wide" --nthreads "$JOBS" |
    tee stage2_wide_selection.md
echo "[stage2_wide] done: $WORK/stage2_wide (selection-set tables in $WORK/stage2_wide_selection.md)"
