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
# One GPU run in under 8 minutes (H100/H200), every step under its own `timeout` (SIGINT first, so pytest
# still writes its reports; `-` so a failed or cut-off step never stops the next): build, the `-m gpu` kernel
# tests, golden comparisons (benchmarks/golden/*.pt, computed ahead on a CPU: `python benchmarks/golden.py
# write`), benchmarks at 64^3 and mamba's shape, then collect.py writes benchmarks/results/<gpu>-<commit>.json
# from whatever finished. Budget: 110 + 120 + 60 + 160 + 20 s = 7.8 min.
GPU_STEP = timeout -s INT -k 10
GPU_BENCH = benchmarks/test_bench_selective_scan.py benchmarks/test_bench_mamba3d.py benchmarks/test_bench_masked_patch.py
gpu-check:
	mkdir -p benchmarks/results && rm -f benchmarks/results/raw-benchmarks.json benchmarks/results/golden-check.json
	-$(GPU_STEP) 110 sh -c '$(PYTHON) -m pip install -q --no-deps --no-build-isolation -e . && \
	  ANATO_BUILD_CUDA=1 TORCH_CUDA_ARCH_LIST="$${TORCH_CUDA_ARCH_LIST:-9.0}" $(PYTHON) -m anatokernels.build'
	-TRITON_INTERPRET=0 $(GPU_STEP) 120 $(PYTHON) -m pytest -q -m gpu tests/kernels \
	  --junitxml=benchmarks/results/gpu-tests.xml $(PYTEST_ARGS)
	-TRITON_INTERPRET=0 $(GPU_STEP) 60 $(PYTHON) benchmarks/golden.py check benchmarks/results/golden-check.json \
	  --backends cuda,triton,triton_segment
	-TRITON_INTERPRET=0 $(GPU_STEP) 160 $(PYTHON) -m pytest -q -m gpu $(GPU_BENCH) \
	  --benchmark-json=benchmarks/results/raw-benchmarks.json
	timeout 20 $(PYTHON) benchmarks/collect.py benchmarks/results/raw-benchmarks.json \
	  benchmarks/results/gpu-tests.xml benchmarks/results/golden-check.json

clean:
	rm -rf build dist *.egg-info .pytest_cache .benchmarks
