"""Stage 2 (``anato pretrain``): shared masking, losses, switches, a tiny run, and the stage-3 hand-over."""

import csv
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage
from typer.testing import CliRunner

from anatokernels import patchify, unpatchify
from anatoseg.checkpoint import load_checkpoint, load_encoders
from anatoseg.cli import app, main
from anatoseg.config import ModelConfig
from anatoseg.data.phantom import generate_cohort
from anatoseg.errors import ConfigError
from anatoseg.nets import build_network
from anatoseg.stage2 import (
    ObjectiveConfig,
    PretrainConfig,
    PretrainModel,
    draw_shared_mask,
    fill_masked,
    info_nce,
    masked_reconstruction_loss,
    normalised_targets,
    pretrain_volumes,
)
from anatoseg.training.network import net_config
from anatoseg.training.sampling import TrainVolume

# A two-stage network (divisor 4) keeps every model test well under a second.
SMALL_NET = {"widths": [4, 8], "stem_width": 4, "res_depths": [1, 1], "mamba_depths": [0, 1], "d_state": 4,
             "hcca_stages": [1], "num_heads": 2, "prompt_dim": 8, "hyper_hidden": 8, "rank": 2}
CROP, PATCH = (16, 16, 16), (4, 4, 4)
NO_AUGMENT = {"flip_prob": 0.0, "affine_prob": 0.0, "intensity_prob": 0.0}


pytestmark = pytest.mark.usefixtures("one_thread")


def _small_model(**objective) -> PretrainModel:
    return PretrainModel(net_config(ModelConfig(net=SMALL_NET)), PATCH, ObjectiveConfig(**objective))


def _volume(seed: int = 0, size: int = 16) -> TrainVolume:
    """A smooth random CT-like field and a PET-like channel that depends on it, normalised, (2, Z, Y, X)."""
    rng = np.random.default_rng(seed)
    ct = ndimage.gaussian_filter(rng.normal(size=(size,) * 3), 2.0)
    ct = (ct - ct.mean()) / ct.std()
    pet = np.maximum(ct, 0.0) ** 2 + 0.05 * rng.normal(size=ct.shape)
    pet = (pet - pet.mean()) / pet.std()
    return TrainVolume(f"case{seed}", np.stack([pet, ct]).astype(np.float32), np.zeros(ct.shape, np.uint8))


def test_info_nce_lower_for_aligned_than_shuffled_tokens():
    a = torch.randn(32, 16)
    b = a + 0.1 * torch.randn(32, 16)
    aligned = info_nce(a, b, temperature=0.1)
    shuffled = info_nce(a, b[torch.randperm(32)], temperature=0.1)
    assert aligned < 0.1 < shuffled
    # uninformative tokens (all equal) give log N
    torch.testing.assert_close(info_nce(torch.ones(8, 4), torch.ones(8, 4), 0.5), torch.tensor(np.log(8.0),
                                                                                                dtype=torch.float32))


def test_reconstruction_counts_only_masked_patches():
    x = torch.randn(2, 1, 8, 8, 12)
    visible, masked = draw_shared_mask(2, x.shape[2:], PATCH, 0.5)
    target = normalised_targets(x, masked, PATCH, eps=1e-6)
    pred = torch.randn_like(x, requires_grad=True)
    loss = masked_reconstruction_loss(pred, target, masked, PATCH)
    loss.backward()
    # changing the prediction on visible patches leaves the loss unchanged ...
    changed = patchify(pred.detach(), PATCH)
    for b in range(2):
        changed[b, visible[b]] += 100.0
    changed = unpatchify(changed, PATCH, x.shape[2:])
    torch.testing.assert_close(masked_reconstruction_loss(changed, target, masked, PATCH), loss.detach())
    # ... and visible voxels receive no gradient, while masked ones do
    grads = patchify(pred.grad, PATCH)
    for b in range(2):
        assert grads[b, visible[b]].abs().max() == 0 and grads[b, masked[b]].abs().min() > 0
    # a perfect prediction of the normalised masked patches has zero loss
    perfect = torch.zeros(2, 12, 64)
    for b in range(2):
        perfect[b, masked[b]] = target[b]
    assert masked_reconstruction_loss(unpatchify(perfect, PATCH, x.shape[2:]), target, masked, PATCH) == 0


