"""The Python side of moebench's hook boundary (embedded by moebench-pyhooks).

Every entry point takes and returns JSON text: documents, responses and results cross as
JSON, non-finite floats as {"__float__": "nan" | "inf" | "-inf"}. Hooks are resolved as
lm-eval 0.4.13 resolves `!function module.fn` (lm_eval/tasks/_yaml_loader.py
`_import_func_in_yml`, `_load_module_with_cache`), and called as lm-eval calls them
(lm_eval/api/task.py `ConfigurableTask`, lm_eval/api/filter.py `FilterEnsemble`).
"""

import importlib.util
import json
import math
import os
import site
import sys
from functools import partial
from pathlib import Path

FLOAT_MARKER = "__float__"


def setup(config_json):
    """Makes the user's environment the one imports come from: the embedded interpreter's
    own site directories are dropped, the user's `sys.path` entries appended and their
    site directories added with `site.addsitedir` (so `.pth` files apply)."""
    config = json.loads(config_json)
    own_sites = set(site.getsitepackages())
    own_sites.add(site.getusersitepackages())
    sys.path[:] = [
        p
        for p in sys.path
        if p not in own_sites and not p.endswith(("site-packages", "dist-packages"))
    ]
    for entry in config["path"]:
        if entry and entry not in sys.path:
            sys.path.append(entry)
    for directory in config["site"]:
        if os.path.isdir(directory):
            site.addsitedir(directory)
    sys.executable = config["executable"]
    # Hooks that print must not mix with moebench's own output (e.g. JSON lines).
    sys.stdout = sys.stderr
    return json.dumps(list(sys.version_info[:2]))


