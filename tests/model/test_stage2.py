"""Stage 2 (``anato pretrain``): the model's masks, decoders and alignment, switches, config, a tiny run,
the CLI and the stage-3 hand-over (parts: test_stage2_parts.py; the shortcut diagnostic: test_stage2_shortcut.py)."""

import csv
import sys

import numpy as np
import pytest
import torch
from scipy import ndimage
from typer.testing import CliRunner

from anatokernels import patchify
from anatoseg.checkpoint import load_checkpoint, load_encoders
from anatoseg.cli import app, main
from anatoseg.config import ModelConfig
from anatoseg.data.fingerprint import load_fingerprint
from anatoseg.data.phantom import generate_cohort
from anatoseg.errors import ConfigError
from anatoseg.nets import build_network
from anatoseg.stage2 import (
    ObjectiveConfig,
    PretrainConfig,
    PretrainModel,
    check_pretrained_preprocessing,
    draw_masks,
    info_nce,
    loop,
    masked_reconstruction_loss,
    normalised_targets,
    pet_targets,
    pretrain_volumes,
    visible_tokens,
)
from anatoseg.training.fingerprint import preprocessing_for
from anatoseg.training.network import net_config
from anatoseg.training.sampling import TrainVolume

# A two-stage network (divisor 4) keeps every model test well under a second.
SMALL_NET = {"widths": [4, 8], "stem_width": 4, "res_depths": [1, 1], "mamba_depths": [0, 1], "d_state": 4,
             "hcca_stages": [1], "num_heads": 2, "prompt_dim": 8, "hyper_hidden": 8, "rank": 2}
CROP, PATCH = (16, 16, 16), (4, 4, 4)
NO_AUGMENT = {name: 0.0 for name in ("flip_prob", "affine_prob", "intensity_prob", "gamma_prob", "contrast_prob",
                                     "noise_prob", "blur_prob", "lowres_prob", "misalign_prob")}


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


def _masks(batch: int, mode: str = "independent", seed: int = 0):
    return draw_masks(batch, CROP, PATCH, 0.7, mode, generator=torch.Generator().manual_seed(seed))


def test_each_modality_hides_its_own_mask_and_everything_learns():
    model = _small_model()
    with torch.no_grad():
        model.mask_tokens["pet"].fill_(123.0)
        model.mask_tokens["ct"].fill_(-77.0)
    seen = {}
    for name in ("pet_encoder", "ct_encoder"):
        getattr(model, name).register_forward_hook(
            lambda module, args, out, name=name: seen.__setitem__(name, args[0].detach()))
    x = torch.randn(2, 2, *CROP)
    masks = _masks(2)
    assert not torch.equal(masks["pet"][1], masks["ct"][1])
    model(x[:, :1], x[:, 1:], masks)["loss"].backward()
    for modality, fill in (("pet", 123.0), ("ct", -77.0)):
        hidden = (patchify(seen[f"{modality}_encoder"], PATCH) == fill).all(-1)
        assert torch.equal(hidden, torch.zeros_like(hidden).scatter_(1, masks[modality][1], True))
        grad = model.mask_tokens[modality].grad
        assert grad is not None and grad.abs().item() > 0
    # every encoder weight is trained, the deepest stage included
    untrained = [name for name, p in model.named_parameters()
                 if name.split(".")[0] in ("pet_encoder", "ct_encoder") and (p.grad is None or not p.grad.any())]
    assert not untrained


def test_one_decoder_per_target_modality_reads_either_latent():
    model = _small_model(align=False)
    assert set(model.decoders) == {"pet", "ct"}
    x, masks = torch.randn(2, 2, *CROP), _masks(2)
    terms = model(x[:, :1], x[:, 1:], masks)
    latents = model.latents(x[:, :1], x[:, 1:], masks)
    assert latents["pet"].shape == latents["ct"].shape == (2, model.objective.proj_dim, 4, 4, 4)
    for name, source, target in (("pet_from_pet", "pet", "pet"), ("pet_from_ct", "ct", "pet"),
                                 ("ct_from_ct", "ct", "ct"), ("ct_from_pet", "pet", "ct")):
        masked = masks[target][1]  # scored where the target modality's own encoder saw nothing
        image = x[:, :1] if target == "pet" else x[:, 1:]
        wanted = (pet_targets(image, masked, PATCH, "suv", eps=0.01) if target == "pet"
                  else normalised_targets(image, masked, PATCH, 0.01))
        expected = masked_reconstruction_loss(model.decoders[target](latents[source]), wanted, masked, PATCH)
        torch.testing.assert_close(terms[name], expected)


