"""hyper_cross_attention on CPU: the logit bias costs at most its own size in memory.

Peak bytes of live tensor storage are counted by a dispatch mode (every storage an op creates, until it is
freed), with the inputs excluded, for the ``chunked`` path (what ``auto`` runs on CPU) with and without a
bias; the chunk size is lowered so that L spans several chunks.
"""

import weakref

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import anatokernels as ak
from anatokernels.hyper_attention import chunked

pytestmark = pytest.mark.usefixtures("one_thread")

B, L, C, M, E, H = 2, 6000, 8, 5, 8, 4


class PeakStorageBytes(TorchDispatchMode):
    """Within the block: ``peak`` bytes of storages created by ops and alive at once (``known`` ones
    excluded)."""

    def __init__(self, known=()):
        super().__init__()
        self.live = self.peak = 0
        self.seen = {t.untyped_storage().data_ptr() for t in known}

    def _freed(self, key, nbytes):
        self.seen.discard(key)
        self.live -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor):
                continue
            storage = t.untyped_storage()
            key, nbytes = storage.data_ptr(), storage.nbytes()
            if nbytes and key not in self.seen:
                self.seen.add(key)
                self.live += nbytes
                self.peak = max(self.peak, self.live)
                weakref.finalize(storage, self._freed, key, nbytes)
        return out


def _leaves():
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g).requires_grad_()
    return [r(B, L, C), r(B, M, E), r(B, M, E), r(B, C, E), r(E, C), r(B, E), r(C)]


def _peak(leaves, bias, bias_scale, backward):
    known = [t for t in (*leaves, bias, bias_scale) if t is not None]
    x, k, v, w_q, w_o, b_q, b_o = leaves
    with PeakStorageBytes(known) as counter, torch.set_grad_enabled(backward):
        out = ak.hyper_cross_attention(x, k, v, w_q, w_o, b_q=b_q, b_o=b_o, num_heads=H, attn_bias=bias,
                                       attn_bias_scale=bias_scale, backend="chunked")
        if backward:
            out.sum().backward()
        del out
    return counter.peak


@pytest.mark.parametrize("backward", [False, True], ids=["forward", "forward+backward"])
@pytest.mark.parametrize("kind", ["shared", "shared+scale", "heads"])
def test_bias_costs_at_most_its_own_size(monkeypatch, kind, backward):
    """Peak with the bias ≤ peak without + the bias's (and its scale's) bytes: room for their gradients in
    the backward. A head-shared bias expanded to (B, H, L, M) anywhere would need H times that."""
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", 1 << 14)  # 820 rows per chunk: L spans 8 chunks
    bias = torch.randn(B, H if kind == "heads" else 1, L, M, requires_grad=True)
    bias_scale = torch.rand(H, requires_grad=True) if kind.endswith("+scale") else None
    plain = _peak(_leaves(), None, None, backward)
    biased = _peak(_leaves(), bias, bias_scale, backward)
    allowed = bias.nbytes + (0 if bias_scale is None else bias_scale.nbytes)
    assert biased <= plain + allowed, (
        f"peak {biased} B with the bias > {plain} B without + {allowed} B of bias and scale")


def test_counter_sees_an_expanded_bias():
    """The measure can fail: materialising the head-shared bias over the heads is counted."""
    bias = torch.randn(B, 1, L, M)
    with PeakStorageBytes([bias]) as counter:
        expanded = bias.expand(B, H, L, M).contiguous()
        del expanded
    assert counter.peak == B * H * L * M * 4
