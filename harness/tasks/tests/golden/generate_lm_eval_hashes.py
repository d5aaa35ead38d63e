"""Regenerates `lm_eval_hashes.json`: what lm-evaluation-harness 0.4.13 itself builds and
scores for the `*_shared` tasks of `suites/tasks/shared/` (as hashes only: no dataset text is
stored) and for the standard `arc_easy`, `gsm8k` and `gsm8k_cot` tasks on the synthetic Hub-cache fixtures in
`../fixtures/hub`.

For each shared task the original files in `shared/datasets/` are converted to the Hugging Face
schema by the small, independent converters below (so the Rust loaders are checked too),
lm-eval's official task YAML is loaded (with its Python hooks), pointed at the converted rows
with the same split settings as the shared YAML, and its requests are built exactly as
`simple_evaluate` does (`set_config("num_fewshot", k)`, `set_fewshot_seed(1234)`,
`build_all_requests`). For some, synthetic model responses are scored by lm-eval's filters and
`process_results`; the responses and per-document metrics are stored too.

Run with lm-eval installed (`pip install lm-eval==0.4.13`), from anywhere:
    python generate_lm_eval_hashes.py /path/to/shared/datasets /path/to/lm_eval/tasks
"""

import bz2
import csv
import glob
import hashlib
import json
import os
import sys
import tempfile

from lm_eval.api.task import ConfigurableTask
from lm_eval.tasks._yaml_loader import load_yaml
from lm_eval.utils import handle_non_serializable

DATA, LM_EVAL_TASKS = sys.argv[1], sys.argv[2]
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "lm_eval_hashes.json")
SEED = 1234
DETAILED_DOCS = 5
SCORED_DOCS = 20
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "hub")
SNAPSHOT = "snapshots/0123456789abcdef0123456789abcdef01234567"


def sha(text):
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def ai2(path, question_key):
    return [
        {
            "id": row["id"],
            question_key: row["question"]["stem"],
            "choices": {
                "text": [c["text"] for c in row["question"]["choices"]],
                "label": [c["label"] for c in row["question"]["choices"]],
            },
            "answerKey": row["answerKey"],
        }
        for row in jsonl(path)
    ]