def test_alignment_reads_positions_visible_in_both_views_and_skips_near_negatives():
    model = _small_model(align_radius=0.0)
    masks = _masks(3, "independent", seed=1)
    both = visible_tokens(masks["pet"][1], CROP, PATCH, 4) & visible_tokens(masks["ct"][1], CROP, PATCH, 4)
    assert 0 < both.sum() < both.numel()
    latents = {m: torch.randn(3, 8, 4, 4, 4) for m in ("pet", "ct")}
    loss = model.alignment(latents, masks, CROP)
    elsewhere = {m: latents[m] + 50.0 * torch.randn_like(latents[m]) * ~both[:, None] for m in latents}
    torch.testing.assert_close(model.alignment(elsewhere, masks, CROP), loss)  # hidden positions do not count
    tokens = {m: latents[m].movedim(1, -1)[both] for m in latents}
    torch.testing.assert_close(loss, info_nce(tokens["pet"], tokens["ct"], 0.1))
    far = _small_model(align_radius=1e6)  # every same-sample token is near: only other samples are negatives
    sample = both.nonzero()[:, 0]
    exclude = (sample[:, None] == sample[None, :]) & ~torch.eye(len(sample), dtype=torch.bool)
    torch.testing.assert_close(far.alignment(latents, masks, CROP),
                               info_nce(tokens["pet"], tokens["ct"], 0.1, exclude))
    shared = _masks(3, "shared")
    nothing = {m: (shared[m][0][:, :0], torch.arange(64).expand(3, -1)) for m in shared}  # everything hidden
    assert model.alignment(latents, nothing, CROP) == 0


@pytest.mark.parametrize("switch, removed", [
    ("intra", {"pet_from_pet", "ct_from_ct"}),
    ("cross", {"ct_from_pet", "pet_from_ct"}),
    ("align", {"align"}),
], ids=["no-intra", "no-cross", "no-align"])
def test_each_loss_switch_turns_its_term_off(switch, removed):
    every = {"pet_from_pet", "ct_from_ct", "ct_from_pet", "pet_from_ct", "align"}
    x, masks = torch.randn(2, 2, *CROP), _masks(2)
    torch.manual_seed(0)
    full = _small_model()(x[:, :1], x[:, 1:], masks)
    torch.manual_seed(0)
    model = _small_model(**{switch: False})
    terms = model(x[:, :1], x[:, 1:], masks)
    assert set(terms) - {"loss"} == every - removed
    for name in every - removed - {"align"}:  # the decoders are those of both families
        torch.testing.assert_close(terms[name], full[name])
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
    with pytest.raises(ConfigError, match="mask.mode must be one of independent, complementary, shared"):
        PretrainConfig.from_dict({"mask": {"mode": "same"}}).validate()
    with pytest.raises(ConfigError, match="complementary masks leave none; set loss.align=false"):
        PretrainConfig.from_dict({"mask": {"mode": "complementary"}}).validate()
    PretrainConfig.from_dict({"mask": {"mode": "complementary"}, "loss": {"align": False}}).validate()
    with pytest.raises(ConfigError, match="loss.pet_target must be one of suv, log_suv, patch, got 'raw'"):
        PretrainConfig.from_dict({"loss": {"pet_target": "raw"}}).validate()
    with pytest.raises(ConfigError, match="loss.align_radius must be >= 0"):
        PretrainConfig.from_dict({"loss": {"align_radius": -1}}).validate()
    odd = torch.zeros(1, 1, 16, 16, 18)  # the model checks its input too
    one = (torch.zeros(1, 1, dtype=torch.int64), torch.ones(1, 1, dtype=torch.int64))
    with pytest.raises(ConfigError, match="network divisor 4"):
        _small_model()(odd, odd, {"pet": one, "ct": one})


def test_tiny_run_lowers_the_loss_and_its_encoders_load_into_stage3(tmp_path):
    config = PretrainConfig.from_dict({
        "model": {"net": SMALL_NET}, "crop": {"size": CROP}, "mask": {"patch_size": PATCH, "ratio": 0.6},
        "augment": NO_AUGMENT, "optim": {"lr": 3e-3, "warmup_steps": 2}, "loss": {"pet_target": "log_suv"},
        "train": {"steps": 30, "batch_size": 2, "log_every": 10}})
    with pytest.raises(ConfigError, match="log_suv recovers SUV with the run's preprocessing"):
        pretrain_volumes(config, [_volume(0)], tmp_path, progress=False)
    preprocessing = {"target_spacing": [2.0, 2.0, 2.0], "suv_mean": 1.0, "suv_std": 1.0}
    result = pretrain_volumes(config, [_volume(0)], tmp_path, preprocessing=preprocessing, progress=False)
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
    assert raw["meta"]["preprocessing"] == preprocessing and raw["meta"]["crop_size"] == [16, 16, 16]
    assert sorted(raw["encoders"]) == sorted(f"{name}.{key}" for name in ("pet_encoder", "ct_encoder")
                                             for key in getattr(result.model, name).state_dict())
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


