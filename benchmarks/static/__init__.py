"""Static (compile-time) performance figures and contracts of every GPU kernel, on a CPU-only machine.

    python -m benchmarks.static            # or: python benchmarks/static/run.py

compiles each Triton and CUDA kernel at its benchmark configuration for sm_80/86/89/90, reads registers,
spills, fences, 64-bit division calls, barriers and instructions per element from the SASS, and writes
``benchmarks/results/static-<commit>.{json,md}`` with a modelled time at the benchmark shapes (H100).
The contracts are checked by ``tests/kernels/test_compile_contracts.py``.

Modules: ``compile`` (toolchains), ``sass`` (parsing, figures), ``contracts`` (specs, budgets, known
violations), ``collect`` (all kernels × archs), ``model`` (time estimate), ``report`` (JSON/markdown).
"""
