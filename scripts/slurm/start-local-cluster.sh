#!/usr/bin/env bash
# Start a single-node SLURM cluster on this machine (controller and compute node on 127.0.0.1), to test and
# try the HPC scripts. Needs root and Debian's slurm-wlm and munge (apt-get install slurm-wlm munge).
# Idempotent: returns at once when the local cluster already answers. Writes /etc/slurm/slurm.conf only when
# there is none or it is one this script wrote. Stop it with: scontrol shutdown; pkill munged
set -euo pipefail
STATE=${SLURM_LOCAL_DIR:-/var/lib/bids_sclesion-slurm}
CONF=/etc/slurm/slurm.conf
MARK="# written by bids_sclesion scripts/slurm/start-local-cluster.sh"
log() { echo "[slurm-local] $*"; }

if sinfo -h -o %T 2>/dev/null | grep -q -E '^(idle|mix|alloc)'; then log "cluster already up"; exit 0; fi
[ "$(id -u)" = 0 ] || { echo "start-local-cluster.sh: must run as root" >&2; exit 3; }
for tool in slurmctld slurmd munged sinfo; do
    command -v "$tool" >/dev/null || { echo "start-local-cluster.sh: $tool not found (apt-get install slurm-wlm munge)" >&2; exit 3; }
done
if [ -f "$CONF" ] && ! grep -qF "$MARK" "$CONF"; then
    echo "start-local-cluster.sh: $CONF exists and was not written by this script; not touching it" >&2; exit 3
fi

host=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)
mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d" "$STATE/log" /run/munge
chown munge:munge /run/munge

if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key status=none
fi
chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
if ! pgrep -x munged >/dev/null; then
    runuser -u munge -- /usr/sbin/munged
fi

cat > "$CONF" <<CONF
$MARK
ClusterName=local
SlurmctldHost=$host(127.0.0.1)
AuthType=auth/munge
SlurmUser=root
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
ReturnToService=2
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
NodeName=$host NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if sinfo -h -o %T 2>/dev/null | grep -q -E '^(idle|mix|alloc)'; then
        log "cluster up: node $host, $cpus CPU(s), partition debug"; exit 0
    fi
    sleep 1
done
echo "start-local-cluster.sh: the cluster did not come up; logs in $STATE/log" >&2
sinfo >&2 || true
exit 1
