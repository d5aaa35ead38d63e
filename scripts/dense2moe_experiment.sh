#!/usr/bin/env bash
# The Dense2MoE experiment of docs/methods.md (issue #6, METHODS.md §3.6 miniature): a dense
# byte-level 8-layer model (H=128, MLP 512) trained on the Shakespeare plays, then — all with
# the same continued pre-training (CPT) — kept dense, fused by Dense2MoE (3 layers → 1 block with
# 2 routed experts + its own MLP), pruned (the same 3 layers → 1), or sparse-upcycled (4 experts,
# top-2): `moebench run suites/dense2moe-experiment.yaml` reports sonnet bits/byte against bytes
# per decode token and measured decode latency.
# Usage: scripts/dense2moe_experiment.sh [BASE_STEPS]   (default 600)
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${MOEBENCH:-./target/release/moebench}"
[ -n "${MOEBENCH:-}" ] || cargo build --release --quiet
out=runs/dense2moe-models/base8
mkdir -p runs/dense2moe-models
if [ ! -f "$out/train.json" ]; then
  "$bin" train --scratch --experts 0 --layers 8 --intermediate-size 512 --steps "${1:-600}" \
    --batch-size 16 --seq-len 128 --lr 2e-3 --warmup 50 --seed 0 --out "$out" > "$out.summary.json"
fi
"$bin" run suites/dense2moe-experiment.yaml
