"""Reads `moebench eval` output with lm-eval 0.4.13's own readers (run by tests/lm_eval_outputs.rs).

Usage: python read_lm_eval_outputs.py OUTPUT_DIR TASK [TASK ...]

It finds the model folders and files the way lm-eval's tooling does (`lm_eval.utils`:
get_results_filenames, get_latest_filename, get_sample_results_filenames,
get_file_task_name, get_file_datetime, sanitize_model_name, as scripts/zeno_visualize.py
uses them), prints `lm_eval.utils.make_table` of the results (and of the groups), and reads
every sample line the way the Zeno and W&B loggers do. Any mismatch raises.
"""
import json
import sys
from pathlib import Path

from lm_eval.utils import (
    get_file_datetime,
    get_file_task_name,
    get_latest_filename,
    get_results_filenames,
    get_sample_results_filenames,
    make_table,
    sanitize_model_name,
)

SAMPLE_KEYS = {
    "doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter", "metrics",
    "doc_hash", "prompt_hash", "target_hash",
}


def files_in(folder: Path) -> list[str]:
    return [p.as_posix() for p in folder.iterdir() if p.is_file()]


def main() -> int:
    root, tasks = Path(sys.argv[1]), sys.argv[2:]
    model_dirs = [d for d in [root, *sorted(p for p in root.rglob("*") if p.is_dir())]
                  if get_results_filenames(files_in(d))]
    assert len(model_dirs) == 1, f"expected one model folder, found {model_dirs}"
    model_dir = model_dirs[0]
    latest = get_latest_filename(get_results_filenames(files_in(model_dir)))
    with open(latest, encoding="utf-8") as f:
        results = json.load(f)
    assert model_dir.name == sanitize_model_name(results["model_name"]), (model_dir, results["model_name"])
    assert results["model_name_sanitized"] == model_dir.name
    assert isinstance(results["date"], float) and results["config"]["model_args"]
    table = make_table(results)
    print(table)
    for task in tasks:
        alias = results["results"][task]["alias"]
        assert alias in table, f"{task} ({alias}) missing from the table"
        assert results["results"][task]["sample_len"] == results["n-samples"][task]["effective"]
    if "groups" in results:
        print(make_table(results, "groups"))
    date = get_file_datetime(Path(latest).name).removesuffix(".json")
    for task in tasks:
        found = [p for p in get_sample_results_filenames(files_in(model_dir))
                 if get_file_task_name(Path(p).name) == task]
        sample_file = get_latest_filename(found)
        assert get_file_datetime(Path(sample_file).name) == date, (sample_file, latest)
        config = results["configs"][task]
        with open(sample_file, encoding="utf-8") as f:
            samples = [json.loads(line) for line in f]
        assert samples, f"no samples for {task}"
        for s in samples:
            missing = SAMPLE_KEYS - set(s)
            assert not missing, f"{task} sample {s.get('doc_id')}: missing {missing}"
            assert isinstance(s["target"], str)
            assert s["arguments"]["gen_args_0"]["arg_0"] is not None
            for metric in s["metrics"]:
                assert metric in s, f"{task}: per-sample metric {metric} missing"
            if config["output_type"] == "multiple_choice":
                # Zeno: ", ".join(str(y[0]) for y in filtered_resps); W&B: argmax of float(y[0])
                assert all(float(y[0]) <= 0 for y in s["filtered_resps"])
                assert len(s["arguments"]) == len(s["filtered_resps"])
            elif config["output_type"] == "generate_until":
                assert isinstance(s["resps"][0][0], str)
        print(f"{task}: {len(samples)} sample lines read from {Path(sample_file).name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
