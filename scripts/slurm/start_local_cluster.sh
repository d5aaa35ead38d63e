#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for tests/slurm.rs (issue #13): Debian's slurmctld,
# slurmd and munge, started as plain daemons (no systemd needed; containers and CI runners
# work), with a slurm.conf describing this node's real CPUs and memory (`slurmd -C`) and every
# state directory under /var/tmp/moebench-slurm. Idempotent: a running cluster is left alone.
# Needs root (apt-get, daemons). Stop it with scripts/slurm/stop_local_cluster.sh.
#   sudo scripts/slurm/start_local_cluster.sh
set -euo pipefail
STATE=/var/tmp/moebench-slurm
CLUSTER=moebench-local

if [ "$(id -u)" -ne 0 ]; then
    echo "start_local_cluster.sh: needs root (apt-get install, daemons)" >&2
    exit 1
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        slurmctld slurmd slurm-client munge >/dev/null
fi

# munge: a key, then the daemon (as root: --force, the socket under /run/munge).
mkdir -p /etc/munge /var/lib/munge /var/log/munge /run/munge
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
chmod 0400 /etc/munge/munge.key
if ! munge -n >/dev/null 2>&1; then
    munged --force
fi

mkdir -p "$STATE"/{state,spool,log} /etc/slurm
host=$(hostname -s)
# This node as slurmd sees it: CPUs, sockets, cores, threads, RealMemory.
node=$(slurmd -C | head -1 | sed "s/^NodeName=[^ ]*/NodeName=$host/")
conf=$(cat <<CONF
# Written by scripts/slurm/start_local_cluster.sh: a one-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/state
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU_Memory
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SchedulerParameters=defer
DefMemPerCPU=1024
$node State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
)
if [ ! -f /etc/slurm/slurm.conf ] || [ "$(cat /etc/slurm/slurm.conf)" != "$conf" ]; then
    printf '%s\n' "$conf" > /etc/slurm/slurm.conf
fi

running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
running "$STATE/slurmctld.pid" || slurmctld
running "$STATE/slurmd.pid" || slurmd

# Ready when the node takes jobs.
for _ in $(seq 60); do
    state=$(sinfo -h -N -o '%t' 2>/dev/null | head -1 || true)
    case "$state" in
        idle|mix|alloc) echo "slurm cluster $CLUSTER up: $node"; exit 0 ;;
        down*|drain*) scontrol update NodeName="$host" State=RESUME >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
echo "start_local_cluster.sh: the node did not come up; see $STATE/log/" >&2
sinfo >&2 || true
exit 1
