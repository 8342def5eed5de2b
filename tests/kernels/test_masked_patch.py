"""masked_patch_gather / masked_patch_scatter: every backend against the reference."""

import pytest
import torch

import anatokernels as ak
from anatokernels.masked_patch import reference

from kernel_testing import assert_rel_close, backend_cases

# (B, C, (D, H, W), patch, M): odd sizes, non-cubic patches, a single patch, and a 1-voxel-wide patch.
SHAPES = [
    (2, 3, (12, 20, 28), (4, 5, 7), 7),
    (1, 1, (8, 8, 8), (8, 8, 8), 1),
    (3, 2, (6, 9, 5), (3, 3, 1), 11),
    (2, 5, (4, 6, 10), 2, 30),
]
SHAPE_IDS = [f"B{b}-C{c}-{'x'.join(map(str, s))}-p{p if isinstance(p, int) else 'x'.join(map(str, p))}-M{m}"
             for b, c, s, p, m in SHAPES]
CASES = backend_cases("masked_patch_gather")


def _patch(p):
    return (p, p, p) if isinstance(p, int) else p


def _grid_size(spatial, patch):
    return (spatial[0] // patch[0]) * (spatial[1] // patch[1]) * (spatial[2] // patch[2])


def _unique_index(b, g, m, device):
    return torch.stack([torch.randperm(g)[:m] for _ in range(b)]).to(device)


def _dtypes(device):
    # bf16 runs on the reference and on the GPU; the interpreter is tested in fp32 and fp16.
    return [torch.float32, torch.float16] + ([torch.bfloat16] if device == "cuda" else [])


@pytest.mark.parametrize("device, backend", CASES)
@pytest.mark.parametrize("b, c, spatial, p, m", SHAPES, ids=SHAPE_IDS)
def test_gather_matches_patchify_and_backward(device, backend, b, c, spatial, p, m):
    patch = _patch(p)
    g = _grid_size(spatial, patch)
    for dtype in _dtypes(device):
        x = torch.randn(b, c, *spatial, device=device).to(dtype).requires_grad_()
        # duplicates on purpose: their gradients must accumulate
        index = torch.randint(0, g, (b, m), device=device)
        index[:, -1] = index[:, 0]
        out = ak.masked_patch_gather(x, index, p, backend=backend)
        ref_x = x.detach().double().requires_grad_()
        ref = reference.patchify(ref_x, patch)[torch.arange(b, device=device)[:, None], index]
        assert_rel_close(out, ref, dtype, "gather")
        grad = torch.randn_like(ref)
        out.backward(grad.to(dtype))
        ref.backward(grad)
        assert_rel_close(x.grad, ref_x.grad, dtype, "d_x")


@pytest.mark.parametrize("device, backend", CASES)
@pytest.mark.parametrize("b, c, spatial, p, m", SHAPES, ids=SHAPE_IDS)
def test_scatter_with_learnable_fill(device, backend, b, c, spatial, p, m):
    patch = _patch(p)
    g = _grid_size(spatial, patch)
    m = min(m, g)
    for dtype in _dtypes(device):
        plen = c * patch[0] * patch[1] * patch[2]
        patches = torch.randn(b, m, plen, device=device).to(dtype).requires_grad_()
        fill = torch.randn(c, device=device).to(dtype).requires_grad_()
        index = _unique_index(b, g, m, device)
        out = ak.masked_patch_scatter(patches, index, p, spatial, fill=fill, backend=backend)
        ref_p = patches.detach().double().requires_grad_()
        ref_f = fill.detach().double().requires_grad_()
        ref = reference.masked_patch_scatter(ref_p, index, patch, spatial, ref_f)
        assert_rel_close(out, ref, dtype, "scatter")
        grad = torch.randn_like(ref)
        out.backward(grad.to(dtype))
        ref.backward(grad)
        assert_rel_close(patches.grad, ref_p.grad, dtype, "d_patches")
        assert_rel_close(fill.grad, ref_f.grad, dtype, "d_fill", factor=4.0)


@pytest.mark.parametrize("device, backend", CASES)
def test_scatter_float_fill_and_roundtrip(device, backend):
    x = torch.randn(2, 3, 12, 20, 28, device=device)
    visible, masked = ak.random_patch_mask(2, (3, 4, 4), 0.75, generator=torch.Generator().manual_seed(1),
                                           device=device)
    kept = ak.masked_patch_gather(x, visible, (4, 5, 7), backend=backend)
    rebuilt = ak.masked_patch_scatter(kept, visible, (4, 5, 7), (12, 20, 28), fill=-7.5, backend=backend)
    shown = ak.unpatchify(ak.patchify(rebuilt, (4, 5, 7)), (4, 5, 7), (12, 20, 28))
    assert torch.equal(shown, rebuilt)
    hidden = ak.masked_patch_gather(rebuilt, masked, (4, 5, 7), backend=backend)
    assert torch.all(hidden == -7.5)
    assert torch.equal(ak.masked_patch_gather(rebuilt, visible, (4, 5, 7), backend=backend), kept)


@pytest.mark.parametrize("device, backend", CASES)
def test_gather_reads_strided_input(device, backend):
    base = torch.randn(2, 10, 9, 6, 3, device=device)  # (B, W, D, H, C) storage
    x = base.permute(0, 4, 2, 3, 1)  # (B, C=3, D=9, H=6, W=10), non-contiguous
    index = torch.tensor([[0, 5, 2], [1, 1, 4]], device=device)
    out = ak.masked_patch_gather(x, index, (3, 3, 5), backend=backend)
    assert torch.equal(out, reference.masked_patch_gather(x.contiguous(), index, (3, 3, 5)))


@pytest.mark.parametrize("device, backend", CASES)
def test_empty_index(device, backend):
    x = torch.randn(2, 2, 4, 4, 4, device=device, requires_grad=True)
    index = torch.empty(2, 0, dtype=torch.int64, device=device)
    out = ak.masked_patch_gather(x, index, 2, backend=backend)
    assert out.shape == (2, 0, 16)
    out.sum().backward()
    assert torch.count_nonzero(x.grad) == 0


def test_reference_gradcheck_float64():
    x = torch.randn(1, 2, 4, 2, 6, dtype=torch.float64, requires_grad=True)
    index = torch.tensor([[3, 0, 3]])
    assert torch.autograd.gradcheck(lambda t: reference.masked_patch_gather(t, index, (2, 1, 3)), (x,))
    patches = torch.randn(1, 2, 12, dtype=torch.float64, requires_grad=True)
    fill = torch.randn(2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda p, f: reference.masked_patch_scatter(p, torch.tensor([[5, 1]]), (2, 1, 3), (4, 2, 6), f),
        (patches, fill))


def test_patchify_layout_is_documented_raster():
    x = torch.arange(1 * 2 * 4 * 4 * 6, dtype=torch.float32).view(1, 2, 4, 4, 6)
    p = ak.patchify(x, (2, 2, 3))
    gd, gh, gw = 1, 0, 1  # id = (gd*GH + gh)*GW + gw with GH=2, GW=2
    patch = p[0, (gd * 2 + gh) * 2 + gw].view(2, 2, 2, 3)
    assert torch.equal(patch, x[0, :, 2:4, 0:2, 3:6])
    assert torch.equal(ak.unpatchify(p, (2, 2, 3), (4, 4, 6)), x)


def test_bf16_reference():
    x = torch.randn(2, 3, 4, 6, 8, dtype=torch.bfloat16)
    index = torch.tensor([[0, 3], [5, 5]])
    out = ak.masked_patch_gather(x, index, 2, backend="reference")
    assert out.dtype == torch.bfloat16
    assert torch.equal(out.float(), reference.masked_patch_gather(x.float(), index, (2, 2, 2)))


def test_random_patch_mask_partitions_and_reproduces():
    vis, mask = ak.random_patch_mask(3, (2, 3, 4), 0.75, generator=torch.Generator().manual_seed(7))
    assert vis.shape == (3, 6) and mask.shape == (3, 18)
    assert vis.dtype == mask.dtype == torch.int64
    for b in range(3):
        assert torch.equal(torch.cat([vis[b], mask[b]]).sort().values, torch.arange(24))
        assert torch.all(vis[b].diff() > 0) and torch.all(mask[b].diff() > 0)
    again = ak.random_patch_mask(3, 24, 0.75, generator=torch.Generator().manual_seed(7))
    assert torch.equal(again[0], vis) and torch.equal(again[1], mask)
    other = ak.random_patch_mask(3, 24, 0.75, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(other[1], mask)


@pytest.mark.parametrize("call, error, message", [
    (lambda x, i: ak.masked_patch_gather(x, i, (4, 4, 4)), ValueError, "cannot divide H=6 by 4"),
    (lambda x, i: ak.masked_patch_gather(x, i + 100, 2), ValueError, "patch ids must lie in"),
    (lambda x, i: ak.masked_patch_gather(x, -i - 1, 2), ValueError, "patch ids must lie in"),
    (lambda x, i: ak.masked_patch_gather(x, i.int(), 2), TypeError, "index must have dtype"),
    (lambda x, i: ak.masked_patch_gather(x[0], i, 2), ValueError, "x must be 5-D"),
    (lambda x, i: ak.masked_patch_gather(x.long(), i, 2), TypeError, "x must have dtype"),
    (lambda x, i: ak.masked_patch_gather(x, i[:1], 2), ValueError, "index has batch 1"),
    (lambda x, i: ak.masked_patch_gather(x, i, 0), ValueError, "positive"),
    (lambda x, i: ak.masked_patch_gather(x, i, 2, backend="fast"), ValueError, "unknown backend"),
    (lambda x, i: ak.masked_patch_gather(x, i, 2, backend="cuda"), RuntimeError, "needs CUDA tensors"),
    (lambda x, i: ak.masked_patch_scatter(torch.randn(2, 2, 16), torch.tensor([[1, 1], [0, 2]]), 2, (4, 6, 8)),
     ValueError, "duplicate patch id"),
    (lambda x, i: ak.masked_patch_scatter(torch.randn(2, 2, 15), i[:, :2], 2, (4, 6, 8)),
     ValueError, "not a multiple of pd·ph·pw=8"),
    (lambda x, i: ak.masked_patch_scatter(torch.randn(2, 2, 16), i[:, :2], 2, (4, 6, 8), fill=torch.zeros(3)),
     ValueError, "shape (2,)"),
    (lambda x, i: ak.masked_patch_scatter(torch.randn(2, 3, 16), i[:, :2], 2, (4, 6, 8)),
     ValueError, "index has M (number of patches) = 2, expected 3"),
])
def test_bad_inputs(call, error, message):
    x = torch.randn(2, 2, 4, 6, 8)
    index = torch.tensor([[0, 1, 2], [3, 4, 5]])
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        call(x, index)


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        ak.masked_patch_gather(torch.randn(1, 1, 2, 2, 2), torch.tensor([[0]]), 2, backend="triton")


def test_index_values_are_checked_on_cpu_and_not_on_gpu_by_default():
    from anatokernels.masked_patch import _check_index

    bad = torch.tensor([[0, 9]])
    with pytest.raises(ValueError, match="patch ids must lie in"):
        _check_index("op", bad, 1, 8, torch.device("cpu"), None)  # default on CPU: checked
    with pytest.raises(ValueError, match="patch ids must lie in"):
        ak.masked_patch_gather(torch.randn(1, 1, 4, 4, 4), bad, 2, backend="reference", check_indices=True)
    # off by default for non-CPU tensors: values never read (a meta tensor has none), so no host sync
    assert _check_index("op", bad.to("meta"), 1, 8, torch.device("meta"), None) is False
    assert _check_index("op", bad, 1, 8, torch.device("cpu"), False) is False
    # unchecked duplicates in a scatter are allowed through (no sync); checked they are a clear error
    patches, dup = torch.randn(1, 2, 8), torch.tensor([[1, 1]])
    ak.masked_patch_scatter(patches, dup, 2, (2, 2, 4), backend="reference", check_indices=False)
    with pytest.raises(ValueError, match="duplicate patch id"):
        ak.masked_patch_scatter(patches, dup, 2, (2, 2, 4), backend="reference", check_indices=True)