def test_targets_are_normalised_per_patch():
    x = 5.0 + 3.0 * torch.randn(1, 1, 8, 8, 8)
    _, masked = draw_shared_mask(1, x.shape[2:], PATCH, 0.75)
    target = normalised_targets(x, masked, PATCH, eps=1e-6)
    assert target.shape == (1, 6, 64)
    torch.testing.assert_close(target.mean(-1), torch.zeros(1, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(target.std(-1, unbiased=False), torch.ones(1, 6), atol=1e-4, rtol=0)


def test_mask_token_fills_masked_patches_and_gets_gradient():
    x = torch.randn(2, 1, 8, 8, 8, requires_grad=True)
    token = torch.tensor([7.0], requires_grad=True)
    visible, masked = draw_shared_mask(2, x.shape[2:], PATCH, 0.75)
    filled = fill_masked(x, visible, PATCH, token)
    patches, original = patchify(filled, PATCH), patchify(x.detach(), PATCH)
    for b in range(2):
        assert (patches[b, masked[b]] == 7.0).all()
        assert torch.equal(patches[b, visible[b]], original[b, visible[b]])
    filled.sum().backward()
    assert token.grad.item() == masked.numel() * 64


def test_both_modalities_share_the_mask_and_everything_learns():
    model = _small_model()
    with torch.no_grad():
        model.mask_tokens["pet"].fill_(123.0)
        model.mask_tokens["ct"].fill_(-77.0)
    seen = {}
    for name in ("pet_encoder", "ct_encoder"):
        getattr(model, name).register_forward_hook(
            lambda module, args, out, name=name: seen.__setitem__(name, args[0].detach()))
    x = torch.randn(2, 2, *CROP)
    visible, masked = draw_shared_mask(2, CROP, PATCH, 0.7)
    model(x[:, :1], x[:, 1:], visible, masked)["loss"].backward()
    pet_hidden = (patchify(seen["pet_encoder"], PATCH) == 123.0).all(-1)
    ct_hidden = (patchify(seen["ct_encoder"], PATCH) == -77.0).all(-1)
    expected = torch.zeros_like(pet_hidden).scatter_(1, masked, True)
    assert torch.equal(pet_hidden, expected) and torch.equal(ct_hidden, expected)
    for modality in ("pet", "ct"):
        grad = model.mask_tokens[modality].grad
        assert grad is not None and grad.abs().item() > 0
    # every encoder weight is trained, the deepest stage included
    untrained = [name for name, p in model.named_parameters()
                 if name.split(".")[0] in ("pet_encoder", "ct_encoder") and (p.grad is None or not p.grad.any())]
    assert not untrained


@pytest.mark.parametrize("switch, removed", [
    ("intra", {"pet_from_pet", "ct_from_ct"}),
    ("cross", {"ct_from_pet", "pet_from_ct"}),
    ("align", {"align"}),
], ids=["no-intra", "no-cross", "no-align"])
def test_each_loss_switch_turns_its_term_off(switch, removed):
    every = {"pet_from_pet", "ct_from_ct", "ct_from_pet", "pet_from_ct", "align"}
    x = torch.randn(2, 2, *CROP)
    visible, masked = draw_shared_mask(2, CROP, PATCH, 0.7)
    torch.manual_seed(0)
    full = _small_model()(x[:, :1], x[:, 1:], visible, masked)
    torch.manual_seed(0)
    model = _small_model(**{switch: False})
    terms = model(x[:, :1], x[:, 1:], visible, masked)
    assert set(terms) - {"loss"} == every - removed
    assert not removed & set(model.decoders) and (switch != "align" or not model.projections)
    kept = sum(terms[name] for name in every - removed)
    torch.testing.assert_close(terms["loss"], kept)
    assert terms["loss"] < full["loss"]


def test_config_refuses_all_losses_off_bad_crops_and_encoderless_networks():
    with pytest.raises(ConfigError, match="every pretraining loss is switched off"):
        PretrainConfig.from_dict({"loss": {"intra": False, "cross": False, "align": False}}).validate()
    with pytest.raises(ConfigError, match="mask.ratio"):
        PretrainConfig.from_dict({"mask": {"ratio": 1.0}}).validate()
    small = {"model": {"net": SMALL_NET}}
    with pytest.raises(ConfigError, match="network divisor 4"):
        PretrainConfig.from_dict({**small, "crop": {"size": (16, 16, 18)}}).validate()
    with pytest.raises(ConfigError, match=r"must divide the crop \(16, 16, 20\); cannot divide X=20 by 8"):
        PretrainConfig.from_dict({**small, "crop": {"size": (16, 16, 20)}, "mask": {"patch_size": (8, 8, 8)}}
                                 ).validate()
    with pytest.raises(ConfigError, match="'unet' has none"):
        PretrainConfig.from_dict({"model": {"arch": "unet"}}).validate()
    odd = torch.zeros(1, 1, 16, 16, 18)  # the model checks its input too
    with pytest.raises(ConfigError, match="network divisor 4"):
        _small_model()(odd, odd, torch.zeros(1, 1, dtype=torch.int64), torch.ones(1, 1, dtype=torch.int64))


def test_tiny_run_lowers_the_loss_and_its_encoders_load_into_stage3(tmp_path):
    config = PretrainConfig.from_dict({
        "model": {"net": SMALL_NET}, "crop": {"size": CROP}, "mask": {"patch_size": PATCH, "ratio": 0.6},
        "augment": NO_AUGMENT, "optim": {"lr": 3e-3, "warmup_steps": 2},
        "train": {"steps": 30, "batch_size": 2, "log_every": 10}})
    result = pretrain_volumes(config, [_volume(0)], tmp_path, progress=False)
    first, last = result.losses[0], result.losses[-1]
    assert [row["step"] for row in result.losses] == [10, 20, 30]
    reconstruction = ("pet_from_pet", "ct_from_ct", "ct_from_pet", "pet_from_ct")
    assert last["loss"] < 0.9 * first["loss"] and last["align"] < first["align"]
    assert sum(last[t] for t in reconstruction) < sum(first[t] for t in reconstruction)
    with open(result.log) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["step"] for r in rows] == ["10", "20", "30"] and float(rows[-1]["pet_from_ct"]) > 0

    raw = torch.load(result.checkpoint, weights_only=True)
    assert raw["kind"] == "encoders" and raw["meta"]["net"]["widths"] == [4, 8] and raw["meta"]["step"] == 30
    net = build_network("anatoseg", net_config(ModelConfig(net=SMALL_NET)))
    load_encoders(net, result.checkpoint)
    for name in ("pet_encoder", "ct_encoder"):
        ours, theirs = getattr(result.model, name).state_dict(), getattr(net, name).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)

    other = build_network("anatoseg", net_config(ModelConfig(net={**SMALL_NET, "widths": [4, 12]})))
    with pytest.raises(ConfigError, match=r"widths: \(4, 8\) in the encoder checkpoint, \(4, 12\) here"):
        load_encoders(other, result.checkpoint)
    with pytest.raises(ConfigError, match="stage3"):
        load_checkpoint(result.checkpoint, kind="stage3")


def test_pretrain_command_on_a_phantom_case(tmp_path):
    data = generate_cohort(tmp_path / "data", cases=1, seed=3, spacing=10.0, progress=False)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "pretrain", str(data), str(run), "--steps", "2", "--crop-size", "16,16,16", "--mask-patch", "8,8,8",
        "--no-cross", "--set", f"model.net={SMALL_NET}", "--set", "augment.affine_prob=0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "encoders written to" in result.output and "ct_from_pet" not in result.output
    assert (run / "fingerprint.json").is_file() and (run / "config.yaml").is_file()
    meta = load_checkpoint(run / "encoders.pt", kind="encoders")["meta"]
    assert meta["config"]["loss"]["cross"] is False and meta["mask_patch"] == [8, 8, 8]
    with open(run / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[-1]["ct_from_pet"] == "" and float(rows[-1]["align"]) > 0


def test_pretrain_command_reports_a_bad_config_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["anato", "pretrain", str(tmp_path), str(tmp_path / "run"),
                                      "--no-intra", "--no-cross", "--no-align"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: every pretraining loss is switched off (loss.intra, loss.cross, loss.align); keep at least one"]
    assert not (tmp_path / "run").exists()
