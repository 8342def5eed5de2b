"""Anatomy prompts that reach every voxel: zero-initialised prompt paths, occupancy bias, dense injection,
the ablation switches and the anatomy baselines (organ channels, auxiliary organ head)."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from anatoseg.blocks import OCCUPANCY_EPS, organ_occupancy
from anatoseg.nets import NetConfig, build_network

TINY = NetConfig.preset("tiny")
PATCH = (16, 16, 16)
SWITCHES = {
    "pooled-only": dict(occupancy_bias=False, dense_prompts=False),
    "bias": dict(occupancy_bias=True, dense_prompts=False),
    "dense": dict(occupancy_bias=False, dense_prompts=True),
    "full": {},
    "no-hypernet": dict(hypernet=False),
}
PROMPT_MODULES = ("prompt_encoder.", "hcca.", "inject.", "occupancy_bias.", "organ_input.", "organ_head.")


def _inputs(batch=1, seed=0):
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 2, *PATCH, generator=generator)
    organs = torch.randint(0, 5, (batch, *PATCH), generator=generator)  # a few organs, big enough to matter
    return image, organs


@pytest.mark.parametrize("arch, switches", [("anatoseg", "full"), ("anatoseg", "pooled-only"),
                                            ("anatoseg_organ_embed", "full")])
def test_prompt_paths_start_shut_and_their_gates_get_gradients(arch, switches):
    """At initialisation the output is the no-prompt network's, given its encoder/fusion/decoder weights."""
    plain = build_network("anatoseg_noprompt", TINY).train()
    prompted = build_network(arch, dataclasses.replace(TINY, **SWITCHES[switches])).train()
    missing, unexpected = prompted.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith(PROMPT_MODULES) for k in missing)
    image, organs = _inputs()
    expected = plain(image)
    outputs = prompted(image, organs)
    assert all(torch.equal(a, b) for a, b in zip(outputs, expected, strict=True))
    sum(o.square().mean() for o in outputs).backward()
    gates = {name: p.grad for name, p in prompted.named_parameters()
             if name.endswith((".w_o", ".b_o", ".gate", "organ_input.conv.weight"))}
    assert gates and all(g is not None and g.abs().sum() > 0 for g in gates.values()), \
        [name for name, g in gates.items() if g is None or g.abs().sum() == 0]


@pytest.mark.parametrize("arch, switches", [*[("anatoseg", s) for s in SWITCHES], ("anatoseg_organ_onehot", "full"),
                                            ("anatoseg_organ_embed", "full"), ("anatoseg_organ_aux", "full")])