# --------------------------------------------------------------------------- JSON boundary
def to_json(obj):
    """A hook's value as JSON-compatible data (numpy scalars and arrays, tuples and sets as
    lists, dict keys as strings)."""
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        if math.isfinite(obj):
            return obj
        return {FLOAT_MARKER: "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
    if isinstance(obj, dict):
        return {str(k): to_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        return [to_json(v) for v in obj]
    tolist = getattr(obj, "tolist", None)  # numpy arrays and scalars
    if callable(tolist):
        return to_json(tolist())
    item = getattr(obj, "item", None)
    if callable(item):
        return to_json(item())
    to_list = getattr(obj, "to_list", None)  # datasets.Dataset
    if callable(to_list):
        return to_json(to_list())
    raise TypeError(f"cannot pass a {type(obj).__name__} back to moebench: {obj!r:.200}")


def from_json(text):
    def floats(value):
        if isinstance(value, dict):
            if len(value) == 1 and FLOAT_MARKER in value:
                return float(value[FLOAT_MARKER])
            return {k: floats(v) for k, v in value.items()}
        if isinstance(value, list):
            return [floats(v) for v in value]
        return value

    return floats(json.loads(text))


def dumps(obj):
    return json.dumps(to_json(obj), ensure_ascii=False, allow_nan=False)


# --------------------------------------------------------------------------- resolution
def _module_name(module_path):
    """lm-eval's module naming: `lm_eval.tasks.<dir>.<module>` for files of the installed
    task tree, the path without `.py` elsewhere (`_load_module_with_cache`)."""
    path_str = str(module_path)
    if "/lm_eval/tasks/" in path_str:
        relative = path_str[path_str.find("/lm_eval/tasks/") + len("/lm_eval/tasks/") :]
        return "lm_eval.tasks." + relative.replace(".py", "").replace("/", ".")
    return str(module_path.with_suffix(""))


def _load_module(module_path):
    name = _module_name(module_path)
    existing = sys.modules.get(name)
    mtime = module_path.stat().st_mtime_ns
    if existing is not None and getattr(existing, "__mtime__", None) == mtime:
        return existing
    spec = importlib.util.spec_from_file_location(name, module_path)
    if spec is None or spec.loader is None:
        raise ImportError(f"Cannot load module from {module_path}")
    module = importlib.util.module_from_spec(spec)
    module.__mtime__ = mtime
    spec.loader.exec_module(module)
    sys.modules[name] = module
    return module


_resolved = {}


def _import_hook(qual, base_dir):
    """`_import_func_in_yml`: `module.py` next to the YAML that contains the tag, else an
    importable module."""
    key = (qual, base_dir)
    if key in _resolved:
        return _resolved[key]
    mod_path, _, fn_name = qual.rpartition(".")
    if not mod_path:
        raise ValueError(f"Invalid function reference '{qual}': no module path")
    rel = (Path(base_dir) / f"{mod_path.replace('.', '/')}.py").resolve()
    if rel.exists():
        module = _load_module(rel)
        if not hasattr(module, fn_name):
            raise AttributeError(f"Module '{rel}' has no function '{fn_name}'")
    else:
        module = __import__(mod_path, fromlist=[fn_name])
        if not hasattr(module, fn_name):
            raise AttributeError(f"Module '{mod_path}' has no function '{fn_name}'")
    value = getattr(module, fn_name)
    _resolved[key] = value
    return value


def _registered(registry, name):
    from lm_eval.api import registry as lm_registry

    if registry == "filter":
        import lm_eval.filters  # noqa: F401  (fills the filter registry)

        return lm_registry.get_filter(name)
    if registry in ("metric", "hf_evaluate_metric"):
        import lm_eval.api.metrics  # noqa: F401

        found = lm_registry.get_metric(name, registry == "hf_evaluate_metric")
        if found is None:
            raise ImportError(
                f"metric `{name}` is neither registered in lm-eval nor loadable with "
                "Hugging Face evaluate (evaluate.load)"
            )
        return found
    if registry == "aggregation":
        import lm_eval.api.metrics  # noqa: F401

        found = lm_registry.get_aggregation(name)
        if found is None:
            raise KeyError(f"no aggregation `{name}` in lm-eval's registry")
        return found
    raise ValueError(f"unknown registry {registry!r}")


def _target(target):
    if "hook" in target:
        qual, yaml_path = target["hook"]
        return _import_hook(qual, str(Path(yaml_path).parent))
    registry, name = target["registered"]
    return _registered(registry, name)


def resolve(target_json):
    """What a hook is: `task_class` (an lm-eval `Task` subclass), `class` or `function`."""
    obj = _target(json.loads(target_json))
    if isinstance(obj, type):
        try:
            from lm_eval.api.task import Task
        except ImportError:
            Task = None
        if Task is not None and issubclass(obj, Task):
            return json.dumps("task_class")
        return json.dumps("class")
    if callable(obj):
        return json.dumps("function")
    raise TypeError(f"{type(obj).__name__} is not callable")


# --------------------------------------------------------------------------- calls
def process_docs(target_json, docs_json):
    import datasets

    fn = _target(json.loads(target_json))
    out = fn(datasets.Dataset.from_list(from_json(docs_json)))
    rows = out.to_list() if isinstance(out, datasets.Dataset) else list(out)
    return dumps(rows)


def map_docs(target_json, docs_json):
    fn = _target(json.loads(target_json))
    return dumps([fn(doc) for doc in from_json(docs_json)])


def call(target_json, kwargs_json):
    fn = _target(json.loads(target_json))
    return dumps(fn(**from_json(kwargs_json)))


def custom_dataset(target_json, kwargs_json):
    fn = _target(json.loads(target_json))
    dataset = fn(**from_json(kwargs_json))
    return dumps({split: list(docs) for split, docs in dict(dataset).items()})


def _response(response):
    if "ll" in response:
        ll, greedy = response["ll"]
        return (ll, greedy)
    if "rolling" in response:
        return response["rolling"]
    return response["text"]


def process_results(target_json, calls_json):
    """`process_results(doc, results)` per document; `results` as lm-eval passes them: one
    filtered response per request, `(loglikelihood, is_greedy)` tuples for log-likelihood
    requests."""
    fn = _target(json.loads(target_json))
    out = []
    for doc, responses in from_json(calls_json):
        result = fn(doc, [_response(r) for r in responses])
        if not isinstance(result, dict):
            raise TypeError(f"process_results returned {type(result).__name__}, not a dict")
        out.append(result)
    return dumps(out)


def generation_metric(metric_json, calls_json):
    """One metric function on every `(gold, result)`, as the `generate_until` branch of
    `ConfigurableTask.process_results` calls it: keyword arguments `references=[gold]`,
    `predictions=[result]`, else (on `TypeError`) one `[gold, result]` argument; a dict
    result reports each of its keys; several golds score 1.0 if any gold scores."""
    metric = json.loads(metric_json)
    fn = _target(metric["function"])
    name, kwargs, multiple_target = metric["name"], metric["kwargs"], metric["multiple_target"]

    def one(gold, result):
        try:
            return fn(references=[gold], predictions=[result], **kwargs)
        except TypeError:
            return fn([gold, result])

    out = []
    for gold, result in from_json(calls_json):
        if multiple_target:
            golds = gold if isinstance(gold, list) else [gold]
            scores = []
            for option in golds:
                score = one(option, result)
                if isinstance(score, dict):
                    score = score[name]
                scores.append(score)
            score = 1.0 if any(scores) else 0.0
        else:
            score = one(gold, result)
        out.append(dict(score) if isinstance(score, dict) else {name: score})
    return dumps(out)


def aggregate(target_json, items_json):
    fn = _target(json.loads(target_json))
    return dumps(float(fn(from_json(items_json))))


def filter_responses(steps_json, responses_json, docs_json):
    """Filter steps over all documents at once (`FilterEnsemble.apply`): each step is
    `partial(filter, **kwargs)()`, then `.apply(resps, docs)`."""
    resps = from_json(responses_json)
    docs = from_json(docs_json)
    for step in json.loads(steps_json):
        kwargs = dict(step["kwargs"])
        if step.get("filter_fn") is not None:
            kwargs["filter_fn"] = _target(step["filter_fn"])
        resps = list(partial(_target(step["filter"]), **kwargs)().apply(resps, docs))
    return dumps(resps)
