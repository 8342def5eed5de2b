"""The assembled networks: configs, shapes, gradients through every block, baselines, encoder loading."""

import dataclasses
import json

import pytest
import torch

from anatoseg.data.labels import NUM_ORGANS
from anatoseg.errors import ConfigError, DataError
from anatoseg.nets import (
    ARCHITECTURES,
    AnatoSegNet,
    NetConfig,
    build_network,
    check_encoder_state,
    encoder_config,
    encoder_state_dict,
    load_encoder_state,
    patch_divisor,
)

TINY = NetConfig.preset("tiny")
PATCH = (16, 32, 16)  # non-cubic, divisible by TINY.divisor = 16


def _inputs(batch=2, patch=PATCH, num_organs=TINY.num_organs):
    image = torch.randn(batch, 2, *patch)
    organs = torch.randint(0, num_organs + 1, (batch, *patch))
    return image, organs


# ---- config -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny", "base"])
def test_config_json_round_trip(name):
    config = NetConfig.preset(name)
    assert NetConfig.from_dict(json.loads(json.dumps(dataclasses.asdict(config)))) == config
    assert NetConfig.from_dict(config.to_dict()) == config
    assert config.divisor == 2**len(config.widths) == 16


def test_defaults_are_the_full_design_on_the_project_label_set():
    base = NetConfig()
    assert base.num_organs == NUM_ORGANS and NetConfig.preset("tiny").num_organs == NUM_ORGANS
    assert base.occupancy_bias and base.dense_prompts and base.hypernet and base.use_prompts
    assert base.organ_channels == "none" and not base.organ_aux_head
    assert base.hcca_stages == (3, 2, 1, 0) and TINY.hcca_stages == (3, 2, 1)  # strides 2 and 4


def test_a_stored_config_without_the_prompt_switches_rebuilds_the_older_network():
    stored = {k: v for k, v in TINY.to_dict().items()
              if k not in ("occupancy_bias", "dense_prompts", "hypernet", "organ_channels", "organ_embed_dim",
                           "organ_aux_head")}
    stored.update(num_organs=16, hcca_stages=[3, 2])  # as stored before the label set grew
    config = NetConfig.from_dict(stored)
    assert config.num_organs == 16 and not config.occupancy_bias and not config.dense_prompts
    assert config.hypernet and config.organ_channels == "none" and not config.organ_aux_head
    net = build_network("anatoseg", config)
    assert not hasattr(net, "inject") and not hasattr(net, "occupancy_bias")
    assert net.prompt_encoder.branches["3"].embed[0].in_channels == 16


@pytest.mark.parametrize("values, words", [
    ({"widhts": [8, 16]}, "unknown network config keys ['widhts']"),
    ({"widths": [8, 16], "res_depths": [1, 1, 1]}, "res_depths"),
    ({"hcca_stages": [4]}, "hcca_stages [4] out of range"),
    ({"orders": ["zyy"]}, "orders"),
    ({"num_heads": 3}, "num_heads=3 must divide"),
    ({"hcca_stages": []}, "use_prompts needs at least one stage"),
    ({"organ_channels": "rgb"}, "organ_channels must be one of"),
    ({"organ_embed_dim": 0}, "organ_embed_dim must be positive"),
], ids=["typo", "depths-length", "hcca-range", "order", "heads", "prompts-without-hcca", "organ-channels",
        "embed-dim"])
def test_config_refuses_bad_values(values, words):
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        NetConfig.from_dict(values)


def test_unknown_preset_and_arch():
    with pytest.raises(ConfigError, match="unknown network preset 'huge'"):
        NetConfig.preset("huge")
    with pytest.raises(ConfigError, match="unknown architecture 'vnet'"):
        build_network("vnet", TINY)


def test_patch_size_divisibility_is_checked():
    assert patch_divisor("swinunetr") == 32 and patch_divisor("anatoseg", TINY) == 16
    with pytest.raises(ConfigError, match="multiple of 32"):
        build_network("swinunetr", TINY, patch_size=(112, 160, 128))
    net = build_network("anatoseg", TINY)
    with pytest.raises(DataError, match="not divisible by 16"):
        net(*_inputs(patch=(16, 24, 16)))


