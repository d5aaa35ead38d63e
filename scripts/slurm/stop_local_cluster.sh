#!/usr/bin/env bash
# Stops the daemons scripts/slurm/start_local_cluster.sh started, by their pid files.
set -euo pipefail
STATE=/var/tmp/moebench-slurm
for pidfile in "$STATE/slurmd.pid" "$STATE/slurmctld.pid" /run/munge/munged.pid; do
    if [ -f "$pidfile" ]; then
        kill "$(cat "$pidfile")" 2>/dev/null || true
    fi
done
