"""Test conventions for the whole suite.

- TRITON_INTERPRET=1 is set before anything defines a Triton kernel, unless the
  caller set it (``make gpu-check`` sets 0 to compile real GPU kernels).
- Every test starts from fixed seeds.
- Every buffer a kernel writes into starts as NaN (``anatokernels._memory``).
- Markers: ``gpu`` (needs CUDA), ``interpret`` (Triton interpreter on the CPU),
  ``slow``. Backend parametrisation and relative-error bounds live in
  ``kernels/kernel_testing.py``.
"""

import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import random  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from anatokernels import _memory  # noqa: E402


@pytest.fixture(autouse=True)
def _seeded():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _poisoned_outputs():
    with _memory.poison_outputs():
        yield


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test, restored afterwards.

    Small tensors spend most of their time in OpenMP hand-offs with more threads,
    which is slowest of all on a shared 2-core machine. Opt in per module with
    ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
