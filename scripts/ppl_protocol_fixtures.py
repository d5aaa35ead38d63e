#!/usr/bin/env python3
"""Reference values for moebench's token-level perplexity protocols (gptq_concat, strided),
computed with transformers on SmolLM2-135M-Instruct (float32, CPU) over the first 20 sonnets of
datasets/shakespeare/sonnets.jsonl joined with "\\n\\n" (what `moebench eval --tasks
shakespeare_sonnets --limit 20 --ppl-protocol …` scores). Writes
tests/fixtures/ppl_protocols/reference.json, read by tests/eval_engine.rs.

OPTIONAL tooling, never run by CI. Needs the reference venv of scripts/README.md and the f32
SmolLM2 directory that scripts/lm_eval_fixtures/make_lm_eval_fixtures.py converts:

    /path/to/venv-ref/bin/python scripts/ppl_protocol_fixtures.py \\
        --model /tmp/moebench_lm_eval/smollm2_135m_instruct_f32

gptq_concat follows GPTQ's llama_eval exactly (mean CE per window × seqlen, divided by
windows × seqlen). strided follows the Hugging Face perplexity guide's windows, with the NLL
summed over exactly the scored tokens (the guide's `num_valid_tokens - batch_size` weighting
counts one token too few in every window after the first).
"""
import argparse
import json
import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    rows = [json.loads(l) for l in open(REPO / "datasets/shakespeare/sonnets.jsonl")][:20]
    ids = tok("\n\n".join(r["text"] for r in rows), return_tensors="pt").input_ids
    n = ids.shape[1]
    out = {"tokens": n, "docs": len(rows)}
    with torch.no_grad():
        seqlen = 256
        nlls = []
        for i in range(n // seqlen):
            batch = ids[:, i * seqlen:(i + 1) * seqlen]
            logits = model(batch).logits
            loss = torch.nn.functional.cross_entropy(logits[0, :-1], batch[0, 1:])
            nlls.append(loss.float() * seqlen)
        out["gptq_concat:256"] = math.exp(torch.stack(nlls).sum().item() / (len(nlls) * seqlen))
        max_length, stride = 256, 128
        nll_sum, count, prev_end, begin = 0.0, 0, 0, 0
        while begin < n:
            end = min(begin + max_length, n)
            first = max(end - (end - prev_end), begin + 1)
            window = ids[:, begin:end]
            logp = model(window).logits[0, :-1].log_softmax(-1)
            targets = window[0, 1:]
            token_lp = logp.gather(1, targets[:, None])[:, 0]
            scored = token_lp[first - begin - 1:]
            nll_sum -= scored.sum().item()
            count += scored.numel()
            prev_end = end
            if end == n:
                break
            begin += stride
        out["strided:256:128"] = math.exp(nll_sum / count)
        out["strided_scored_tokens"] = count
    dest = REPO / "tests/fixtures/ppl_protocols/reference.json"
    dest.write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
