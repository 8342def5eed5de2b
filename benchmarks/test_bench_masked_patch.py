"""Masked patch gather + backward scatter against the PyTorch patchify/permute/gather path.

Size from the issue: B=2, C=2, 112×160×128 volume, patch 16, 75 % masked
(420 of 560 patches gathered). ``bytes`` is what the op must move: forward
reads and writes the gathered patches; backward reads their gradient and writes
the whole (zero-filled) dx volume. On GPU the device-to-device copy bandwidth
of the same volume is measured in the same run as the yardstick (target ≥ 80 %).

    make bench PYTEST_ARGS="-k masked_patch"
"""

import pytest
import torch

import anatokernels as ak

from bench_utils import bench, peak_memory_mb, record

B, C, SPATIAL, PATCH, RATIO = 2, 2, (112, 160, 128), 16, 0.75
GRID = tuple(s // PATCH for s in SPATIAL)


def _case(device, dtype):
    x = torch.randn(B, C, *SPATIAL, device=device, dtype=dtype, requires_grad=True)
    _, masked = ak.random_patch_mask(B, GRID, RATIO, generator=torch.Generator().manual_seed(0), device=device)
    grad = torch.randn(B, masked.shape[1], C * PATCH**3, device=device, dtype=dtype)
    return x, masked, grad


def _bytes(x, masked):
    patch_bytes = masked.numel() * C * PATCH**3 * x.element_size()
    return 2 * patch_bytes + patch_bytes + x.numel() * x.element_size()


def _gather_backward(x, masked, grad, backend):
    def step():
        x.grad = None
        ak.masked_patch_gather(x, masked, PATCH, backend=backend).backward(grad)
    return step


CPU_BACKENDS = ["reference", "cpu"]
GPU_BACKENDS = ["reference", "triton", "cuda"]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_masked_patch_cpu(benchmark, backend):
    x, masked, grad = _case("cpu", torch.float32)
    step = _gather_backward(x, masked, grad, backend)
    bench(benchmark, step, "cpu", rounds=5)
    record(benchmark, bytes_moved=_bytes(x, masked), peak_mb=peak_memory_mb(step, "cpu"),
           kernel="masked_patch_gather", mode="full", provider=backend, size="B2-C2-112x160x128-p16-r0.75")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("backend", GPU_BACKENDS)
def test_masked_patch_gpu(benchmark, backend, dtype):
    x, masked, grad = _case("cuda", dtype)
    step = _gather_backward(x, masked, grad, backend)
    bench(benchmark, step, "cuda", rounds=50, warmup=5)
    record(benchmark, bytes_moved=_bytes(x, masked), peak_mb=peak_memory_mb(step, "cuda"),
           kernel="masked_patch_gather", mode="full", provider=backend, size="B2-C2-112x160x128-p16-r0.75",
           dtype=str(dtype).replace("torch.", ""))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_device_copy_yardstick(benchmark, dtype):
    x = torch.randn(B, C, *SPATIAL, device="cuda", dtype=dtype)
    out = torch.empty_like(x)
    bench(benchmark, lambda: out.copy_(x), "cuda", rounds=50, warmup=5)
    record(benchmark, bytes_moved=2 * x.numel() * x.element_size(), kernel="device_copy", mode="fwd",
           provider="torch", size="B2-C2-112x160x128", dtype=str(dtype).replace("torch.", ""))
