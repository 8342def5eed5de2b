"""Building blocks of the anatoseg networks against plain PyTorch references."""

import pytest
import torch
import torch.nn.functional as F

from anatoseg.blocks import (
    OCCUPANCY_EPS,
    ChannelLayerNorm,
    CrossModalFusion,
    DecoderStage,
    GatedInjection,
    MambaBlock,
    OccupancyBias,
    OrganChannels,
    conv_norm,
    organ_occupancy,
    pool_organ_tokens,
)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_organ_occupancy_is_pooled_one_hot(stride):
    organs = torch.randint(0, 6, (2, 8, 12, 4))
    organs[1] = 0  # a sample without any organ
    got = organ_occupancy(organs, 5, stride)
    one_hot = F.one_hot(organs, 6)[..., 1:].permute(0, 4, 1, 2, 3).float()
    torch.testing.assert_close(got, F.avg_pool3d(one_hot, stride))
    assert got[1].abs().sum() == 0


def test_pool_organ_tokens_masked_mean():
    occupancy = torch.rand(2, 3, 2, 3, 4)
    occupancy[0, 1] = 0  # organ 2 absent from sample 0
    features = torch.randn(2, 5, 2, 3, 4)
    tokens, present = pool_organ_tokens(occupancy, features)
    assert present.tolist() == [[True, False, True], [True, True, True]]
    for b in range(2):
        for m in range(3):
            w = occupancy[b, m].flatten()
            expected = (features[b].flatten(1) * w).sum(1) / w.sum() if w.sum() > 0 else torch.zeros(5)
            torch.testing.assert_close(tokens[b, m], expected)


def test_conv_norm_keeps_two_channels_per_group():
    for channels in (2, 4, 8, 12, 16, 24, 64):
        norm = conv_norm(channels)
        assert channels % norm.num_groups == 0 and channels // norm.num_groups >= 2


def test_channel_layer_norm_matches_token_layer_norm():
    norm = ChannelLayerNorm(6)
    x = torch.randn(2, 6, 3, 4, 5)
    expected = F.layer_norm(x.permute(0, 2, 3, 4, 1), (6,)).permute(0, 4, 1, 2, 3)
    torch.testing.assert_close(norm(x), expected)


def test_fusion_and_decoder_shapes():
    fusion = CrossModalFusion(8)
    out = fusion(torch.randn(2, 8, 4, 6, 2), torch.randn(2, 8, 4, 6, 2))
    assert out.shape == (2, 8, 4, 6, 2)
    decoder = DecoderStage(16, 8, 8)
    assert decoder(torch.randn(2, 16, 2, 3, 1), out).shape == (2, 8, 4, 6, 2)


def test_mamba_block_checkpointing_is_exact():
    plain = MambaBlock(8, d_state=4)
    recomputed = MambaBlock(8, d_state=4, checkpoint=True)
    recomputed.load_state_dict(plain.state_dict())
    assert recomputed.mamba.checkpoint and not plain.mamba.checkpoint  # one level: the library's Mamba3d
    x = torch.randn(1, 8, 2, 3, 4, requires_grad=True)
    grads = []
    for block in (plain, recomputed):
        out = block(x)
        assert out.shape == x.shape
        grads.append(torch.autograd.grad(out.square().sum(), [x, *block.parameters()]))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_occupancy_bias_is_log_occupancy_per_token_in_raster_order():
    block = OccupancyBias(3)
    occupancy = torch.rand(2, 4, 2, 3, 5)
    occupancy[:, 1] = 0  # an organ absent everywhere: log ε
    bias, scale = block(occupancy)
    assert bias.shape == (2, 30, 4) and scale is block.scale and torch.equal(scale, torch.ones(3))
    for z, y, x in ((0, 0, 0), (1, 2, 4), (0, 1, 3)):
        torch.testing.assert_close(bias[:, z * 15 + y * 5 + x], torch.log(occupancy[:, :, z, y, x] + OCCUPANCY_EPS))
    assert torch.allclose(bias[:, :, 1], torch.full((), torch.log(torch.tensor(OCCUPANCY_EPS))))


def test_gated_injection_starts_as_identity_and_its_gate_learns():
    block = GatedInjection(6, 4)
    x, features = torch.randn(2, 4, 3, 2, 5), torch.randn(2, 6, 3, 2, 5)
    out = block(x, features)
    assert torch.equal(out, x)
    out.square().sum().backward()
    assert block.gate.grad.abs().min() > 0 and block.proj.weight.grad.abs().sum() == 0
    with torch.no_grad():
        block.gate.fill_(0.5)
    expected = x + 0.5 * block.proj(F.layer_norm(features.movedim(1, -1), (6,)).movedim(-1, 1))
    torch.testing.assert_close(block(x, features), expected)


@pytest.mark.parametrize("mode", ["onehot", "embed"])
def test_organ_channels_lookup_and_zero_start(mode):
    block = OrganChannels(mode, num_organs=5, embed_dim=3, out_channels=4, count=2)
    organs = torch.randint(0, 6, (2, 3, 4, 5))
    parts = block(organs)
    assert len(parts) == 2 and all(p.shape == (2, 4, 3, 4, 5) and not p.any() for p in parts)
    with torch.no_grad():
        block.conv.weight.normal_()
    table = torch.eye(6)[:, 1:] if mode == "onehot" else block.table
    maps = table[organs].movedim(-1, 1)
    expected = F.conv3d(maps, block.conv.weight, padding=1).chunk(2, dim=1)
    for got, want in zip(block(organs), expected, strict=True):
        torch.testing.assert_close(got, want)
    assert ("table" in dict(block.named_parameters())) == (mode == "embed")
    assert "table" not in block.state_dict() or mode == "embed"
    with pytest.raises(ValueError, match="mode must be"):
        OrganChannels("rgb", 5, 3, 4, 2)
