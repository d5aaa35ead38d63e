#!/usr/bin/env bash
# A Python environment for lm-eval task hooks (no torch): lm-eval 0.4.13 with the Python
# packages its task folders' utils.py import. moebench's embedded CPython runs hooks
# against it (MOEBENCH_PYTHON=DIR/bin/python).
#
#   scripts/lm_eval_venv.sh DIR          lm-eval and its core dependencies (CI's hook tests)
#   scripts/lm_eval_venv.sh DIR --full   plus the task extras, for `moebench tasks validate`
#                                        over lm-eval's whole task tree
#
# Idempotent: an existing DIR with the same package set is kept.
set -euo pipefail
dir=${1:?usage: $0 DIR [--full]}
full=${2:-}
python=${PYTHON:-python3}

# lm_eval's own pins for the task extras (pyproject optional-dependencies), without torch,
# vllm or API clients.
core=(lm-eval==0.4.13)
extras=(
  langdetect immutabledict "nltk>=3.9.1"          # ifeval, ruler
  "sympy>=1.12" "antlr4-python3-runtime==4.11" "math_verify[antlr4_11_0]"  # math
  jieba fuzzywuzzy rouge                          # longbench
  "nagisa>=0.2.7" pycountry                       # multilingual
  wonderwords                                     # ruler
  transformers sentencepiece                      # tokenizer-using utils (no torch)
  lark pddl==0.4.2                                # acpbench
)
packages=("${core[@]}")
if [[ $full == --full ]]; then
  packages+=("${extras[@]}")
fi
stamp="$dir/.moebench-$(printf '%s\n' "${packages[@]}" | sha256sum | cut -c1-12)"
if [[ -f $stamp ]]; then
  exit 0
fi
"$python" -m venv "$dir"
"$dir/bin/pip" install --quiet --disable-pip-version-check --no-cache-dir "${packages[@]}"
touch "$stamp"
