#!/usr/bin/env bash
# The routing experiment of docs/methods.md (issue #4): five tiny MoEs (4 layers, H=128, 16
# experts of width 128, byte-level) trained from the same seed on the Shakespeare plays with
# Top-2, fixed Top-p (p = 0.3, 0.4) and DTop-p (global, per-layer; target T = 2), then
# evaluated by `moebench run suites/routing-experiment.yaml` (held-out sonnets, FLOPs, routing).
# Usage: scripts/routing_experiment.sh [STEPS]   (default 800; ~4 min per model on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
steps="${1:-800}"
out=runs/routing-models
# MOEBENCH=path/to/moebench skips the release build (the heavy work is in libtorch either way).
bin="${MOEBENCH:-./target/release/moebench}"
[ -n "${MOEBENCH:-}" ] || cargo build --release --quiet
mkdir -p "$out"
common=(--scratch --steps "$steps" --batch-size 16 --seq-len 128 --lr 2e-3 --warmup 50 --seed 0)
train() { # name, extra args...
  local name="$1"; shift
  [ -f "$out/$name/train.json" ] && { echo "$name: trained earlier"; return; }
  echo "== $name"
  "$bin" train "${common[@]}" --out "$out/$name" "$@" > "$out/$name.summary.json"
}
# Top-2 with Switch load balancing 0.01 (METHODS.md §7.3).
train topk --router topk --load-balance 0.01
# Huang et al.: raw-weight Top-p, balance 1e-2 and dynamic (entropy) loss 1e-4 (§7.5).
train topp-0.3 --router topp --router-params '{"p": 0.3}' --load-balance 0.01 --entropy 1e-4
train topp-0.4 --router topp --router-params '{"p": 0.4}' --load-balance 0.01 --entropy 1e-4
# DTop-p: balance 1e-4, dynamic loss 1e-3, z-loss 0 (§5.3 step 5), T = 2.
train dtop_p-global --router dtop_p --router-params '{"target": 2}' --load-balance 1e-4 --entropy 1e-3
train dtop_p-layer --router dtop_p --router-params '{"target": 2, "per_layer": true}' --load-balance 1e-4 --entropy 1e-3
"$bin" run suites/routing-experiment.yaml
