"""selective_scan3d: the cpu backend against PyTorch scans (CPU), and the GPU kernels against the SegMamba path.

    python -m pytest -q benchmarks/test_bench_selective_scan.py --benchmark-columns=median,iqr

CPU, from the issue: B=1, K=3 orders ("zyx", "-zyx", "yxz"), D=96, N=16 over
32³ tokens, float32, with D, z and delta_bias, delta_softplus; fwd and
fwd+bwd (``full``), peak memory in extra_info. Providers:
  cpu         ``anatokernels.selective_scan3d(backend="cpu")`` (C++/OpenMP)
  chunked     a chunked PyTorch scan (below): orders gathered into permuted
              copies, all K orders scanned together; per chunk of 256 steps the
              decays and inputs are computed at once and the recurrence is one
              fused addcmul per step; each chunk is checkpointed for the backward
  reference   the sequential reference (``backend="reference"``). It keeps
              every step's state for autograd and costs ~1 min per fwd+bwd at
              32³, so it runs at 16³ (4,096 tokens), next to the cpu backend at
              16³ for a same-size ratio; its time grows linearly in L, and
              extra_info gives the 32³ estimate (×8).
Every row after the first of its size records ``speedup_vs_<provider>`` and
``peak_mem_ratio_vs_<provider>`` against the rows measured before it.

GPU (``gpu`` marker; sizes from the issue, B=2, K=3, N=16, fp32 and bf16):
  triton, cuda   selective_scan3d in native layout
  segmamba_ops   the SegMamba path built from our own single-order kernel:
                 three ``selective_scan(backend="triton")`` calls on flipped /
                 permuted contiguous copies, un-permuted and summed
  mamba_ssm      the same path with mamba-ssm's ``selective_scan_fn`` (if importable)
``bytes`` is what the op must move (inputs read once, outputs written once).
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

import anatokernels as ak
from anatokernels.scan_order import scan_order

from bench_utils import bench, median_s, peak_memory_mb, record

ORDERS = ("zyx", "-zyx", "yxz")
_results: dict[tuple[str, str, str], tuple[float, float]] = {}  # (size, mode, provider) -> (median s, peak MiB)


def _inputs(batch, k, d, n, spatial, device, dtype, requires_grad):
    """u, delta (B, K, D, L); A (K, D, N); B, C (B, K, N, L); D (K, D); z (B, D, L); delta_bias (K, D)."""
    torch.manual_seed(0)
    length = spatial[0] * spatial[1] * spatial[2]
    tensors = (torch.randn(batch, k, d, length), torch.randn(batch, k, d, length) * 0.5 - 2.0,
               -torch.arange(1, n + 1, dtype=torch.float32).repeat(k, d, 1), torch.randn(batch, k, n, length),
               torch.randn(batch, k, n, length), torch.randn(k, d), torch.randn(batch, d, length),
               torch.randn(k, d) * 0.1)
    params = {2, 5, 7}  # A, D, delta_bias stay float32 parameters
    return tuple(t.to(device, torch.float32 if i in params else dtype).requires_grad_(requires_grad)
                 for i, t in enumerate(tensors))


def _chunk_scan(dt, u, B, C, A, h):
    """One chunk in scan order: dt, u (B, K, D, T); B, C (B, K, N, T); A (K, D, N); h (B, K, D, N) carried in.

    Everything but the recurrence is computed for the whole chunk at once; the recurrence is one fused
    ``addcmul`` per step over all (b, k, d, n).
    """
    a = torch.exp(dt[..., None] * A[None, :, :, None, :])  # (B, K, D, T, N)
    bu = (dt * u)[..., None] * B.transpose(-1, -2)[:, :, None]
    states = []
    for a_t, bu_t in zip(a.unbind(-2), bu.unbind(-2)):
        h = torch.addcmul(bu_t, a_t, h)
        states.append(h)
    return (torch.stack(states, dim=-2) * C.transpose(-1, -2)[:, :, None]).sum(-1), h


def chunked_scan3d(u, delta, A, B, C, D, z, delta_bias, spatial, orders, chunk=256):
    """A chunked PyTorch selective_scan3d (delta_softplus=True): same inputs and result, permuted copies."""
    pis = [scan_order(spatial, order).to(u.device) for order in orders]

    def gather(t):  # (B, K, ·, L) native -> scan order of each k
        return torch.stack([t[:, k][..., pi] for k, pi in enumerate(pis)], dim=1)

    dt = F.softplus(gather(delta).float() + delta_bias[None, :, :, None])
    us, bs, cs = gather(u).float(), gather(B).float(), gather(C).float()
    h = us.new_zeros(u.shape[0], u.shape[1], u.shape[2], A.shape[-1])
    ys = []
    for start in range(0, u.shape[-1], chunk):
        part = slice(start, start + chunk)
        y, h = checkpoint(_chunk_scan, dt[..., part], us[..., part], bs[..., part], cs[..., part], A, h,
                          use_reentrant=False)
        ys.append(y)
    y = torch.cat(ys, dim=-1) + D[None, :, :, None] * us
    out = sum(torch.zeros_like(y[:, k]).index_copy(-1, pi, y[:, k]) for k, pi in enumerate(pis))
    return (out * F.silu(z.float())).to(u.dtype)


def _run(provider, inputs, spatial):
    if provider == "chunked":
        return chunked_scan3d(*inputs, spatial, ORDERS)
    return ak.selective_scan3d(*inputs, True, spatial_shape=spatial, orders=ORDERS, backend=provider)


def _step(provider, inputs, spatial, mode, grad):
    def forward():
        with torch.no_grad():
            _run(provider, inputs, spatial)

    def full():
        for t in inputs:
            t.grad = None
        _run(provider, inputs, spatial).backward(grad)

    return forward if mode == "fwd" else full


def _ratios(size, mode, provider, seconds, peak):
    out = {}
    for (s, m, base), (base_s, base_peak) in _results.items():
        if s == size and m == mode and base != provider:
            out[f"speedup_vs_{base}"] = round(base_s / seconds, 2)
            out[f"peak_mem_ratio_vs_{base}"] = round(peak / base_peak, 3) if base_peak > 0 else None
    return out


_PEAK_SCRIPT = """
import sys
sys.path.insert(0, {folder!r})
import torch
from bench_utils import peak_memory_mb
from test_bench_selective_scan import _inputs, _step
torch.manual_seed(0)
for spatial, measure in (((2, 2, 2), False), ({spatial!r}, True)):  # the first call loads the libraries
    inputs = _inputs(1, 3, 96, 16, spatial, "cpu", torch.float32, {full!r})
    grad = torch.randn(1, 96, spatial[0] * spatial[1] * spatial[2])
    peak = peak_memory_mb(_step({provider!r}, inputs, spatial, {mode!r}, grad), "cpu")
