# One command runs everything CI runs: `make test`.
PYTHON ?= python3
VENV ?= .venv
VPY := $(VENV)/bin/python

.PHONY: test venv lint typecheck pytest demo bench clean

test: venv pytest lint typecheck

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet -e '.[dev]'
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
