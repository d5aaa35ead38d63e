#!/usr/bin/env python3
"""Evaluation throughput: moebench eval vs lm-evaluation-harness (HF backend) on the same
machine, model, data, limit, batch size and thread count, one after the other.

OPTIONAL tooling (never run by CI). Uses the reference venv and the data/model conversion of
scripts/lm_eval_fixtures/make_lm_eval_fixtures.py (so lm-eval reads the same local eval splits
moebench's *_shared tasks read). Prints one JSON line per (task, engine, batch size) with the
wall time of the evaluation (lm-eval: simple_evaluate on a loaded HFLM; moebench: the whole
`moebench eval` process, model loading included, so the ratio is conservative for moebench).

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 /path/to/venv-ref/bin/python scripts/bench_eval_throughput.py \
        --moebench target/release/moebench --threads 2
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "lm_eval_fixtures"))

# (fixture run name, lm-eval task, moebench task, limit)
CASES = [
    ("arc_easy", "arc_easy", "arc_easy_shared", 200),
    ("hellaswag", "hellaswag", "hellaswag_shared", 100),
    ("wikitext", "wikitext", "wikitext_shared", 10),
]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moebench", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,16")
    ap.add_argument("--workdir", default="/tmp/moebench_lm_eval")
    ap.add_argument("--tasks", default=",".join(c[1] for c in CASES), help="lm-eval task names to run")
    args = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    import make_lm_eval_fixtures as fx
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    model_dir = work / "smollm2_135m_instruct_f32"
    fx.convert_model(model_dir)
    tm = TaskManager()
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        lm = HFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=batch)
        for _run, task, ours, limit in [c for c in CASES if c[1] in args.tasks.split(",")]:
            d = fx.build_data(task, work / "data")
            cfg = fx.task_config(tm, task, d, False)
            t0 = time.time()
            simple_evaluate(model=lm, tasks=[cfg], task_manager=tm, limit=limit, bootstrap_iters=0, **fx.SEEDS)
            lm_s = time.time() - t0
            with tempfile.TemporaryDirectory() as out:
                cmd = [args.moebench, "eval", "HuggingFaceTB/SmolLM2-135M-Instruct", "--device", "cpu",
                       "--tasks", ours, "--limit", str(limit), "--batch-size", str(batch), "--out", out]
                env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
                t0 = time.time()
                subprocess.run(cmd, check=True, env=env, stdout=subprocess.DEVNULL)
                ours_s = time.time() - t0
            print(json.dumps({"task": task, "limit": limit, "batch_size": batch, "threads": args.threads,
                              "lm_eval_s": round(lm_s, 2), "moebench_s": round(ours_s, 2),
                              "speedup": round(lm_s / ours_s, 2)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
