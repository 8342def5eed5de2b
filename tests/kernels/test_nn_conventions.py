"""PyTorch module conventions of anatokernels.nn: factory kwargs, meta-device init then ``to_empty`` +
``reset_parameters``, computation-changing configuration checked on ``load_state_dict`` (old checkpoints
without it still load), and every library backend name accepted by every module."""

import math

import pytest
import torch

from anatokernels.nn import HyperCrossAttention, Mamba3d

MODULES = {
    "Mamba3d": lambda **kw: Mamba3d(8, d_state=4, d_conv=3, expand=1, orders=("zyx", "-yxz"), **kw),
    "HyperCrossAttention": lambda **kw: HyperCrossAttention(8, 6, num_heads=2, rank=2, hyper_hidden=8, **kw),
}


def _call(module, dtype=torch.float32):
    x = torch.randn(2, 8, 2, 3, 4, dtype=dtype)
    if isinstance(module, Mamba3d):
        return module(x)
    return module(x, torch.randn(2, 3, 6, dtype=dtype), key_padding_mask=torch.tensor([[False, True, False]] * 2))


@pytest.mark.parametrize("name", sorted(MODULES))
def test_factory_kwargs(name):
    module = MODULES[name](dtype=torch.float64, device="cpu")
    assert all(p.dtype == torch.float64 for p in module.parameters())
    assert _call(module, torch.float64).dtype == torch.float64


@pytest.mark.parametrize("name", sorted(MODULES))
def test_meta_init_then_to_empty_and_reset_parameters(name):
    torch.manual_seed(0)
    fresh = MODULES[name]()
    module = MODULES[name](device="meta")
    assert all(p.is_meta for p in module.parameters())
    module.to_empty(device="cpu")
    module.reset_parameters()
    for (key, got), want in zip(module.state_dict().items(), fresh.state_dict().values()):
        assert torch.isfinite(got.double()).all(), key
        if want.dtype == torch.int64 or want.unique().numel() == 1:  # buffers, constant inits (A_log rows, D, zeros)
            assert torch.equal(got, want), key
        else:  # random inits: the same distribution, a different draw
            assert math.isclose(got.std().item(), want.std().item(), rel_tol=0.6), key
            assert got.abs().max() <= 4 * want.abs().max() + 1e-6, key
    if isinstance(module, Mamba3d):
        assert torch.equal(module.A_log, fresh.A_log) and torch.equal(module.D, fresh.D)
    assert torch.isfinite(_call(module)).all()


def test_mamba3d_orders_are_checked_on_load():
    source = Mamba3d(8, d_state=4, orders=("zyx", "-yxz"))
    with pytest.raises(ValueError, match=r"saved from a module with orders \('zyx', '-yxz'\), this one has "
                                         r"orders \('zyx', 'yxz'\)"):
        Mamba3d(8, d_state=4, orders=("zyx", "yxz")).load_state_dict(source.state_dict())
    same = Mamba3d(8, d_state=4, orders=("zyx", "-yxz"))
    same.load_state_dict(source.state_dict())
    x = torch.randn(1, 8, 2, 2, 3)
    torch.testing.assert_close(same(x), source(x))


def test_hyper_cross_attention_heads_and_rank_are_checked_on_load():
    source = HyperCrossAttention(8, 6, num_heads=2, rank=2, hyper_hidden=8)
    state = source.state_dict()
    state["attention_config"] = torch.tensor([4, 2])  # as if saved with 4 heads (same parameter shapes)
    with pytest.raises(ValueError, match="num_heads=4, rank=2, this one has num_heads=2, rank=2"):
        HyperCrossAttention(8, 6, num_heads=2, rank=2, hyper_hidden=8).load_state_dict(state)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_old_checkpoint_without_the_config_still_loads(name):
    source, target = MODULES[name](), MODULES[name]()
    old = {k: v for k, v in source.state_dict().items() if k not in ("scan_orders", "attention_config")}
    target.load_state_dict(old, strict=True)
    torch.manual_seed(3)
    want = _call(source)
    torch.manual_seed(3)
    torch.testing.assert_close(_call(target), want)


@pytest.mark.parametrize("name", sorted(MODULES))
@pytest.mark.parametrize("backend", ["auto", "reference", "chunked", "cpu"])
def test_every_library_backend_name_is_accepted(name, backend):
    torch.manual_seed(0)
    want = _call(MODULES[name](backend="reference"))
    torch.manual_seed(0)
    torch.testing.assert_close(_call(MODULES[name](backend=backend)), want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(MODULES))
def test_unknown_backend_is_an_error_at_construction(name):
    with pytest.raises(ValueError, match=f"{name}: unknown backend 'cuDNN'"):
        MODULES[name](backend="cuDNN")