def labels(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def piqa():
    rows, ls = jsonl(f"{DATA}/piqa/valid.jsonl"), labels(f"{DATA}/piqa/valid-labels.lst")
    return [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": int(l)} for r, l in zip(rows, ls)]


def winogrande():
    rows, ls = jsonl(f"{DATA}/winogrande/dev.jsonl"), labels(f"{DATA}/winogrande/dev-labels.lst")
    return [{"sentence": r["sentence"], "option1": r["option1"], "option2": r["option2"], "answer": l} for r, l in zip(rows, ls)]


def boolq():
    return [
        {"question": r["question"], "passage": r["passage"], "idx": r["idx"], "label": int(str(r["label"]).lower() == "true")}
        for r in jsonl(f"{DATA}/boolq/val.jsonl")
    ]


def hellaswag():
    lines = bz2.open(f"{DATA}/hellaswag/hellaswag_val_full.txt.bz2", "rt", encoding="utf-8").read().split("\n")
    lines = lines[: len(lines) - len(lines) % 6]
    return [{"query": lines[i], "choices": lines[i + 2 : i + 6], "label": int(lines[i + 1])} for i in range(0, len(lines), 6)]


def mmlu(split, subject):
    with open(f"{DATA}/mmlu/{split}/{subject}_{split}.csv", encoding="utf-8", newline="") as f:
        return [
            {"question": r[0], "subject": subject, "choices": r[1:5], "answer": "ABCD".index(r[5].strip())}
            for r in csv.reader(f)
        ]


def wikitext():
    """`EleutherAI/wikitext_document_level` `_generate_examples` on the tokens file."""
    pages, ret = [], []
    for line in open(f"{DATA}/wikitext2/test.txt", encoding="utf-8").read().split("\n"):
        rline = line.replace("= = =", "===").replace("= =", "==").strip()
        if rline.startswith("= ") and rline.strip().endswith(" ="):
            page = "\n".join(ret)
            if page.strip():
                pages.append({"page": page})
            ret = []
        ret.append(line)
    pages.append({"page": "\n".join(ret)})
    return pages


GENERATIONS = [
    "3 + 4 = 7\n#### 7",
    "The answer is 1,000 beads.",
    "So it is -4.\n#### -4.",
    "#### $25",
    "I do not know",
]


def responses(task, doc_id, requests):
    """Deterministic synthetic model outputs for one document's requests."""
    if task.OUTPUT_TYPE == "generate_until":
        return [GENERATIONS[doc_id % len(GENERATIONS)]]
    if task.OUTPUT_TYPE == "loglikelihood_rolling":
        return [-(doc_id + 1) * 123.456]
    if task.OUTPUT_TYPE == "loglikelihood":
        return [(-(doc_id % 7) * 1.5, doc_id % 2 == 0)]
    return [(-((doc_id * 31 + i * 17) % 23) / 4.0 - 0.1 * i, (doc_id + i) % 3 == 0) for i in range(len(requests))]


def scores(task, by_doc):
    """`evaluate`'s scoring: responses, `apply_filters`, `process_results` per filter."""
    out = {}
    for doc_id, requests in by_doc.items():
        if doc_id < SCORED_DOCS:
            for request, response in zip(requests, responses(task, doc_id, requests)):
                request.resps.append(response)
    scored = [i for i in task._instances if i.doc_id < SCORED_DOCS]
    for f in task._filters:
        f.apply(scored)
    for filter_key in scored[0].filtered_resps:
        for doc_id in sorted(d for d in by_doc if d < SCORED_DOCS):
            requests = by_doc[doc_id]
            metrics = task.process_results(requests[0].doc, [r.filtered_resps[filter_key] for r in requests])
            entry = out.setdefault(str(doc_id), {"responses": [r.resps[0] for r in requests], "metrics": {}})
            for metric, value in metrics.items():
                entry["metrics"][f"{metric},{filter_key}"] = list(value) if isinstance(value, tuple) else float(value)
    return out


def build(name, yaml_path, splits, overrides, shots, tmp, score=False):
    """lm-eval's instances for `shots` few-shot examples: task hash, first documents, and
    optionally the scores of synthetic responses."""
    if "dataset_path" not in splits:
        data_files = {}
        for split, rows in splits.items():
            path = os.path.join(tmp, f"{name}-{split}.jsonl")
            with open(path, "w", encoding="utf-8") as f:
                for row in rows:
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
            data_files[split] = path
        source = {"dataset_path": "json", "dataset_name": None, "dataset_kwargs": {"data_files": data_files}}
    else:
        source = splits
    config = load_yaml(os.path.join(LM_EVAL_TASKS, yaml_path))
    config.update(source)
    config.update(overrides)
    task = ConfigurableTask(config=config)
    task.set_config(key="num_fewshot", value=shots)
    task.set_fewshot_seed(seed=SEED)
    task.build_all_requests()
    by_doc = {}
    for instance in task.instances:
        by_doc.setdefault(instance.doc_id, []).append(instance)
    hashes, docs = [], []
    for doc_id in sorted(by_doc):
        requests = sorted(by_doc[doc_id], key=lambda x: x.idx)
        doc = requests[0].doc
        target = task.doc_to_target(doc)
        sample = {
            "doc": sha(json.dumps(doc, indent=2, default=handle_non_serializable, ensure_ascii=False)),
            "prompt": sha(requests[0].arguments[0]),
            "target": sha(str(target)),
        }
        hashes.append(sample["doc"] + sample["prompt"] + sample["target"])
        if doc_id < DETAILED_DOCS:
            sample["arguments"] = [[sha(a) if isinstance(a, str) else a for a in r.arguments] for r in requests]
            docs.append(sample)
    filters = len(task._filters)
    result = {"task_hash": sha("".join(hashes * filters)), "docs": len(by_doc), "first_docs": docs}
    if score:
        result["scores"] = scores(task, {d: sorted(r, key=lambda x: x.idx) for d, r in by_doc.items()})
    return result


def fixture(repo, config, splits):
    """`dataset_path: parquet` over a synthetic Hub-cache fixture (the same rows the Hub
    loader reads through the dataset card)."""
    base = os.path.join(FIXTURES, "datasets--" + repo.replace("/", "--"), SNAPSHOT, config)
    files = {split: glob.glob(os.path.join(base, f"{split}-*.parquet")) for split in splits}
    return {"dataset_path": "parquet", "dataset_name": None, "dataset_kwargs": {"data_files": files}}


def main():
    tests = [
        ("arc_easy_shared", "arc/arc_easy.yaml", lambda: {"test": ai2(f"{DATA}/arc_easy/ARC-Easy-Test.jsonl", "question")},
         {"training_split": None, "validation_split": None, "fewshot_split": "test"}, [0, 5]),
        ("arc_easy", "arc/arc_easy.yaml", lambda: fixture("allenai/ai2_arc", "ARC-Easy", ["train", "test"]),
         {"validation_split": None}, [0, 3]),
        ("gsm8k", "gsm8k/gsm8k.yaml", lambda: fixture("openai/gsm8k", "main", ["train", "test"]), {}, [0, 5]),
        ("gsm8k_cot", "gsm8k/gsm8k-cot.yaml", lambda: fixture("openai/gsm8k", "main", ["train", "test"]), {}, [8]),
        ("arc_challenge_shared", "arc/arc_challenge.yaml", lambda: {"test": ai2(f"{DATA}/arc_challenge/ARC-Challenge-Test.jsonl", "question")},
         {"training_split": None, "validation_split": None, "fewshot_split": "test"}, [0, 5]),
        ("openbookqa_shared", "openbookqa/openbookqa.yaml", lambda: {"test": ai2(f"{DATA}/openbookqa/test.jsonl", "question_stem")},
         {"training_split": None, "validation_split": None, "fewshot_split": "test"}, [0, 5]),
        ("piqa_shared", "piqa/piqa.yaml", lambda: {"validation": piqa()}, {"training_split": None}, [0, 5]),
        ("winogrande_shared", "winogrande/default.yaml", lambda: {"validation": winogrande()}, {"training_split": None}, [0, 5]),
        ("boolq_shared", "super_glue/boolq/default.yaml", lambda: {"validation": boolq()}, {"training_split": None}, [0, 2]),
        ("lambada_openai_shared", "lambada/lambada_openai.yaml", lambda: {"test": jsonl(f"{DATA}/lambada/lambada_test.jsonl")},
         {"fewshot_split": "test"}, [0]),
        ("wikitext_shared", "wikitext/wikitext.yaml", lambda: {"test": wikitext()},
         {"training_split": None, "validation_split": None}, [0]),
        ("hellaswag_shared", None, lambda: {"validation": hellaswag()}, None, [0, 5]),
    ]
    for subject in ["abstract_algebra", "high_school_european_history", "world_religions"]:
        tests.append((f"mmlu_shared_{subject}", f"mmlu/default/mmlu_{subject}.yaml",
                      lambda s=subject: {"test": mmlu("test", s), "dev": mmlu("dev", s)}, {}, [0, 5]))
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        hellaswag_yaml = os.path.join(tmp, "hellaswag_shared.yaml")
        with open(hellaswag_yaml, "w") as f:
            f.write(
                'task: hellaswag_shared\noutput_type: multiple_choice\nvalidation_split: validation\n'
                'doc_to_text: "{{query}}"\ndoc_to_target: "{{label}}"\ndoc_to_choice: "choices"\n'
                "metric_list:\n  - metric: acc\n  - metric: acc_norm\n"
            )
        for name, yaml_path, splits, overrides, shot_counts in tests:
            rows = splits()
            for shots in shot_counts:
                key = f"{name}/{shots}"
                print(key, file=sys.stderr)
                score = shots == 0 or name.startswith("gsm8k")
                out[key] = build(name, yaml_path or hellaswag_yaml, rows, {"task": name, **(overrides or {})}, shots, tmp, score)
    with open(OUT, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
        f.write("\n")


main()
