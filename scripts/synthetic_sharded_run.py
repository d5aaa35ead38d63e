#!/usr/bin/env python3
"""A synthetic sharded run directory at leaderboard scale, to time `moebench report` on it
(docs/performance.md, "Reading a sharded run's store"): MODELS × METHODS × TASKS task jobs
(4 metrics each) and MODELS × METHODS measure jobs (10 measures each), each job a valid block
closed by its `job_done`, dealt round-robin into SHARDS segments `records.shard-I-of-N.jsonl`.
Defaults (80 × 12 × 20, 32 shards) are the 10× nightly leaderboard of docs/scale-out.md:
~106k records.
    scripts/synthetic_sharded_run.py OUT_DIR [--models 80 --methods 12 --tasks 20 --shards 32]
"""
import argparse, hashlib, json, os, random

p = argparse.ArgumentParser()
p.add_argument("out")
p.add_argument("--models", type=int, default=80)
p.add_argument("--methods", type=int, default=12)
p.add_argument("--tasks", type=int, default=20)
p.add_argument("--shards", type=int, default=32)
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
rng = random.Random(1234)
run = {"suite": "synthetic-leaderboard", "suite_path": "/nonexistent/suite.yaml",
       "suite_sha256": "0" * 64, "harness_version": "0.1.0", "start_time": "2026-01-01T00:00:00Z"}
with open(os.path.join(a.out, "run.json"), "w") as f:
    json.dump(run, f)
segments = [open(os.path.join(a.out, f"records.shard-{i + 1}-of-{a.shards}.jsonl"), "w")
            for i in range(a.shards)]
measures = ["params_total", "params_active", "flops_per_token", "bytes_per_decode_token",
            "active_experts_mean", "active_experts_std", "load_cv", "max_violation",
            "load_entropy", "dead_experts"]
metrics = [("acc,none", True), ("acc_norm,none", True), ("acc_stderr_probe,none", True),
           ("word_perplexity,none", False)]
total = 0
group = 0
for m in range(a.models):
    for k in range(a.methods):
        seg = segments[group % a.shards]
        group += 1
        jobs = [None] + list(range(a.tasks))
        for t in jobs:
            job = hashlib.sha256(f"{m}/{k}/{t}".encode()).hexdigest()
            base = {"suite": run["suite"], "job": job, "model": f"org/model-{m}",
                    "model_label": f"model-{m}", "model_sha": "a" * 40, "method": f"method{k}",
                    "method_label": f"method-{k}", "method_params": {"k": k},
                    "method_hash": hashlib.sha256(f"{k}".encode()).hexdigest()[:16],
                    "task": None if t is None else f"task_{t}",
                    "task_hash": None if t is None else "b" * 64, "stderr": None, "n": None,
                    "higher_is_better": None, "protocol": None, "device": "cuda:0",
                    "dtype": "bf16", "batch_size": 16, "seed": 1234, "harness_version": "0.1.0",
                    "wall_s": round(rng.uniform(10, 600), 3), "time": "2026-01-01T01:00:00Z"}
            lines = []
            if t is None:
                for name in measures:
                    lines.append({**base, "kind": "measure", "metric": name,
                                  "value": rng.uniform(1, 1e9)})
            else:
                for name, hib in metrics:
                    lines.append({**base, "kind": "metric", "metric": name,
                                  "value": rng.uniform(0, 1), "stderr": rng.uniform(0, 0.02),
                                  "n": 1000, "higher_is_better": hib})
            lines.append({**base, "kind": "job_done", "metric": "records", "value": len(lines)})
            seg.write("".join(json.dumps(l, separators=(",", ":")) + "\n" for l in lines))
            total += len(lines)
for s in segments:
    s.close()
print(f"{total} records in {a.shards} segments under {a.out}")
