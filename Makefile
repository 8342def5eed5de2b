# anatokernels / anatoseg — every set-up step lives here; a fresh clone needs only `make test` / `make demo`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.anato-installed
PYTEST_ARGS ?=

.PHONY: install build test demo bench lint gpu-check clean

# Create .venv if missing; put in the local CPU torch wheel when there is no torch and no NVIDIA GPU; then the
# project, editable, with its dev extra: the method (seg extra), triton for the interpreter tests (triton extra),
# pytest, pytest-benchmark, ruff and setuptools (tests/test_packaging.py builds the wheel with it).
$(STAMP): pyproject.toml setup.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@if ! $(PY) -c "import torch" >/dev/null 2>&1; then \
	  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then \
	    echo "NVIDIA GPU found: torch comes from the package index"; \
	  else \
	    echo "installing torch==2.13.0 (CPU)"; $(PY) -m pip install -q torch==2.13.0; \
	  fi; \
	fi
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

# JIT-compile the C++ (and CUDA, where torch has CUDA and nvcc exists) extension into the cache.
build: $(STAMP)
	$(PY) -m anatokernels.build

# The whole suite: CPU backends natively, Triton through the interpreter, nvcc compile checks of csrc/**/*.cu.
test: build
	ANATO_REQUIRE_EXT=1 TRITON_INTERPRET=1 $(PY) -m pytest -q tests $(PYTEST_ARGS)

# The whole method on synthetic phantoms into demo_out/ (replaced on every run).
demo: build
	rm -rf demo_out
	$(VENV)/bin/anato demo demo_out

# CPU benchmarks; writes benchmarks/results/<device>-<commit>.json.
bench: build
	$(PY) -m pytest -q benchmarks --benchmark-columns=median,iqr --benchmark-sort=name \
	  --benchmark-json=benchmarks/results/raw-benchmarks.json $(PYTEST_ARGS)
	$(PY) benchmarks/collect.py benchmarks/results/raw-benchmarks.json

lint: $(STAMP)
	$(VENV)/bin/ruff check anatokernels model tests benchmarks

# For a lent GPU machine: torch/triton are already installed and nothing can be downloaded.
# Installs the project without dependencies, builds the CUDA extension, runs the GPU tests and the
# benchmarks, and writes benchmarks/results/<gpu>-<commit>.json.
gpu-check:
	$(PYTHON) -m pip install -q --no-deps --no-build-isolation -e .
	ANATO_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-8.0;9.0}" $(PYTHON) -m anatokernels.build
	-TRITON_INTERPRET=0 $(PYTHON) -m pytest -q -m gpu tests --junitxml=benchmarks/results/gpu-tests.xml $(PYTEST_ARGS)
	-TRITON_INTERPRET=0 $(PYTHON) -m pytest -q benchmarks --benchmark-json=benchmarks/results/raw-benchmarks.json
	$(PYTHON) benchmarks/collect.py benchmarks/results/raw-benchmarks.json benchmarks/results/gpu-tests.xml

clean:
	rm -rf build dist *.egg-info .pytest_cache .benchmarks
