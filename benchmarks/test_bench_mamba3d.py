"""Mamba3d against the SegMamba-style PyTorch layer (CPU), and order_conv1d against its reference (CPU, GPU).

    OMP_NUM_THREADS=1 python -m pytest -q benchmarks/test_bench_mamba3d.py --benchmark-columns=median,iqr

(On a CPU shared with other jobs, more OpenMP threads than free cores make every
provider many times slower and the ratios meaningless: set OMP_NUM_THREADS to
the free cores. Each row records the thread count it ran with.)

Layer: B=1, dim=48 (Di=96), N=16, d_conv=4, orders ("zyx", "-zyx", "yxz"),
forward+backward, all providers with the same weights:
  segmamba_ref  SegMamba's flips / slice re-stacking / permutes, one chain per
                direction with mamba-ssm's PyTorch ``selective_scan_ref``
                (benchmarks/segmamba_baseline.py): what SegMamba runs on a CPU
  segmamba_ops  the same permuted-copy layer, but each direction's scan is
                ``anatokernels.selective_scan`` (cpu): isolates what the native
                layout and the fused conv/merge/gate add on top of a fast scan
  mamba3d       ``anatokernels.nn.Mamba3d`` (order_conv1d + selective_scan3d, auto = cpu)
on an 8×16×16 volume (2,048 tokens; segmamba_ref is a Python loop over tokens)
and on 32³ (32,768 tokens; segmamba_ops and mamba3d only). Each baseline row
records mamba3d's speedup over it and mamba3d's peak memory as a fraction of its
own, measured in the same run (issue targets: ≥ 3× faster than the SegMamba-style layer at
≤ 0.5× its peak memory). order_conv1d: K=3, D=96, W=4, fwd+bwd; CPU B=1 over 32³ tokens,
GPU (``gpu`` marker: reference, triton, cuda) B=2 over 64³; and on the GPU with all three orders
"zyx" (the only order the causal-conv1d package runs): causal_conv1d (when importable), triton, cuda.
"""

import pytest
import torch
from segmamba_baseline import SegMambaStyle

import anatokernels as ak
from anatokernels.nn import Mamba3d

from bench_utils import bench, median_s, peak_memory_mb, record

B, DIM, N_STATE = 1, 48, 16
ORDERS = ("zyx", "-zyx", "yxz")
# mamba3d first: segmamba_ref's many small per-step tensors leave the heap resident, after which the RSS
# peak of a later provider reads as 0. Each baseline row records mamba3d's speedup and memory ratio.
LAYER_CASES = [((8, 16, 16), "mamba3d"), ((8, 16, 16), "segmamba_ops"), ((8, 16, 16), "segmamba_ref"),
               ((32, 32, 32), "mamba3d"), ((32, 32, 32), "segmamba_ops")]
_layer_results: dict[tuple[tuple[int, int, int], str], tuple[float, float]] = {}
_conv_results: dict[tuple[str, str, tuple[str, ...]], float] = {}  # (device, backend, orders) -> median s
NATIVE_ORDERS = ("zyx",) * 3  # the only orders the causal-conv1d package can run


def _fast_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    return ak.selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, backend="cpu")


@pytest.mark.parametrize("spatial, provider", LAYER_CASES,
                         ids=[f"{'x'.join(map(str, s))}-{p}" for s, p in LAYER_CASES])
def test_mamba3d_layer_cpu(benchmark, spatial, provider):
    torch.manual_seed(0)
    layer = Mamba3d(DIM, d_state=N_STATE, orders=ORDERS)
    model = {"segmamba_ref": SegMambaStyle(layer), "segmamba_ops": SegMambaStyle(layer, scan=_fast_scan),
             "mamba3d": layer}[provider]
    x = torch.randn(B, DIM, *spatial, requires_grad=True)
    grad = torch.randn_like(x)

    def step():
        x.grad = None
        layer.zero_grad(set_to_none=True)
        model(x).backward(grad)

    slow = provider == "segmamba_ref"
    bench(benchmark, step, "cpu", rounds=2 if slow else 5, warmup=0 if slow else 1)
    peak = peak_memory_mb(step, "cpu")
    _layer_results[spatial, provider] = (median_s(benchmark), peak)
    ratios = {}
    if provider != "mamba3d" and (spatial, "mamba3d") in _layer_results:
        ours_time, ours_peak = _layer_results[spatial, "mamba3d"]
        ratios["mamba3d_speedup"] = round(median_s(benchmark) / ours_time, 2)
        if peak > 0:
            ratios["mamba3d_peak_mem_ratio"] = round(ours_peak / peak, 3)
    record(benchmark, peak_mb=peak, kernel="mamba3d_layer", mode="full", provider=provider,
           size=f"B{B}-dim{DIM}-N{N_STATE}-{'x'.join(map(str, spatial))}", threads=torch.get_num_threads(),
           **ratios)


def _order_conv1d(benchmark, device, backend, batch, spatial, rounds, orders=ORDERS, baseline="reference"):
    """order_conv1d forward + backward, K=3, D=96, W=4, float32; speedup against ``baseline`` when timed."""
    k, d, width = 3, 96, 4
    length = spatial[0] * spatial[1] * spatial[2]
    x = torch.randn(batch, k, d, length, device=device, requires_grad=True)
    weight = torch.randn(k, d, width, device=device, requires_grad=True)
    bias = torch.randn(k, d, device=device, requires_grad=True)
    grad = torch.randn(batch, k, d, length, device=device)

    def step():
        x.grad = weight.grad = bias.grad = None
        ak.order_conv1d(x, weight, bias, spatial_shape=spatial, orders=orders, backend=backend).backward(grad)

    bench(benchmark, step, device, rounds=rounds)
    _conv_results[device, backend, orders] = median_s(benchmark)
    ratios = {}
    if backend != baseline and (device, baseline, orders) in _conv_results:
        ratios[f"speedup_vs_{baseline}"] = round(_conv_results[device, baseline, orders] / median_s(benchmark), 2)
    # forward reads x, writes out; backward reads grad and x, writes dx
    record(benchmark, bytes_moved=5 * x.numel() * x.element_size(), peak_mb=peak_memory_mb(step, device),
           kernel="order_conv1d", mode="full", provider=backend,
           size=f"B{batch}-K{k}-D{d}-{'x'.join(map(str, spatial))}-W{width}-{'_'.join(orders)}",
           threads=torch.get_num_threads(),
           **ratios)


@pytest.mark.parametrize("backend", ["reference", "cpu"])
def test_order_conv1d_cpu(benchmark, backend):
    _order_conv1d(benchmark, "cpu", backend, 1, (32, 32, 32), rounds=5)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["reference", "triton", "cuda"])
def test_order_conv1d_gpu(benchmark, backend):
    _order_conv1d(benchmark, "cuda", backend, 2, (64, 64, 64), rounds=30)


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["causal_conv1d", "triton", "cuda"])
def test_order_conv1d_gpu_native_order(benchmark, backend):
    """All three orders "zyx": the causal-conv1d package (when importable) against our kernels."""
    if not ak.backends()["order_conv1d"][backend].runs_by_name:
        pytest.skip(f"{backend}: {ak.backends()['order_conv1d'][backend]}")
    _order_conv1d(benchmark, "cuda", backend, 2, (64, 64, 64), rounds=30, orders=NATIVE_ORDERS,
                  baseline="causal_conv1d")
