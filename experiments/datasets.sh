# The datasets of the stage-2 recipes, in one place (sourced by experiments/recipes/*.sh).
#
# Every recipe runs in a WORK_DIR that holds some of:
#   train_synth/             bids_sclesion-synth train_synth --subjects 18 --contrasts T2w,T1w,PSIR,STIR,T2starw --seed 1000
#   train_synth2/            bids_sclesion-synth train_synth2 --subjects 24 ... --seed 4000 --first-subject 101
#   real_cord/               python scripts/make_real_cord_dataset.py real_cord
#   real_lesions_train_S/    python scripts/make_real_lesion_dataset.py real_cord real_lesions_train_S --seed S (S = 101, 102, 103)
#   sel_synth/               bids_sclesion-synth sel_synth --subjects 6 ... --seed 6000 --first-subject 401 (selection set)
#   test_synth/, test_synth_b/  the phantom test sets of the model cards (phantom_test_sets)
# and the functions below make the missing ones. The real-anatomy benchmark measures the collections held out
# here (HELD_OUT_COLLECTIONS), so no stage 2 trains or validates on them.

HELD_OUT_COLLECTIONS=${HELD_OUT_COLLECTIONS:-"gm-challenge spine-mini"}
DATASETS_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONTRASTS=T2w,T1w,PSIR,STIR,T2starw

# held_out_subjects [REAL_CORD_DIR]: the real subjects of the held-out collections (participants.tsv: id, collection).
held_out_subjects() {
    awk -F'\t' -v keep="$HELD_OUT_COLLECTIONS" \
        'BEGIN {n = split(keep, c, " "); for (i = 1; i <= n; i++) held[c[i]] = 1} NR > 1 && ($2 in held) {print $1}' \
        "${1:-real_cord}/participants.tsv"
}

# finetune_folder ITERATIONS: the folder of stage2_v3_finetune.sh's model, named after what its environment
# changes (LR when not 5e-4, SEED, WEIGHTS, AUGMENTATION, DICE_WEIGHT). stage2_v4.sh finds the fine-tuning by the same name.
finetune_folder() {
    local out=stage2_v3_finetune_$1
    [ "${LR:-5e-4}" = 5e-4 ] || out=${out}_lr$LR
    [ -z "${SEED:-}" ] || out=${out}_seed$SEED
    [ -z "${WEIGHTS:-}" ] || out=${out}_w$(echo $WEIGHTS | tr ' ' -)
    [ -z "${AUGMENTATION:-}" ] || out=${out}_$AUGMENTATION
    [ -z "${DICE_WEIGHT:-}" ] || out=${out}_dice$DICE_WEIGHT
    echo "$out"
}

# phantoms NAME SUBJECTS SEED [FIRST_SUBJECT]
phantoms() {
    [ -f "$1/dataset_description.json" ] ||
        bids_sclesion-synth "$1" --subjects "$2" --contrasts "$CONTRASTS" --seed "$3" --first-subject "${4:-1}"
}

# phantom_test_sets: the held-out phantom test sets of the model cards: seed 2000 (subjects 1-6) and seed 2500
# (subjects 301-310). Each subject's random stream is keyed by its number, so seed 2500 numbered from 1 is
# another set: compare models only on these.
phantom_test_sets() {
    phantoms test_synth 6 2000
    phantoms test_synth_b 10 2500 301
}

real_cord() {
    [ -f real_cord/participants.tsv ] || python "$DATASETS_REPO/scripts/make_real_cord_dataset.py" real_cord
}

# real_lesions SEED [NAME]: the labelled real cords with lesions inserted (seed SEED)
real_lesions() {
    local name=${2:-real_lesions_train_$1}
    real_cord
    [ -f "$name/dataset_description.json" ] ||
        python "$DATASETS_REPO/scripts/make_real_lesion_dataset.py" real_cord "$name" --seed "$1"
}
