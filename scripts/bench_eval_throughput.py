#!/usr/bin/env python3
"""Evaluation throughput: moebench eval vs lm-evaluation-harness (HF backend) on the same
machine, model, data, limit, batch size and thread count, one after the other.

OPTIONAL tooling (never run by CI). Uses the reference venv and the data/model conversion of
scripts/lm_eval_fixtures/make_lm_eval_fixtures.py (so lm-eval reads the same local eval splits
moebench's *_shared / *_offline tasks read). For every case and batch size it times:

- lm-eval: `simple_evaluate` on an already loaded HFLM (model loading excluded);
- moebench: the whole `moebench eval` process (model loading included, so ratios are
  conservative for moebench), with the prefix KV cache (default) and with `--no-prefix-cache --no-lookup-decoding` (the plain engine),
  and with `--bf16` also `--dtype bf16` (cache on);

and checks that both engines saw the same prompts (lm-eval's prompt hashes) and compares their
metrics. Peak memory is each moebench process's max RSS (GNU time). Prints one JSON line per
measurement and, at the end, a markdown table ready for docs/performance.md.

    HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 /work/venv-ref/bin/python scripts/bench_eval_throughput.py \\
        --moebench target/release/moebench --threads 2 --batch-sizes 1,8 --cases fewshot,arc_easy

`--cases` takes case names or the sets `fewshot` (MMLU 5-shot on 3 subjects, HellaSwag 10-shot,
ARC-Challenge 25-shot, GSM8K 8-shot chain of thought: the issue's set) and `all`; `--scale 0.25` shrinks every
limit for a quick development run (ratios from small runs are noisier).
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "lm_eval_fixtures"))
MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


@dataclass
class Case:
    name: str
    lm_eval_tasks: list
    moebench_tasks: list
    num_fewshot: int | None
    limit: int  # documents per task
    # lm-eval draws few-shot examples from the test split when no train split is available
    # locally (moebench's *_shared / *_offline tasks do the same).
    fewshot_from_test: bool = False
    fewshot_set: bool = False  # part of the few-shot set (the overall ratio)
    metrics: list = field(default_factory=lambda: ["acc", "acc_norm"])
    # `--scale` does not go below this (GSM8K: 16 problems keep generation timings above noise).
    min_limit: int = 1
    # Shown in the table when `num_fewshot` is left to the task file.
    task_shots: int = 0


MMLU = ["abstract_algebra", "anatomy", "marketing"]
CASES = [
    Case("mmlu_5shot", [f"mmlu_{s}" for s in MMLU], [f"mmlu_shared_{s}" for s in MMLU], 5, 40,
         fewshot_set=True, metrics=["acc"]),
    Case("hellaswag_10shot", ["hellaswag"], ["hellaswag_shared"], 10, 40, fewshot_set=True),
    Case("arc_challenge_25shot", ["arc_challenge"], ["arc_challenge_shared"], 25, 25,
         fewshot_from_test=True, fewshot_set=True),
    # lm-eval's 8-shot GSM8K: `gsm8k_cot.yaml`, Wei et al.'s 8 chain-of-thought exemplars,
    # the same for every problem (`first_n` samples in the task file).
    Case("gsm8k_cot_8shot", ["gsm8k_cot"], ["gsm8k_cot_offline"], None, 16, fewshot_set=True,
         metrics=["exact_match"], min_limit=16, task_shots=8),
    # `gsm8k.yaml` (5-shot by default) at 8 shots, outside the set: its default sampler draws
    # each problem's examples at random, so no prompt shares a prefix with another.
    Case("gsm8k_8shot", ["gsm8k"], ["gsm8k_offline"], 8, 16, fewshot_from_test=True,
         metrics=["exact_match"], min_limit=16),
    Case("arc_easy", ["arc_easy"], ["arc_easy_shared"], None, 200),
    Case("hellaswag", ["hellaswag"], ["hellaswag_shared"], None, 100),
    Case("wikitext", ["wikitext"], ["wikitext_shared"], None, 10, metrics=["word_perplexity"]),
]


def select(spec: str) -> list:
    names = set()
    for part in spec.split(","):
        if part == "all":
            names |= {c.name for c in CASES}
        elif part == "fewshot":
            names |= {c.name for c in CASES if c.fewshot_set}
        elif part in {c.name for c in CASES}:
            names.add(part)
        else:
            sys.exit(f"unknown case `{part}` (cases: {', '.join(c.name for c in CASES)}, fewshot, all)")
    return [c for c in CASES if c.name in names]


def lm_eval_run(fx, tm, lm, case: Case, limit: int, work: Path) -> dict:
    from lm_eval import simple_evaluate

    cfgs = []
    for task in case.lm_eval_tasks:
        d = fx.build_data(task, work / "data")
        cfgs.append(fx.task_config(tm, task, d, case.fewshot_from_test))
    t0 = time.time()
    res = simple_evaluate(model=lm, tasks=cfgs, task_manager=tm, num_fewshot=case.num_fewshot,
                          limit=limit, bootstrap_iters=0, log_samples=True, **fx.SEEDS)
    seconds = time.time() - t0
    metrics, prompts = {}, {}
    for task, ours in zip(case.lm_eval_tasks, case.moebench_tasks):
        for key, value in res["results"][task].items():
            if isinstance(value, (int, float)) and "_stderr" not in key:
                metrics[f"{ours}/{key}"] = value
        # one sample per filter for generation tasks: compare the set
        prompts[ours] = sorted({s["prompt_hash"] for s in res["samples"][task]})
    return {"seconds": seconds, "metrics": metrics, "prompts": prompts}


def moebench_run(args, case: Case, limit: int, batch: int, extra: list) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cmd = [args.moebench, "eval", MODEL, "--device", "cpu", "--tasks", ",".join(case.moebench_tasks),
               "--limit", str(limit), "--batch-size", str(batch), "--bootstrap-iters", "0",
               "--log-samples", "--out", out, *extra]
        if case.num_fewshot is not None:
            cmd += ["--num-fewshot", str(case.num_fewshot)]
        # OMP_NUM_THREADS and OMP_WAIT_POLICY as set in main(); the engine logs each run's cost.
        env = dict(os.environ, MOEBENCH_LOG="moebench_eval=info")
        # Peak RSS through GNU time: a child forked from this (large) Python process inherits
        # its high-water mark across exec, so wait4's ru_maxrss would report ours.
        rss_file = Path(out) / "max_rss_kib"
        t0 = time.time()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        status = proc.returncode
        seconds = time.time() - t0
        if status != 0:
            sys.exit(f"moebench failed ({status}): {' '.join(cmd)}\n{proc.stderr}")
        plain_log = re.sub(r"\x1b\[[0-9;]*m", "", proc.stderr)  # tracing colours its fields
        engine = [dict(kv.split("=", 1) for kv in line.split() if "=" in kv)
                  for line in plain_log.splitlines() if "engine run" in line]
        positions = sum(int(e["positions"]) for e in engine)
        peak_kept = max((float(e["peak_kept_mib"]) for e in engine), default=0.0)
        peak_kib = int(rss_file.read_text().split()[-1])
        results = json.loads((Path(out) / "results.json").read_text())
        metrics, prompts = {}, {}
        for task in case.moebench_tasks:
            for key, value in results["results"][task].items():
                if isinstance(value, (int, float)) and "_stderr" not in key:
                    metrics[f"{task}/{key}"] = value
            # lm-eval's layout: OUT/<model>/samples_<task>_<date>.jsonl
            (samples,) = Path(out).glob(f"*/samples_{task}_*.jsonl")
            lines = samples.read_text().splitlines()
            prompts[task] = sorted({json.loads(line)["prompt_hash"] for line in lines if line.strip()})
        return {"seconds": seconds, "peak_rss_mib": peak_kib / 1024, "positions": positions,
                "peak_kept_mib": peak_kept, "metrics": metrics,
                "prompts": prompts, "prefix_cache": results["config"].get("prefix_cache")}


def compared(case: Case, a: dict, b: dict) -> dict:
    """Max |Δ| per compared metric between two runs' metrics."""
    out = {}
    for key, va in a.items():
        metric = key.split("/", 1)[1].split(",")[0]
        if metric in case.metrics and key in b:
            out[key] = abs(va - b[key])
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moebench", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--workdir", default="/tmp/moebench_lm_eval")
    ap.add_argument("--cases", default="fewshot,arc_easy", help="case names, `fewshot` or `all`")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every limit (development runs)")
    ap.add_argument("--bf16", action="store_true", help="also time moebench with --dtype bf16")
    ap.add_argument("--skip-lm-eval", action="store_true", help="moebench runs only (no ratios)")
    ap.add_argument("--omp-wait-policy", default="PASSIVE",
                    help="OMP_WAIT_POLICY of both engines (PASSIVE: threads that lose their core to another "
                         "process sleep instead of spinning, which on a shared machine decides the timings)")
    args = ap.parse_args()
    # Both engines' OpenMP settings, set before torch is imported here and passed to moebench.
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    os.environ["OMP_WAIT_POLICY"] = args.omp_wait_policy
    import make_lm_eval_fixtures as fx
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    model_dir = work / "smollm2_135m_instruct_f32"
    fx.convert_model(model_dir)
    tm = TaskManager()
    rows = []
    for batch in [int(b) for b in args.batch_sizes.split(",")]:
        lm = None if args.skip_lm_eval else HFLM(pretrained=str(model_dir), dtype="float32", device="cpu",
                                                 batch_size=batch)
        for case in select(args.cases):
            limit = max(case.min_limit, round(case.limit * args.scale))
            row = {"case": case.name, "shots": case.num_fewshot or case.task_shots, "limit": limit,
                   "docs": limit * len(case.moebench_tasks), "batch_size": batch, "threads": args.threads}
            ref = None if lm is None else lm_eval_run(fx, tm, lm, case, limit, work)
            cached = moebench_run(args, case, limit, batch, [])
            plain = moebench_run(args, case, limit, batch, ["--no-prefix-cache", "--no-lookup-decoding"])
            row.update({"moebench_s": round(cached["seconds"], 2), "moebench_no_cache_s": round(plain["seconds"], 2),
                        "peak_rss_mib": round(cached["peak_rss_mib"]), "peak_rss_no_cache_mib": round(plain["peak_rss_mib"]),
                        "prefix_cache": cached["prefix_cache"], "positions": cached["positions"],
                        "positions_no_cache": plain["positions"], "peak_kept_mib": round(cached["peak_kept_mib"], 1),
                        "cache_vs_no_cache_max_abs_diff": max(compared(case, cached["metrics"], plain["metrics"]).values(), default=0.0)})
            if ref is not None:
                row.update({"lm_eval_s": round(ref["seconds"], 2), "speedup": round(ref["seconds"] / cached["seconds"], 2),
                            "speedup_no_cache": round(ref["seconds"] / plain["seconds"], 2),
                            "same_prompts": ref["prompts"] == cached["prompts"],
                            "vs_lm_eval_max_abs_diff": max(compared(case, cached["metrics"], ref["metrics"]).values(), default=0.0)})
            if args.bf16:
                bf16 = moebench_run(args, case, limit, batch, ["--dtype", "bf16"])
                row.update({"moebench_bf16_s": round(bf16["seconds"], 2),
                            "bf16_metric_deltas": {k: round(bf16["metrics"][k] - v, 4) for k, v in cached["metrics"].items()
                                                   if k in bf16["metrics"] and k.split("/", 1)[1].split(",")[0] in case.metrics}})
            rows.append(row)
            print(json.dumps(row), flush=True)
    print()
    print(markdown(rows, args))
    return 0


