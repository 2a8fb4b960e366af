# One command runs everything CI runs: `make test`.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python
# torch is pinned and installed first, so the `torch` extra's range is already met and pip
# fetches no multi-GB CUDA build: this release is a CPU-only wheel on these machines.
TORCH_SPEC ?= torch==2.13.0

.PHONY: test venv lint typecheck pytest demo bench clean

test: venv pytest lint typecheck

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet '$(TORCH_SPEC)'
	$(VPY) -m pip install --quiet -e '.[dev,torch]'
	touch $@

venv: $(VENV)/.installed

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
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
