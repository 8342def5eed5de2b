"""hyper_cross_attention: fused against unfused PyTorch, time and peak memory.

Sizes from the issue (stage 3): B=2, M=12 prompts, H=4 heads, E=C, per-sample
W_q and W_o, every sample with at least one kept key (SDPA gives NaN
otherwise). Providers:

- ``triton``: the fused kernels (GPU only);
- ``chunked``: our chunked PyTorch path (``backend="chunked"``; called ``reference`` in rows recorded
  before it got its own backend name);
- ``sdpa``: unfused PyTorch, einsum + ``F.scaled_dot_product_attention`` + einsum;
- ``naive``: the op's definition (einsum, softmax, einsum; what ``backend="reference"`` runs), CPU only.

GPU: L = 56·80·64 and 28·40·32, C in {64, 128, 256}, bf16 and fp32, forward
and forward+backward; and with the occupancy logit bias of issue 17 (a head-shared
(B, 1, L, M) bias times a learned per-head scale, both differentiated) at
L = 35,840 and 286,720, C = 64, bf16, where ``sdpa`` gets the same bias as a
float ``attn_mask`` (the scaled (B, H, L, M) product with −inf at ignored keys,
built inside the timed step, as a caller of SDPA would). Issue 17 target: fused
forward+backward ≥ 3× faster than that at L = 286,720. CPU: only L = 28·40·32 with C = 64 in fp32 forward+backward
(a size a few cores run in about a second per round), with 1 thread and with
torch's default thread count.

Each row records ``peak_mem_mb`` and, for providers measured after ``sdpa`` in
the same run, ``speedup_vs_sdpa`` (sdpa median / this median) and
``mem_vs_sdpa`` (this peak / sdpa peak). Issue target on GPU: fused
forward+backward ≥ 3× faster with ≤ 1/3 of the peak memory at L ≥ 10^5.

    make bench PYTEST_ARGS="-k hyper_attention"
"""

import pytest
import torch
import torch.nn.functional as F

import anatokernels as ak
from anatokernels.hyper_attention import reference

from bench_utils import bench, median_s, peak_memory_mb, record

B, M, H = 2, 12, 4
GPU_SPATIAL = [(56, 80, 64), (28, 40, 32)]
GPU_C = [64, 128, 256]
CPU_SPATIAL, CPU_C = (28, 40, 32), 64
_baseline: dict[tuple, tuple[float, float]] = {}


