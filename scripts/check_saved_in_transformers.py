#!/usr/bin/env python3
"""Checkpoints that moebench compresses (pruning, merging) load in transformers with the same
logits (issue #6: "a saved REAM/REAP-compressed model loads in transformers with matching logits").

OPTIONAL tooling (never run by CI; needs the reference venv of scripts/README.md). For each method,
`moebench apply MODEL --method … --out DIR` writes a checkpoint; `moebench logits DIR --json`
gives the last-position top-10 log-probabilities of a prompt; transformers loads DIR with
AutoModelForCausalLM (float32, CPU) and must give the same token ids and log-probabilities
within 1e-4. MODEL must be an MoE with a tokenizer, e.g. the tiny Shakespeare MoE that
scripts/routing_experiment.sh trains (runs/routing-models/topk).

    /path/to/venv-ref/bin/python scripts/check_saved_in_transformers.py \
        --moebench target/release/moebench --model runs/routing-models/topk
"""
import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

METHODS = [
    ("freq_prune", {"compression": 0.5}, []),
    ("reap", {"compression": 0.5}, []),
    ("ream", {"compression": 0.5, "group_size": 4}, []),
    ("m_smoe", {"compression": 0.5}, []),
    ("hc_smoe", {"compression": 0.5}, []),
    ("reap", {"compression": 0.25}, [{"name": "ream", "params": {"compression": 0.34, "group_size": 3}}]),
]
PROMPT = "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--moebench", required=True)
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(1)
    failures = 0
    with tempfile.TemporaryDirectory() as tmp:
        for i, (method, params, then) in enumerate(METHODS):
            out = Path(tmp) / f"m{i}"
            subprocess.run([args.moebench, "apply", args.model, "--device", "cpu", "--method", method,
                            "--params", json.dumps(params), "--then", json.dumps(then),
                            "--out", str(out)], check=True, stdout=subprocess.DEVNULL)
            ours = json.loads(subprocess.run([args.moebench, "logits", str(out), "--device", "cpu",
                                              "--prompt", PROMPT, "--top", "10", "--json"],
                                             check=True, capture_output=True, text=True).stdout)
            tok = AutoTokenizer.from_pretrained(out)
            model = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
            ids = ours["input_ids"]
            assert tok(PROMPT, add_special_tokens=False)["input_ids"] == ids[-len(ids):], "tokenizer ids differ"
            with torch.no_grad():
                lp = model(torch.tensor([ids])).logits[0, -1].float().log_softmax(-1)
            top = torch.topk(lp, 10)
            ref_ids = top.indices.tolist()
            our_ids = [t["id"] for t in ours["top"]]
            diff = max(abs(t["logprob"] - lp[t["id"]].item()) for t in ours["top"])
            experts = json.loads((out / "config.json").read_text()).get("num_local_experts")
            ok = ref_ids == our_ids and diff <= 1e-4
            failures += not ok
            label = method + "".join(f"→{s['name']}" for s in then)
            print(json.dumps({"method": label, "params": params, "experts": experts,
                              "same_top10_ids": ref_ids == our_ids, "max_abs_logprob_diff": diff,
                              "ok": ok}), flush=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
