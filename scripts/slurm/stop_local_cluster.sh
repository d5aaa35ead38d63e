#!/usr/bin/env bash
# Stops the daemons scripts/slurm/start_local_cluster.sh started (by their pid files).
set -euo pipefail
STATE=/var/tmp/moebench-slurm
for daemon in slurmd slurmctld; do
    if [ -f "$STATE/$daemon.pid" ]; then
        kill "$(cat "$STATE/$daemon.pid")" 2>/dev/null || true
    fi
done