def test_each_switch_and_baseline_trains_one_step(arch, switches):
    config = dataclasses.replace(TINY, **SWITCHES[switches])
    net = build_network(arch, config).train()
    present = {name.split(".")[0] for name, _ in net.named_parameters()}
    if arch == "anatoseg":
        assert ("occupancy_bias" in present) == config.occupancy_bias and ("inject" in present) == config.dense_prompts
    hyper = {name for name, _ in net.named_parameters() if ".hyper." in name}
    assert {name for name, p in net.named_parameters() if not p.requires_grad} == (set() if config.hypernet else hyper)
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    optimizer = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.0)
    image, organs = _inputs()
    outputs = net(image, organs)
    lesion = outputs["lesion"] if net.organ_aux else outputs
    labels = (image[:, 0] > 1.0).long()
    loss = sum(F.cross_entropy(o, labels[:, ::PATCH[0] // o.shape[2], ::PATCH[1] // o.shape[3],
                                         ::PATCH[2] // o.shape[4]]) for o in lesion)
    if net.organ_aux:
        loss = loss + F.cross_entropy(outputs["organs"], organs)
    loss.backward()
    optimizer.step()
    assert math.isfinite(loss.item())
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    moved = {name for name, p in net.named_parameters() if not torch.equal(p, before[name])}
    shut = {name for name in before if name.endswith((".w_o", ".gate", "organ_input.conv.weight", "organ_head.weight"))}
    assert shut <= moved and not moved & (hyper if not config.hypernet else set())


def test_occupancy_bias_path_matches_reference_attention():
    """One prompted stage against scaled dot-product attention with the bias written out: the tokens of
    (B, C, z, y, x) features and the occupancy of each organ at each token must line up."""
    config = dataclasses.replace(TINY, hypernet=False, dense_prompts=False)
    net = build_network("anatoseg", config).double()
    stage = 1  # stride 4: 4×4×4 tokens
    attention, bias = net.hcca[str(stage)], net.occupancy_bias[str(stage)]
    with torch.no_grad():
        attention.w_o.normal_(0.0, 0.3)
        attention.b_o.normal_(0.0, 0.1)
        bias.scale.copy_(torch.tensor([0.5, 2.0]))
    _, organs = _inputs(batch=2, seed=3)
    organs[1] = torch.where(organs[1] == 2, 0, organs[1])  # organ 2 absent from sample 1: a masked key
    prompts = net.prompt_encoder(organs)
    grid = [s // 2 ** (stage + 1) for s in PATCH]
    x = torch.randn(2, config.widths[stage], *grid, dtype=torch.float64, requires_grad=True)
    got = net._prompt(x, prompts, stage)
    expected = _reference(attention, bias.scale, x, prompts[stage])
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    grads = [torch.autograd.grad(out.square().sum(), [x, bias.scale]) for out in (got, expected)]
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
    without = build_network("anatoseg", dataclasses.replace(config, occupancy_bias=False)).double()
    without.load_state_dict(net.state_dict(), strict=False)
    assert (without._prompt(x, prompts, stage) - got).abs().max() > 1e-2  # the bias matters


def _reference(attention, scale, x, prompt):
    """y = x + MHA(LN(x) W0 + b_q, keys/values of the prompts, logits + scale_h·log(occ + ε), absent keys off)."""
    b, c = x.shape[:2]
    heads = scale.numel()
    tokens = x.flatten(2).transpose(1, 2)
    normed = F.layer_norm(tokens, (c,), attention.norm.weight, attention.norm.bias)
    p = attention.prompt_norm(prompt.tokens)

    def split(t):
        return t.unflatten(-1, (heads, c // heads)).transpose(1, 2)  # (B, H, n, dh)

    q, k, v = split(normed @ attention.w_q + attention.b_q), split(attention.to_k(p)), split(attention.to_v(p))
    occupancy = prompt.occupancy.flatten(2).transpose(1, 2)  # (B, L, M), token l = z·(y·x) + y·x + x
    logits_bias = scale.view(1, heads, 1, 1) * torch.log(occupancy.to(x.dtype) + OCCUPANCY_EPS)[:, None]
    logits_bias = logits_bias.masked_fill(~prompt.present[:, None, None, :], float("-inf"))
    o = F.scaled_dot_product_attention(q, k, v, attn_mask=logits_bias)
    out = o.transpose(1, 2).flatten(2) @ attention.w_o + attention.b_o
    return (tokens + out).transpose(1, 2).reshape(x.shape)


def test_prompt_encoder_gives_tokens_occupancy_and_dense_features():
    net = build_network("anatoseg", TINY)
    _, organs = _inputs(batch=2)
    prompts = net.prompt_encoder(organs)
    assert sorted(prompts) == sorted(TINY.hcca_stages) == [1, 2, 3]
    m, p = TINY.num_organs, TINY.prompt_dim
    for stage, prompt in prompts.items():
        grid = tuple(s // 2 ** (stage + 1) for s in PATCH)
        assert prompt.tokens.shape == (2, m, p) and prompt.present.shape == (2, m)
        assert prompt.features.shape == (2, p, *grid)
        torch.testing.assert_close(prompt.occupancy, organ_occupancy(organs, m, 2 ** (stage + 1)))
        assert prompt.present[:, :4].all() and not prompt.present[:, 4:].any()
    # A branch scans with Mamba only where the image encoder does (tiny: stages 2 and 3, not stride 4).
    assert [isinstance(net.prompt_encoder.branches[str(s)].mamba, torch.nn.Identity) for s in (1, 2, 3)] == \
        [True, False, False]


def test_organ_channels_are_exactly_extra_input_channels():
    net = build_network("anatoseg_organ_onehot", TINY)
    with torch.no_grad():
        net.organ_input.conv.weight.normal_()
    image, organs = _inputs()
    stem = net.pet_encoder.stem
    got = net.pet_encoder(image[:, :1], net.organ_input(organs)[0])[0]
    one_hot = F.one_hot(organs, TINY.num_organs + 1)[..., 1:].movedim(-1, 1).float()
    weight = torch.cat([stem[0].weight, net.organ_input.conv.weight[:TINY.stem_width]], dim=1)
    expected = stem[2](stem[1](F.conv3d(torch.cat([image[:, :1], one_hot], dim=1), weight, padding=1)))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_auxiliary_organ_head_output_structure():
    net = build_network("anatoseg_organ_aux", dataclasses.replace(TINY, deep_supervision=False)).train()
    assert net.organ_aux and not net.uses_prompts
    image, _ = _inputs(batch=2)
    out = net(image)
    assert set(out) == {"lesion", "organs"}
    assert out["lesion"].shape == (2, 2, *PATCH) and out["organs"].shape == (2, TINY.num_organs + 1, *PATCH)
    with torch.no_grad():
        assert net.eval()(image).shape == (2, 2, *PATCH)
