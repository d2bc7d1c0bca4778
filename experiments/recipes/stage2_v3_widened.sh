#!/usr/bin/env bash
# The bundled stage 2 (v2) widened and trained on: a test of capacity that fits a CPU.
#
# The bundled stage 2 ([16, 32, 64, 128] channels) fits its own training phantoms
# to a lesion Dice of only 0.751 (experiments/LOG.md, "How well stage 2 fits its own
# training phantoms"). Training a wider network from scratch to the same number of
# patches takes more than a working session on a 2-core CPU; this recipe instead
# widens v2 (`--init-from stage2_v2 --channels ...`: the wider network starts out
# computing exactly what v2 does, its new channels at random) and trains it on
# v2's data and sampling, every layer at the full learning rate so that the new
# channels learn. It then scores it beside v2 on the phantom selection set.
#
# Usage: experiments/recipes/stage2_v3_widened.sh WORK_DIR SELECTION_BIDS SELECTION_WORK [ITERATIONS] [CHANNELS ...]
#   defaults: 6000 iterations, channels 32 64 128 256
# WORK_DIR must hold the datasets of experiments/recipes/stage2_v2.sh made with this
# version (train_synth: 18 subjects of seed 1000, train_synth2: 24 of seed 4000,
# real_lesions_train_101 and _102, real_cord). SELECTION_BIDS is the phantom
# selection set (bids_sclesion-synth sel_synth --subjects 6 --seed 6000
# --first-subject 401) and SELECTION_WORK the work directory of one app run on it.
# Environment: LR (1e-3), THREADS (2), INIT (stage2_v2: the model widened), TRAIN_OPTIONS (more
# bids_sclesion-train options, e.g. "--cpu-bf16 --workers 2").
# v3 is this script's output with 7000 iterations (experiments/LOG.md, "Stage 2 v3").
# v4 (measured, not bundled: experiments/LOG.md, "Stage 2 v4") is
#   INIT=stage2 TRAIN_OPTIONS=--cpu-bf16 experiments/recipes/stage2_v3_widened.sh WORK SEL SEL_WORK 6000 48 96 192 384
set -euo pipefail
. "$(cd "$(dirname "$0")/.." && pwd)/datasets.sh"
WORK=$(cd "$1" && pwd)
SELECTION=$(cd "$2" && pwd)
SELECTION_WORK=$(cd "$3" && pwd)
ITERATIONS=${4:-6000}
shift $(( $# >= 4 ? 4 : 3 ))
CHANNELS=${*:-32 64 128 256}
LR=${LR:-1e-3}
THREADS=${THREADS:-2}
INIT=${INIT:-stage2_v2}
TRAIN_OPTIONS=${TRAIN_OPTIONS:-}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"
held_out=$(held_out_subjects)
# shellcheck disable=SC2086
bids_sclesion-train train_synth stage2_widened --config "$REPO/experiments/configs/stage2_v3.yaml" \
    --init-from "$INIT" --channels $CHANNELS --exclude-subjects $held_out --learning-rate "$LR" \
    --iterations "$ITERATIONS" --val-every $(( ITERATIONS / 2 )) --nthreads "$THREADS" -w stage2_cache_r4 $TRAIN_OPTIONS
python "$REPO/experiments/analyses/score_stage2_native.py" "$SELECTION" "$SELECTION_WORK" "$INIT" "$WORK/stage2_widened" \
    --nthreads "$THREADS" | tee stage2_widened_selection.md
echo "[stage2_widened] done: $WORK/stage2_widened (selection-set tables in $WORK/stage2_widened_selection.md)"