def _case(n, c, device, dtype, bias=False):
    """Leaves (x, k, v, w_q, w_o, b_q, b_o[, attn_bias (B, 1, L, M), attn_bias_scale (H,)]), the keep mask
    (B, M) and an output gradient."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s, scale=1.0: (torch.randn(*s, generator=g) * scale).to(device=device, dtype=dtype)
    leaves = [r(B, n, c), r(B, M, c), r(B, M, c), r(B, c, c, scale=c ** -0.5), r(B, c, c, scale=c ** -0.5),
              r(B, c), r(c)]
    if bias:  # log(occupancy + ε)-like values and a per-head scale
        leaves += [torch.rand(B, 1, n, M, generator=g).add_(1e-3).log_().to(device=device, dtype=dtype), r(H)]
    mask = torch.rand(B, M, generator=g) > 0.3
    mask[:, 0] = True
    return [t.requires_grad_() for t in leaves], mask.to(device), r(B, n, c)


def _sdpa(x, k, v, w_q, w_o, b_q, b_o, mask, bias=None, bias_scale=None):
    b, n, c = x.shape
    dh = c // H
    q = (torch.einsum("blc,bce->ble", x, w_q) + b_q[:, None]).view(b, n, H, dh).transpose(1, 2)
    kh, vh = (t.view(b, M, H, dh).transpose(1, 2) for t in (k, v))
    if bias is None:
        attn_mask = mask[:, None, None, :]
    else:
        attn_mask = (bias * bias_scale[None, :, None, None]).masked_fill(~mask[:, None, None, :], float("-inf"))
    o = F.scaled_dot_product_attention(q, kh, vh, attn_mask=attn_mask)
    return torch.einsum("ble,bec->blc", o.transpose(1, 2).reshape(b, n, c), w_o) + b_o


def _provider(name):
    if name == "sdpa":
        return _sdpa
    if name == "naive":
        return lambda x, k, v, w_q, w_o, b_q, b_o, mask: reference.hyper_cross_attention(
            x, k, v, w_q, w_o, b_q, b_o, ~mask, H, (x.shape[-1] // H) ** -0.5)
    return lambda x, k, v, w_q, w_o, b_q, b_o, mask, bias=None, bias_scale=None: ak.hyper_cross_attention(
        x, k, v, w_q, w_o, b_q=b_q, b_o=b_o, key_ignore_mask=~mask, num_heads=H, attn_bias=bias,
        attn_bias_scale=bias_scale, backend=name)


def _step(fn, leaves, mask, grad, mode):
    args = (*leaves[:7], mask, *leaves[7:])
    if mode == "fwd":
        def step():
            with torch.no_grad():
                fn(*args)
        return step

    def step():
        for t in leaves:
            t.grad = None
        fn(*args).backward(grad)
    return step


def _run(benchmark, provider, spatial, c, mode, device, dtype, rounds, warmup, threads=None, bias=False):
    n = spatial[0] * spatial[1] * spatial[2]
    leaves, mask, grad = _case(n, c, device, dtype, bias)
    step = _step(_provider(provider), leaves, mask, grad, mode)
    bench(benchmark, step, device, rounds=rounds, warmup=warmup)
    peak = peak_memory_mb(step, device)
    dtype_name = str(dtype).replace("torch.", "")
    key = (spatial, c, mode, device, dtype_name, threads, bias)
    extra = {} if threads is None else {"threads": threads}
    if provider == "sdpa":
        _baseline[key] = (median_s(benchmark), peak)
    elif key in _baseline:
        base_time, base_peak = _baseline[key]
        extra.update(speedup_vs_sdpa=round(base_time / median_s(benchmark), 3),
                     mem_vs_sdpa=round(peak / base_peak, 3) if base_peak > 0 else None)
    record(benchmark, peak_mb=peak, kernel="hyper_cross_attention" + ("+bias" if bias else ""),
           provider=provider, mode=mode, size=f"B{B}-L{n}({'x'.join(map(str, spatial))})-C{c}-M{M}-H{H}"
           + ("-bias(B,1,L,M)xscale(H)" if bias else ""), dtype=dtype_name, **extra)


@pytest.fixture(params=[1, 0], ids=["threads1", "threadsAll"])
def cpu_threads(request):
    """1 thread, or torch's default. The chunked path issues more (smaller) ops than the unfused one, so on
    a loaded machine OpenMP synchronisation per op can dominate its multi-threaded time."""
    previous = torch.get_num_threads()
    if request.param:
        torch.set_num_threads(request.param)
    yield torch.get_num_threads()
    torch.set_num_threads(previous)


@pytest.mark.parametrize("provider", ["sdpa", "naive", "chunked"])
def test_hyper_attention_cpu(benchmark, provider, cpu_threads):
    _run(benchmark, provider, CPU_SPATIAL, CPU_C, "full", "cpu", torch.float32, rounds=3, warmup=1,
         threads=cpu_threads)


@pytest.mark.gpu
@pytest.mark.parametrize("provider", ["sdpa", "triton", "chunked"])
@pytest.mark.parametrize("mode", ["full", "fwd"])
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32], ids=["bf16", "fp32"])
@pytest.mark.parametrize("c", GPU_C, ids=[f"C{c}" for c in GPU_C])
@pytest.mark.parametrize("spatial", GPU_SPATIAL, ids=["x".join(map(str, s)) for s in GPU_SPATIAL])
def test_hyper_attention_gpu(benchmark, spatial, c, dtype, mode, provider):
    _run(benchmark, provider, spatial, c, mode, "cuda", dtype, rounds=20, warmup=3)


BIAS_SPATIAL = [(28, 40, 32), (56, 80, 64)]  # L = 35,840 and 286,720


@pytest.mark.gpu
@pytest.mark.parametrize("provider", ["sdpa", "triton", "chunked"])
@pytest.mark.parametrize("mode", ["full", "fwd"])
@pytest.mark.parametrize("spatial", BIAS_SPATIAL, ids=["x".join(map(str, s)) for s in BIAS_SPATIAL])
def test_hyper_attention_bias_gpu(benchmark, spatial, mode, provider):
    """The occupancy-biased op (issue 17): fused vs SDPA with the same float mask, bf16, C = 64."""
    _run(benchmark, provider, spatial, 64, mode, "cuda", torch.bfloat16, rounds=20, warmup=3, bias=True)
