#!/usr/bin/env python3
"""bf16 on CPU: what `moebench eval --dtype bf16` changes against the f32 default, on the shipped
tasks — wall time and every metric, same tasks, limits, batch size and threads, one after the
other. OPTIONAL tooling (never run by CI); needs only the moebench binary and ../shared/datasets.

    python3 scripts/bench_bf16.py --moebench target/release/moebench --threads 2

Prints one JSON line per task and dtype, then a markdown table (task, metric, f32, bf16, Δ,
times) ready for docs/performance.md. bf16 matmuls use the CPU's AVX512-BF16 instructions
through oneDNN when it has them (`grep avx512_bf16 /proc/cpuinfo`); f32 stays the default and
the parity reference.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"
# (task, extra arguments, limit)
TASKS = [
    ("arc_easy_shared", [], 200),
    ("arc_challenge_shared", [], 200),
    ("hellaswag_shared", [], 200),
    ("piqa_shared", [], 200),
    ("winogrande_shared", [], 200),
    ("boolq_shared", [], 200),
    ("openbookqa_shared", [], 200),
    ("lambada_openai_shared", [], 200),
    ("mmlu_shared_anatomy", ["--num-fewshot", "5"], 100),
    ("wikitext_shared", [], 10),
    ("gsm8k_offline", [], 20),
    ("shakespeare_nextline", [], 200),
    ("shakespeare_sonnets", [], 50),
]


def run(args, task, extra, limit, dtype):
    with tempfile.TemporaryDirectory() as out:
        cmd = [args.moebench, "eval", MODEL, "--device", "cpu", "--dtype", dtype, "--tasks", task,
               "--limit", str(limit), "--batch-size", str(args.batch_size), "--bootstrap-iters", "0",
               "--out", out, *extra]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OMP_WAIT_POLICY="PASSIVE")
        t0 = time.time()
        subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
        seconds = time.time() - t0
        results = json.loads((Path(out) / "results.json").read_text())["results"][task]
        metrics = {k: v for k, v in results.items() if isinstance(v, (int, float)) and "_stderr" not in k}
        return seconds, metrics


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moebench", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every limit")
    ap.add_argument("--tasks", default=",".join(t[0] for t in TASKS))
    args = ap.parse_args()
    wanted = args.tasks.split(",")
    lines = ["| task | docs | metric | f32 | bf16 | Δ (bf16 − f32) | f32 (s) | bf16 (s) | speed-up |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|"]
    totals = [0.0, 0.0]
    for task, extra, limit in [t for t in TASKS if t[0] in wanted]:
        limit = max(1, round(limit * args.scale))
        (t32, m32), (t16, m16) = (run(args, task, extra, limit, d) for d in ("f32", "bf16"))
        totals[0] += t32
        totals[1] += t16
        print(json.dumps({"task": task, "limit": limit, "f32_s": round(t32, 2), "bf16_s": round(t16, 2),
                          "f32": m32, "bf16": m16}), flush=True)
        for i, key in enumerate(sorted(m32)):
            timing = [f"{t32:.1f}", f"{t16:.1f}", f"{t32 / t16:.2f}×"] if i == 0 else ["", "", ""]
            lines.append("| " + " | ".join([task if i == 0 else "", str(limit) if i == 0 else "", key,
                                            f"{m32[key]:.4f}", f"{m16[key]:.4f}", f"{m16[key] - m32[key]:+.4f}", *timing]) + " |")
    lines.append(f"| **all** | | | | | | {totals[0]:.1f} | {totals[1]:.1f} | **{totals[0] / totals[1]:.2f}×** |")
    print()
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
