"""The training recipe's loss and optimiser: soft deep-supervision targets, no loss beyond the supervised
stride, top-k cross-entropy, per-architecture learning rates and warm-up, pretrained encoders in their own
slower group, resume."""

import pytest
import torch
from monai.losses import DiceCELoss

from anatoseg.config import LossConfig
from anatoseg.configbase import OptimConfig
from anatoseg.errors import ConfigError
from anatoseg.nets import ARCHITECTURES, ENCODER_NAMES, NetConfig, build_network
from anatoseg.stage3.config import Config
from anatoseg.training.optim import (
    ARCH_OPTIM,
    PRETRAINED_WARMUP,
    arch_optim,
    make_loss,
    make_optimizer,
    param_groups,
    resolve_optim,
    supervision_target,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_average_pooled_targets_keep_a_one_voxel_lesion():
    label = torch.zeros(1, 1, 8, 8, 8)
    label[0, 0, 3, 4, 5] = 1
    target, stride = supervision_target(label, (4, 4, 4))
    assert stride == 2 and target.shape == (1, 2, 4, 4, 4)
    assert target[0, 1, 1, 2, 2] == pytest.approx(1 / 8) and target[0, 1].sum() == pytest.approx(1 / 8)
    assert torch.allclose(target.sum(1), torch.ones(1, 4, 4, 4))  # still a distribution per voxel
    target, stride = supervision_target(label, (2, 2, 2))
    assert stride == 4 and target[0, 1].max() == pytest.approx(1 / 64)
    with pytest.raises(ValueError, match="one integer stride"):
        supervision_target(label, (4, 2, 2))


def _heads(label: torch.Tensor) -> list[torch.Tensor]:
    """Deep-supervision logits at strides 1, 2, 4, 8 that agree with ``label`` where it is whole."""
    heads = []
    for stride in (1, 2, 4, 8):
        target, _ = supervision_target(label, [s // stride for s in label.shape[2:]])
        heads.append((10 * (2 * target - 1)).requires_grad_())
    return heads


def test_heads_beyond_the_supervised_stride_get_no_loss():
    label = torch.zeros(2, 1, 16, 16, 16)
    label[:, :, 4:8, 4:8, 4:8] = 1
    heads = _heads(label)
    loss = make_loss(LossConfig(max_supervised_stride=4))(heads, label)
    loss.backward()
    assert all(h.grad is not None and h.grad.abs().sum() > 0 for h in heads[:3])
    assert heads[3].grad is not None and not heads[3].grad.any()  # stride 8: no loss, a zero gradient (DDP)
    everything = make_loss(LossConfig(max_supervised_stride=None))
    wrong_coarsest = [*heads[:3], -heads[3].detach()]
    assert everything(wrong_coarsest, label) > everything(heads, label) + 0.1
    assert float(make_loss(LossConfig(max_supervised_stride=4))(wrong_coarsest, label).detach()) == pytest.approx(
        float(loss.detach()), rel=1e-6, abs=1e-7)
    single = make_loss(LossConfig(max_supervised_stride=1))(heads[0], label)  # one head: always supervised
    assert float(single.detach()) < 0.05
    with pytest.raises(ConfigError, match="max_supervised_stride"):
        Config.build(overrides=["loss.max_supervised_stride=0"])


def test_loss_matches_monai_dice_ce_and_top_k_keeps_only_the_hardest_voxels():
    torch.manual_seed(3)
    label = (torch.rand(2, 1, 6, 10, 14) > 0.9).float()
    heads = [torch.randn(2, 2, 6, 10, 14) * 3, torch.randn(2, 2, 3, 5, 7)]
    reference = DiceCELoss(softmax=True, batch=True, include_background=False)
    expected = sum(w * reference(h, supervision_target(label, h.shape[2:])[0]) for w, h in zip((1, 0.5), heads))
    plain = make_loss(LossConfig(max_supervised_stride=None))
    assert float(plain(heads, label)) == pytest.approx(float(expected), rel=1e-6)
    assert float(make_loss(LossConfig(max_supervised_stride=None, ce_topk=1.0))(heads, label)) == pytest.approx(
        float(expected), rel=1e-6)
    # CE only: the top quarter of the voxel losses, by hand; the other voxels get no gradient
    logits = torch.randn(1, 2, 4, 4, 4, requires_grad=True)
    one = (torch.rand(1, 1, 4, 4, 4) > 0.7).float()
    topk = make_loss(LossConfig(dice_weight=0.0, ce_topk=0.25))(logits, one)
    voxel = -torch.log_softmax(logits.detach(), 1).gather(1, one.long()).flatten()
    assert float(topk.detach()) == pytest.approx(float(voxel.sort(descending=True).values[:16].mean()), rel=1e-6)
    topk.backward()
    kept = logits.grad.abs().sum(1).flatten() > 0
    assert int(kept.sum()) == 16 and set(kept.nonzero().flatten().tolist()) == set(voxel.topk(16).indices.tolist())
    tiny = make_loss(LossConfig(dice_weight=0.0, ce_topk=1e-9))(logits, one)  # at least one voxel
    assert float(tiny.detach()) == pytest.approx(float(voxel.max()), rel=1e-6)
    for bad in ("0", "1.5", "-0.1"):
        with pytest.raises(ConfigError, match="loss.ce_topk"):
            Config.build(overrides=[f"loss.ce_topk={bad}"])
    assert Config.build(overrides=["loss.ce_topk=0.1"]).loss.ce_topk == 0.1


def test_every_architecture_has_optimiser_defaults_and_null_takes_them():
    for arch in ARCHITECTURES:
        assert arch_optim(arch).adamw_lr > 0
    assert ARCH_OPTIM["swinunetr"].adamw_lr < ARCH_OPTIM["unet"].adamw_lr and ARCH_OPTIM["unetr"].warmup > 0
    config = Config().optim
    assert config.lr is None and config.warmup_steps is None
    resolved = resolve_optim(config, "unetr", 1000, pretrained=False)
    assert resolved.lr == ARCH_OPTIM["unetr"].adamw_lr and resolved.warmup_steps == round(
        ARCH_OPTIM["unetr"].warmup * 1000)
    assert resolve_optim(config, "anatoseg", 1000, pretrained=True).warmup_steps == round(PRETRAINED_WARMUP * 1000)
    given = Config.build(overrides=["optim.lr=0.01", "optim.warmup_steps=3", "optim.name=sgd"]).optim
    assert (resolve_optim(given, "swinunetr", 1000, True).lr, resolve_optim(given, "unetr", 10, True).warmup_steps) \
        == (0.01, 3)
    assert resolve_optim(Config.build(overrides=["optim.name=sgd"]).optim, "unet", 10, False).lr == 1e-2
    with pytest.raises(ConfigError, match="optim.pretrained_lr_scale"):
        Config.build(overrides=["optim.pretrained_lr_scale=0"])
    with pytest.raises(ConfigError, match="warmup_steps >= 0"):
        Config.build(overrides=["optim.warmup_steps=-1"])


def _pretrained_optimizer(net, steps=10, warmup=4):
    config = OptimConfig(lr=1e-2, warmup_steps=warmup, schedule="poly")
    return make_optimizer(param_groups(net, config.learning_rate, ENCODER_NAMES, 0.1), config, steps)


def test_pretrained_encoders_train_slower_and_every_group_warms_up_and_resumes():
    net = build_network("anatoseg", NetConfig.preset("tiny"))
    optimizer, scheduler = _pretrained_optimizer(net)
    new, old = optimizer.param_groups
    encoder_params = {id(p) for name in ENCODER_NAMES for p in getattr(net, name).parameters()}
    assert {id(p) for p in old["params"]} == encoder_params and not encoder_params & {id(p) for p in new["params"]}
    assert len(new["params"]) + len(old["params"]) == len(list(net.parameters()))
    rates = []
    for _ in range(6):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx([2.5e-3, 2.5e-4])  # warm-up 1/4 of the rate, in both groups
    assert rates[3] == pytest.approx([1e-2, 1e-3])
    assert all(r[1] == pytest.approx(0.1 * r[0]) for r in rates)
    # A resumed run rebuilds the same groups and loads their state: the rates go on where they were.
    state = {"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict()}
    resumed_optimizer, resumed_scheduler = _pretrained_optimizer(build_network("anatoseg", NetConfig.preset("tiny")))
    resumed_optimizer.load_state_dict(state["optimizer"])
    resumed_scheduler.load_state_dict(state["scheduler"])
    assert [g["lr"] for g in resumed_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]
    optimizer.step(), scheduler.step(), resumed_optimizer.step(), resumed_scheduler.step()
    assert [g["lr"] for g in resumed_optimizer.param_groups] == [g["lr"] for g in optimizer.param_groups]
    assert len(param_groups(net, 1e-3)) == 1  # without pretrained encoders: one group
