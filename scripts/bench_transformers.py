#!/usr/bin/env python3
"""transformers' side of `moebench bench`: the same measurements, on the same prompt ids, with
the same options and the same `--json` keys, for docs/performance.md.

  prefill_ms            one forward of the prompt (logits_to_keep=1, as generate does) + argmax
  tpot_ms               per decode step of a manual greedy loop with past_key_values
  decode_tokens_per_s   batch * (new_tokens - 1) / decode time
  generate_ms           model.generate(do_sample=False, max_new_tokens=N, min_new_tokens=N)
  peak_rss_mib          VmHWM of this process (includes loading)

Run from the repo root with the reference venv (torch 2.13 CPU + transformers 5.23), offline,
from the Hugging Face cache that `moebench prepare` fills:

  /work/venv-ref/bin/python scripts/bench_transformers.py HuggingFaceTB/SmolLM2-135M-Instruct \
      --threads 2 --prompt-tokens 64 --new-tokens 64 --batch 1 --json
"""

import argparse
import json
import os
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_CACHE", str(REPO / ".cache" / "hub"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

# Same text as DEFAULT_PROMPT in harness/cli/src/bench.rs.
DEFAULT_PROMPT = (
    "The old lighthouse stood at the edge of the cliff, its white paint peeling after decades of "
    "salt wind and rain. Every evening the keeper climbed the spiral stairs to light the lamp, and "
    "every morning he wrote a short note in the logbook about the weather, the ships that passed "
    "in the night, and the birds that nested in the rocks below."
)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", nargs="?", default="HuggingFaceTB/SmolLM2-135M-Instruct")
    p.add_argument("--prompt", default=DEFAULT_PROMPT)
    p.add_argument("--prompt-tokens", type=int, help="repeat or trim the prompt ids to exactly N")
    p.add_argument("--new-tokens", type=int, default=64)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--attn", default="sdpa", help="attn_implementation (moebench uses SDPA)")
    p.add_argument("--json", action="store_true", help="print one line of JSON")
    a = p.parse_args()
    if a.new_tokens < 2 or a.batch < 1 or a.repeats < 1:
        p.error("--new-tokens must be at least 2, --batch and --repeats at least 1")
    return a


def prompt_ids(tokenizer, text, n):
    ids = tokenizer(text)["input_ids"]
    if n is not None:
        ids = [ids[i % len(ids)] for i in range(n)]
    if not ids:
        raise SystemExit("no prompt tokens; give a non-empty --prompt and --prompt-tokens >= 1")
    return ids


def timed(f):
    start = time.perf_counter()
    out = f()
    return out, time.perf_counter() - start


def measure(model, input_ids, new_tokens):
    """Seconds of (prefill, new_tokens - 1 decode steps, whole generate) for one run."""

    def prefill():
        out = model(input_ids, use_cache=True, logits_to_keep=1)
        return out.past_key_values, out.logits[:, -1].argmax(-1)

    (past, nxt), t_prefill = timed(prefill)

    def decode():
        nonlocal past, nxt
        for _ in range(new_tokens - 1):
            out = model(nxt[:, None], past_key_values=past, use_cache=True)
            past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1)

    _, t_decode = timed(decode)
    _, t_generate = timed(
        lambda: model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            do_sample=False,
            max_new_tokens=new_tokens,
            min_new_tokens=new_tokens,
        )
    )
    return t_prefill, t_decode, t_generate


def latency_ms(seconds):
    ms = [s * 1e3 for s in seconds]
    return {"median": statistics.median(ms), "min": min(ms)}


def rate(tokens, seconds):
    r = [tokens / s for s in seconds]
    return {"median": statistics.median(r), "max": max(r)}


def peak_rss_mib():
    with open("/proc/self/status") as f:
        kib = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return kib / 1024


def main():
    a = parse_args()
    if a.threads is not None:
        torch.set_num_threads(a.threads)
    tokenizer = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(
        a.model, dtype=torch.float32, attn_implementation=a.attn
    ).eval()
    ids = prompt_ids(tokenizer, a.prompt, a.prompt_tokens)
    input_ids = torch.tensor([ids] * a.batch)
    with torch.no_grad():
        for _ in range(a.warmup):
            measure(model, input_ids, a.new_tokens)
        runs = [measure(model, input_ids, a.new_tokens) for _ in range(a.repeats)]
    prefill, decode, generate = zip(*runs)
    b, n, steps = a.batch, a.new_tokens, a.new_tokens - 1
    report = {
        "engine": f"transformers {transformers.__version__} (torch {torch.__version__}, {a.attn})",
        "model": a.model,
        "device": "cpu",
        "dtype": "f32",
        "threads": torch.get_num_threads(),
        "batch": b,
        "prompt_tokens": len(ids),
        "new_tokens": n,
        "warmup": a.warmup,
        "repeats": a.repeats,
        "prefill_ms": latency_ms(prefill),
        "prefill_tokens_per_s": rate(b * len(ids), prefill),
        "tpot_ms": latency_ms(d / steps for d in decode),
        "decode_tokens_per_s": rate(b * steps, decode),
        "generate_ms": latency_ms(generate),
        "generate_tokens_per_s": rate(b * n, generate),
        "peak_rss_mib": peak_rss_mib(),
        "prompt_ids": ids,
    }
    if a.json:
        print(json.dumps(report))
        return
    print(json.dumps({k: v for k, v in report.items() if k != "prompt_ids"}, indent=2))


if __name__ == "__main__":
    main()