def test_an_interrupted_run_resumes_exactly(tmp_path, monkeypatch):
    config = PretrainConfig.from_dict({
        "model": {"net": SMALL_NET}, "crop": {"size": CROP}, "mask": {"patch_size": PATCH}, "augment": NO_AUGMENT,
        "train": {"steps": 6, "batch_size": 2, "log_every": 2, "ckpt_every": 3}})
    volumes = [_volume(0), _volume(1)]
    whole = pretrain_volumes(config, volumes, tmp_path / "whole", progress=False)
    real = loop._step

    def killed_at_step_5(run, config, image):  # after the step-3 checkpoint and the step-4 log row
        if run.scheduler.last_epoch == 4:
            raise KeyboardInterrupt
        return real(run, config, image)

    monkeypatch.setattr(loop, "_step", killed_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        pretrain_volumes(config, volumes, tmp_path / "cut", progress=False)
    monkeypatch.setattr(loop, "_step", real)
    checkpoint = load_checkpoint(tmp_path / "cut" / "encoders.pt", kind="encoders")
    assert checkpoint["meta"]["step"] == 3
    with pytest.raises(ConfigError, match="--resume: the cases differ"):
        pretrain_volumes(config, volumes[:1], tmp_path / "cut", resume=checkpoint, progress=False)
    resumed = pretrain_volumes(config, volumes, tmp_path / "cut", resume=checkpoint, progress=False)
    ours, theirs = (torch.load(r.checkpoint, weights_only=True) for r in (resumed, whole))
    assert ours["encoders"].keys() == theirs["encoders"].keys()
    assert all(torch.equal(ours["encoders"][k], theirs["encoders"][k]) for k in ours["encoders"])
    logs = []
    for result in (resumed, whole):
        with open(result.log) as handle:
            logs.append([{k: v for k, v in row.items() if k != "seconds"} for row in csv.DictReader(handle)])
    assert logs[0] == logs[1] and [row["step"] for row in logs[0]] == ["2", "4", "6"]


def test_pretrain_command_on_a_phantom_case(tmp_path):
    data = generate_cohort(tmp_path / "data", cases=1, seed=3, spacing=10.0, progress=False)
    run = tmp_path / "run"
    result = CliRunner().invoke(app, [
        "pretrain", str(data), str(run), "--steps", "2", "--crop-size", "16,16,16", "--mask-patch", "8,8,8",
        "--mask-ratio", "0.5", "--mask-mode", "independent", "--pet-target", "log_suv", "--no-cross",
        "--set", f"model.net={SMALL_NET}", "--set", "augment.affine_prob=0", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "encoders written to" in result.output and "ct_from_pet" not in result.output
    assert (run / "fingerprint.json").is_file() and (run / "config.yaml").is_file()
    meta = load_checkpoint(run / "encoders.pt", kind="encoders")["meta"]
    assert meta["config"]["loss"]["cross"] is False and meta["mask_patch"] == [8, 8, 8]
    assert meta["config"]["mask"]["mode"] == "independent" and meta["config"]["loss"]["pet_target"] == "log_suv"
    stage3 = preprocessing_for(load_fingerprint(run / "fingerprint.json"), None).to_dict()
    assert check_pretrained_preprocessing(meta, stage3) == []
    finer = {**stage3, "target_spacing": tuple(s / 2 for s in stage3["target_spacing"])}
    assert [line.split(":")[0] for line in check_pretrained_preprocessing(meta, finer)] == [
        "target spacing (Z, Y, X mm)"]
    with open(run / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 2 and rows[-1]["ct_from_pet"] == "" and float(rows[-1]["align"]) > 0
    again = CliRunner().invoke(app, ["pretrain", str(data), str(run), "--resume", "--steps", "3", "--no-progress"])
    assert again.exit_code == 0, again.output
    assert again.output.startswith("step 3: ") and load_checkpoint(run / "encoders.pt")["meta"]["step"] == 3


def test_pretrain_command_reports_a_bad_config_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["anato", "pretrain", str(tmp_path), str(tmp_path / "run"),
                                      "--no-intra", "--no-cross", "--no-align"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: every pretraining loss is switched off (loss.intra, loss.cross, loss.align); keep at least one"]
    assert not (tmp_path / "run").exists()


def test_mask_patches_finer_than_the_deepest_stride_are_noted(tmp_path, capsys):
    settings = {"model": {"net": SMALL_NET}, "crop": {"size": CROP}, "augment": NO_AUGMENT,
                "train": {"steps": 1, "batch_size": 1}}
    pretrain_volumes(PretrainConfig.from_dict({**settings, "mask": {"patch_size": (2, 4, 4)}}), [_volume(0)],
                     tmp_path / "fine", progress=False)
    assert capsys.readouterr().err.strip() == (
        "note: mask patches (2, 4, 4) are finer than the network's deepest stride 4, so almost no position is "
        "visible in both views and loss.align stays near 0; use mask.patch_size >= 4 or loss.align=false")
    pretrain_volumes(PretrainConfig.from_dict({**settings, "mask": {"patch_size": PATCH}}), [_volume(0)],
                     tmp_path / "even", progress=False)
    assert capsys.readouterr().err == ""