print(peak)
"""


def _fresh_process_peak_mb(provider, spatial, mode):
    """Peak RSS growth of one step, in a fresh process: in this one, the heap kept from earlier rounds hides it."""
    code = _PEAK_SCRIPT.format(folder=str(Path(__file__).resolve().parent), spatial=spatial, full=mode == "full",
                               provider=provider, mode=mode)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=1800)
    return float(result.stdout.split()[-1])


CPU_CASES = [  # (provider, spatial): reference only at 16³ (see the module docstring)
    ("reference", (16, 16, 16)), ("cpu", (16, 16, 16)), ("chunked", (32, 32, 32)), ("cpu", (32, 32, 32))]


@pytest.mark.parametrize("mode", ["fwd", "full"])
@pytest.mark.parametrize("provider, spatial", CPU_CASES, ids=[f"{p}-{s[0]}cubed" for p, s in CPU_CASES])
def test_selective_scan3d_cpu(benchmark, provider, spatial, mode):
    batch, k, d, n = 1, 3, 96, 16
    size = f"B{batch}-K{k}-D{d}-N{n}-{'x'.join(map(str, spatial))}"
    inputs = _inputs(batch, k, d, n, spatial, "cpu", torch.float32, mode == "full")
    grad = torch.randn(batch, d, spatial[0] * spatial[1] * spatial[2])
    step = _step(provider, inputs, spatial, mode, grad)
    slow = provider != "cpu"
    bench(benchmark, step, "cpu", rounds=2 if slow else 5, warmup=0 if slow else 1)
    peak = _fresh_process_peak_mb(provider, spatial, mode)
    seconds = median_s(benchmark)
    extra = _ratios(size, mode, provider, seconds, peak)
    _results[(size, mode, provider)] = (seconds, peak)
    if provider == "reference":
        extra["estimated_32cubed_s"] = round(seconds * 8, 2)  # sequential: linear in L
    record(benchmark, peak_mb=peak, kernel="selective_scan3d", mode=mode, provider=provider, size=size,
           threads=torch.get_num_threads(), **extra)


# ---------------------------------------------------------------------------------------------- GPU


def _to_order(t, k, spatial):
    """(…, L) native -> (…, L) in order ORDERS[k], as a contiguous copy (what SegMamba does)."""
    if k == 0:
        return t.contiguous()
    if k == 1:
        return t.flip(-1)
    return t.unflatten(-1, spatial).permute(*range(t.dim() - 1), -2, -1, -3).flatten(-3).contiguous()


def _from_order(t, k, spatial):
    if k == 0:
        return t
    if k == 1:
        return t.flip(-1)
    z, y, x = spatial
    return t.unflatten(-1, (y, x, z)).permute(*range(t.dim() - 1), -1, -3, -2).flatten(-3)


def _mamba_ssm_scan():
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn
    except ImportError:
        return None
    return selective_scan_fn


def segmamba_path(scan1d, u, delta, A, B, C, D, z, delta_bias, spatial):
    """Three single-order scans on permuted copies, permuted back and summed (gate applied per direction)."""
    out = None
    for k in range(u.shape[1]):
        y = scan1d(_to_order(u[:, k], k, spatial), _to_order(delta[:, k], k, spatial), A[k],
                   _to_order(B[:, k], k, spatial), _to_order(C[:, k], k, spatial), D[k], _to_order(z, k, spatial),
                   delta_bias[k], True)
        y = _from_order(y, k, spatial)
        out = y if out is None else out + y
    return out


def _gpu_provider(provider):
    if provider in ("triton", "cuda"):
        return lambda inputs, spatial: ak.selective_scan3d(*inputs, True, spatial_shape=spatial, orders=ORDERS,
                                                           backend=provider)
    if provider == "segmamba_ops":
        def ours(*args):
            return ak.selective_scan(*args, backend="triton")
        return lambda inputs, spatial: segmamba_path(ours, *inputs, spatial)
    scan = _mamba_ssm_scan()
    if scan is None:
        pytest.skip("mamba-ssm is not importable")
    return lambda inputs, spatial: segmamba_path(scan, *inputs, spatial)


def _bytes(inputs, mode):
    u, delta, A, B, C, D, z, bias = inputs
    act = u.element_size()
    fwd = act * (u.numel() + delta.numel() + B.numel() + C.numel() + 2 * z.numel())  # out has z's size
    if mode == "fwd":
        return fwd
    # backward: read the inputs and dout again, write du, ddelta, dB, dC, dz
    return fwd + act * (2 * (u.numel() + delta.numel() + B.numel() + C.numel()) + 3 * z.numel())


GPU_SIZES = [((64, 64, 64), 96), ((32, 32, 32), 192), ((16, 16, 16), 384), ((8, 8, 8), 768)]


@pytest.mark.gpu
@pytest.mark.parametrize("mode", ["fwd", "full"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("spatial, d", GPU_SIZES, ids=[f"{s[0]}cubed-D{d}" for s, d in GPU_SIZES])
@pytest.mark.parametrize("provider", ["mamba_ssm", "segmamba_ops", "triton", "cuda"])
def test_selective_scan3d_gpu(benchmark, provider, spatial, d, dtype, mode):
    batch, k, n = 2, 3, 16
    size = f"B{batch}-K{k}-D{d}-N{n}-{'x'.join(map(str, spatial))}-{str(dtype).replace('torch.', '')}"
    run = _gpu_provider(provider)
    inputs = _inputs(batch, k, d, n, spatial, "cuda", dtype, mode == "full")
    grad = torch.randn(batch, d, spatial[0] * spatial[1] * spatial[2], device="cuda", dtype=dtype)

    def step():
        if mode == "fwd":
            with torch.no_grad():
                run(inputs, spatial)
            return
        for t in inputs:
            t.grad = None
        run(inputs, spatial).backward(grad)

    bench(benchmark, step, "cuda", rounds=20, warmup=3)
    peak = peak_memory_mb(step, "cuda")
    seconds = median_s(benchmark)
    extra = _ratios(size, mode, provider, seconds, peak)
    _results[(size, mode, provider)] = (seconds, peak)
    record(benchmark, bytes_moved=_bytes(inputs, mode), peak_mb=peak, kernel="selective_scan3d", mode=mode,
           provider=provider, size=size, dtype=str(dtype).replace("torch.", ""), **extra)