# ---- the anatoseg network -----------------------------------------------------------------------------

def open_zero_paths(net):
    """Move the parameters that start at zero off zero, so that every parameter must get a gradient.

    The prompt paths start shut (HCCA's output projection, the injection gates, the organ-channel
    convs) and HCCA's hypernetwork has a zero last layer (W_q = W0, gates 1): at initialisation
    what lies behind them gets no gradient.
    """
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith(("hyper.2.weight", ".w_o", ".gate", "organ_input.conv.weight")):
                param.normal_(0.0, 0.1)


@pytest.mark.parametrize("arch", ["anatoseg", "anatoseg_noprompt", "anatoseg_organ_onehot", "anatoseg_organ_embed",
                                  "anatoseg_organ_aux"])
def test_shapes_and_every_parameter_gets_a_gradient(arch):
    net = build_network(arch, TINY).train()
    assert net.uses_prompts == (arch in ("anatoseg", "anatoseg_organ_onehot", "anatoseg_organ_embed"))
    assert net.deep_supervision and net.organ_aux == (arch == "anatoseg_organ_aux")
    open_zero_paths(net)
    assert hasattr(net, "prompt_encoder") == hasattr(net, "hcca") == (arch == "anatoseg")
    image, organs = _inputs()
    image.requires_grad_(True)
    outputs = net(image, organs)
    if net.organ_aux:
        assert outputs["organs"].shape == (2, TINY.num_organs + 1, *PATCH)
        outputs = [*outputs["lesion"], outputs["organs"]]
    assert [tuple(o.shape[2:]) for o in outputs[:4]] == [
        (PATCH[0] // s, PATCH[1] // s, PATCH[2] // s) for s in (1, 2, 4, 8)]
    assert all(o.shape[:2] == (2, 2) for o in outputs[:4])
    sum(o.float().square().mean() for o in outputs).backward()
    no_grad = [name for name, p in net.named_parameters()
               if p.grad is None or not torch.isfinite(p.grad).all() or p.grad.abs().sum() == 0]
    assert no_grad == []
    assert image.grad.abs().sum() > 0
    net.eval()
    with torch.no_grad():
        assert net(image, organs).shape == (2, 2, *PATCH)


def test_without_deep_supervision_one_output():
    net = build_network("anatoseg", dataclasses.replace(TINY, deep_supervision=False)).train()
    assert not net.deep_supervision and len(net.heads) == 1
    assert net(*_inputs(batch=1)).shape == (1, 2, *PATCH)


def test_organ_prompts_change_the_output():
    net = build_network("anatoseg", TINY).eval()
    open_zero_paths(net)  # at initialisation the prompt paths are shut (test_nets_prompts.py)
    image, organs = _inputs(batch=1)
    with torch.no_grad():
        a = net(image, organs)
        b = net(image, torch.roll(organs, 8, dims=2))
    assert (a - b).abs().max() > 1e-4


def test_absent_organs_give_finite_outputs_and_gradients():
    net = build_network("anatoseg", TINY).train()
    image, organs = _inputs()
    organs.zero_()  # no organ anywhere: every prompt key is masked
    organs[1, :4, :4, :4] = 3  # and one organ in a corner of the second sample only
    outputs = net(image, organs)
    assert all(torch.isfinite(o).all() for o in outputs)
    sum(o.square().mean() for o in outputs).backward()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


def test_gradient_checkpointing_is_exact():
    image, organs = _inputs(batch=1, patch=(16, 16, 16))
    plain = build_network("anatoseg", TINY).train()
    open_zero_paths(plain)
    recomputed = build_network("anatoseg", dataclasses.replace(TINY, gradient_checkpointing=True)).train()
    recomputed.load_state_dict(plain.state_dict())
    results = []
    for net in (plain, recomputed):
        outputs = net(image, organs)
        loss = sum(o.square().mean() for o in outputs)
        results.append([*outputs, *torch.autograd.grad(loss, list(net.parameters()))])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b)


def test_bad_organ_maps_are_refused():
    net = build_network("anatoseg", TINY)
    image, organs = _inputs(batch=1)
    with pytest.raises(DataError, match="uses organ prompts"):
        net(image, None)
    with pytest.raises(DataError, match=rf"organ labels must lie in \[0, {TINY.num_organs}\]"):
        net(image, organs + 1)
    with pytest.raises(DataError, match="organs must be int64"):
        net(image, organs.int())
    with pytest.raises(DataError, match="channels PET, CT"):
        net(image[:, :1], organs)


# ---- baselines ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("arch", [a for a in ARCHITECTURES if not a.startswith("anatoseg")])
def test_baselines_build_and_run(arch):
    patch = (64, 32, 32)  # SwinUNETR needs multiples of 32 and more than one bottleneck voxel
    net = build_network(arch, TINY, patch_size=patch).eval()
    assert net.uses_prompts is False and net.organ_aux is False and net.deep_supervision is False
    image, organs = _inputs(batch=1, patch=patch)
    with torch.no_grad():
        out = net(image, organs)
        assert out.shape == (1, 2, *patch) and torch.isfinite(out).all()
        torch.testing.assert_close(net(image, None), out)


def test_unetr_needs_the_patch_size():
    with pytest.raises(ConfigError, match="unetr needs the training patch size"):
        build_network("unetr", TINY)


# ---- encoders (stage 2 → stage 3) ---------------------------------------------------------------------

def test_encoder_forward_levels():
    net = build_network("anatoseg", TINY)
    features = net.pet_encoder(torch.randn(1, 1, *PATCH))
    assert net.pet_encoder.channels == (8, 8, 16, 32, 64) and net.pet_encoder.strides == (1, 2, 4, 8, 16)
    assert [tuple(f.shape) for f in features] == [
        (1, c, PATCH[0] // s, PATCH[1] // s, PATCH[2] // s)
        for c, s in zip(net.pet_encoder.channels, net.pet_encoder.strides)]


def test_encoder_state_moves_between_networks():
    source = build_network("anatoseg", TINY)
    state = encoder_state_dict(source)
    assert state and all(k.startswith(("pet_encoder.", "ct_encoder.")) for k in state)
    target = build_network("anatoseg_noprompt", TINY)
    load_encoder_state(target, state, state_config=encoder_config(TINY))
    for key, value in encoder_state_dict(target).items():
        torch.testing.assert_close(value, state[key])


def test_mismatched_encoder_state_is_refused_clearly():
    wider = dataclasses.replace(TINY, widths=(8, 16, 32, 128))
    state = encoder_state_dict(build_network("anatoseg", wider))
    net = build_network("anatoseg", TINY)
    with pytest.raises(ConfigError, match=r"widths: \(8, 16, 32, 128\) in the encoder checkpoint, "
                                          r"\(8, 16, 32, 64\) here") as info:
        check_encoder_state(net, state, state_config=wider.to_dict(), source="enc.pt")
    assert str(info.value).startswith("enc.pt: ")
    with pytest.raises(ConfigError, match=r"shape mismatch: pet_encoder\.stages\.3\.down\.0\.weight: "
                                          r"\(128, 32, 2, 2, 2\) in the encoder checkpoint, \(64, 32, 2, 2, 2\) here"):
        check_encoder_state(net, state)
    state.pop("ct_encoder.stem.0.weight")
    with pytest.raises(ConfigError, match="missing: ct_encoder.stem.0.weight"):
        check_encoder_state(net, state)
    with pytest.raises(ConfigError, match="no PET/CT modality encoders"):
        check_encoder_state(build_network("unet", TINY), state)


def test_anatoseg_needs_two_channels():
    with pytest.raises(ConfigError, match="takes 2 channels"):
        AnatoSegNet(dataclasses.replace(TINY, in_channels=3))
