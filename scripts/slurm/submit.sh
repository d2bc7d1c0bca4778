#!/usr/bin/env bash
# Run bids_sclesion on a SLURM cluster: the participant level as a job array (one participant per task),
# then the group level as one job that starts when every task has ended (whatever their outcome).
#
#   bash scripts/slurm/submit.sh BIDS_DIR OUT_DIR [extra participant-level arguments...]
#
# Variables:
#   PARTICIPANTS   labels to run (default: every sub-* directory of BIDS_DIR)
#   WORK_ROOT      parent of the per-participant work directories (default: OUT_DIR/../work)
#   LOG_DIR        SLURM log files (default: OUT_DIR/../logs)
#   SBATCH_ARGS    added to every sbatch call, e.g. "--partition=short --account=lab"
#   CPUS, MEM, TIME  resources of one participant task (default 2, 8G, 02:00:00)
#   MAX_PARALLEL   at most this many tasks at once (default 50)
#   BIDS_SCLESION  the app's command (default: bids_sclesion), e.g. for Apptainer:
#                  "apptainer run --cleanenv -B /data -B /scratch bids_sclesion.sif"
#   WAIT=1         return only when the group level has ended (its exit status is returned)
#
# Every task writes only its participant's files into OUT_DIR (derivatives are written atomically and the
# shared files, dataset_description.json and .bidsignore, are replaced atomically with identical content);
# each task has its own work directory, so that no two tasks share a cache.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
[ $# -ge 2 ] || { sed -n '2,22p' "$0"; exit 2; }
BIDS_DIR=$(realpath "$1"); OUT_DIR=$(realpath -m "$2"); shift 2
WORK_ROOT=$(realpath -m "${WORK_ROOT:-$OUT_DIR/../work}")
LOG_DIR=$(realpath -m "${LOG_DIR:-$OUT_DIR/../logs}")
export BIDS_SCLESION=${BIDS_SCLESION:-bids_sclesion}
[ -f "$BIDS_DIR/dataset_description.json" ] || { echo "submit.sh: $BIDS_DIR is not a BIDS dataset" >&2; exit 16; }
mkdir -p "$OUT_DIR" "$WORK_ROOT" "$LOG_DIR"

list="$LOG_DIR/participants-$(date +%Y%m%d-%H%M%S)-$$.txt"
if [ -n "${PARTICIPANTS:-}" ]; then
    for p in $PARTICIPANTS; do echo "${p#sub-}"; done > "$list"
else
    find "$BIDS_DIR" -mindepth 1 -maxdepth 1 -type d -name 'sub-*' -printf '%f\n' | sed 's/^sub-//' | sort > "$list"
fi
n=$(wc -l < "$list")
[ "$n" -gt 0 ] || { echo "submit.sh: no participant to run" >&2; exit 18; }

# shellcheck disable=SC2086
array=$(sbatch --parsable ${SBATCH_ARGS:-} --job-name=bids_sclesion-participant \
    --array="0-$((n - 1))%${MAX_PARALLEL:-50}" --cpus-per-task="${CPUS:-2}" --mem="${MEM:-8G}" \
    --time="${TIME:-02:00:00}" --output="$LOG_DIR/participant-%A_%a.log" \
    "$here/participant.sbatch" "$list" "$BIDS_DIR" "$OUT_DIR" "$WORK_ROOT" "$@")
array=${array%%;*}
echo "participant level: job array $array ($n participant(s); logs $LOG_DIR/participant-${array}_*.log)"

wait_flag=()
[ "${WAIT:-0}" = 1 ] && wait_flag=(--wait)
# shellcheck disable=SC2086
group=$(sbatch --parsable ${SBATCH_ARGS:-} "${wait_flag[@]}" --job-name=bids_sclesion-group \
    --dependency="afterany:$array" --cpus-per-task=1 --mem=4G --time=01:00:00 \
    --output="$LOG_DIR/group-%j.log" "$here/group.sbatch" "$BIDS_DIR" "$OUT_DIR" "$WORK_ROOT/group") || status=$?
echo "group level: job ${group%%;*} (after job array $array; log $LOG_DIR/group-${group%%;*}.log)"
exit "${status:-0}"
