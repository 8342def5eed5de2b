"""Benchmark conventions: pytest-benchmark, ratios against baselines measured in the same run.

Each benchmark records in ``benchmark.extra_info`` what is needed to judge it:
``bytes`` the op must move, ``bandwidth_gbs`` (bytes / median time), and
``peak_mem_mb`` where memory matters. Nothing here asserts a timing.
"""

import os

import pytest
import torch

os.environ.setdefault("TRITON_INTERPRET", "0")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