def markdown(rows: list, args) -> str:
    with_ref = all("lm_eval_s" in r for r in rows)
    head = ["case", "n-shot", "docs", "batch"]
    if with_ref:
        head += ["lm-eval (s)"]
    head += ["moebench (s)", "no cache (s)"]
    if with_ref:
        head += ["speed-up", "speed-up no cache", "same prompts, metrics Δ"]
    head += ["positions cache / no cache", "peak RSS cache / no cache (MiB)", "kept prefixes peak (MiB)"]
    if args.bf16:
        head += ["bf16 (s)", "bf16 metric Δ"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["case"], str(r["shots"]), str(r["docs"]), str(r["batch_size"])]
        if with_ref:
            cells += [f"{r['lm_eval_s']:.1f}"]
        cells += [f"{r['moebench_s']:.1f}", f"{r['moebench_no_cache_s']:.1f}"]
        if with_ref:
            cells += [f"**{r['speedup']:.2f}×**", f"{r['speedup_no_cache']:.2f}×",
                      f"{'yes' if r['same_prompts'] else 'NO'}, {r['vs_lm_eval_max_abs_diff']:.0e}"]
        cells += [f"{r['positions']:,} / {r['positions_no_cache']:,}", f"{r['peak_rss_mib']:,} / {r['peak_rss_no_cache_mib']:,}",
                  f"{r['peak_kept_mib']:.0f}"]
        if args.bf16:
            deltas = ", ".join(f"{k.split('/')[-1].split(',')[0]} {v:+.3f}" for k, v in r["bf16_metric_deltas"].items())
            cells += [f"{r['moebench_bf16_s']:.1f}", deltas]
        lines.append("| " + " | ".join(cells) + " |")
    if with_ref:
        for batch in sorted({r["batch_size"] for r in rows}):
            few = [r for r in rows if r["batch_size"] == batch and any(c.name == r["case"] and c.fewshot_set for c in CASES)]
            if few:
                lm_s, ours = sum(r["lm_eval_s"] for r in few), sum(r["moebench_s"] for r in few)
                plain = sum(r["moebench_no_cache_s"] for r in few)
                lines.append(f"| **few-shot set, overall** | | | {batch} | {lm_s:.1f} | {ours:.1f} | {plain:.1f} | "
                             f"**{lm_s / ours:.2f}×** | {lm_s / plain:.2f}× | | | | |" + (" | |" if args.bf16 else ""))
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
