#!/usr/bin/env bash
# Do lesion labels of physical extent shrink stage 2's lesions along the thick-slice axis?
# Two fine-tunings of the bundled stage 2 that differ only in their lesion labels on
# the straightened cord: the phantoms' fine lesion maps (--fine-lesion-label
# res-fine_lesion-manual; the model is then averaged over each thick voxel on the way
# back) against the source-grid masks (the half-covered rule) as control, run side by
# side with one thread each; then both and the bundled model are scored on the source
# grid of the phantom selection set (seed 6000) through one cascade run's warps.
#
# Usage: experiments/recipes/stage2_fine_labels.sh WORK_DIR [ITERATIONS]
#
# WORK_DIR must hold:
#   train_synth/  bids_sclesion-synth train_synth --subjects 12 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 1000
#   sel_synth/    bids_sclesion-synth sel_synth --subjects 6 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 6000 --first-subject 401
# Every phantom subject of train_synth was one of the bundled model's training
# subjects, so both runs validate once, at the end, and keep their last weights.
set -euo pipefail
WORK=$(cd "$1" && pwd)
ITERATIONS=${2:-2000}
REPO=$(cd "$(dirname "$0")/../.." && pwd)
cd "$WORK"

train() {  # train OUT [EXTRA OPTIONS...]
    local out=$1
    shift
    bids_sclesion-train train_synth "$out" --space straight --init-from stage2 --learning-rate 5e-4 \
        --encoder-lr-scale 0.5 --iterations "$ITERATIONS" --val-every "$ITERATIONS" --val-max-images 5 \
        --nthreads 1 -w "cache_$out" --resume "$@" > "$out.log" 2>&1
}
[ -f stage2_fine/model.safetensors ] || train stage2_fine --fine-lesion-label res-fine_lesion-manual &
[ -f stage2_control/model.safetensors ] || train stage2_control &
wait
# The selection set's cascade run with the bundled models gives the straightened images and warps.
[ -f sel_out/dataset_description.json ] ||
    bids_sclesion sel_synth sel_out participant -w sel_work --nprocs 2 --omp-nthreads 1 > sel_run.log 2>&1
python "$REPO/experiments/analyses/score_stage2_native.py" sel_synth sel_work stage2 stage2_control stage2_fine --nthreads 2
