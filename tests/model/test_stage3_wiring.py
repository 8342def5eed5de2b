"""Stage 3's wiring of the auxiliary organ head loss, the organ-prompt corruption and the check of a stage-2
checkpoint's preprocessing (``--init``)."""

import csv
import dataclasses
import math

import numpy as np
import pytest
import torch

from anatoseg.checkpoint import encoder_checkpoint, load_checkpoint, save_checkpoint
from anatoseg.cli.train_command import ARCH_HELP
from anatoseg.config import AugmentConfig
from anatoseg.configbase import apply_overrides
from anatoseg.data.phantom import generate_cohort
from anatoseg.errors import ConfigError
from anatoseg.nets import ARCHITECTURES, NetConfig, build_network
from anatoseg.stage2.config import PretrainConfig
from anatoseg.stage3.config import Config
from anatoseg.stage3.run import run_train
from anatoseg.training import rng
from anatoseg.training.network import build_model
from anatoseg.training.organ_corruption import OrganCorruptionConfig
from anatoseg.training.sampling import PatchBatches, TrainVolume

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ["model.preset=tiny", "data.patch_size=32,32,32", "train.batch_size=2", "train.steps=2",
            "train.log_every=1", "data.val_cases=0"]
AUX = [*SETTINGS, "model.arch=anatoseg_organ_aux", "model.net.deep_supervision=false"]
OFF = OrganCorruptionConfig(drop_prob=0.0, morph_prob=0.0, shift_prob=0.0)
STRONG = OrganCorruptionConfig(drop_prob=0.3, morph_prob=0.5, shift_prob=0.5)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return generate_cohort(tmp_path_factory.mktemp("phantom") / "data", cases=2, seed=0, spacing=8.0,
                           progress=False)


@pytest.fixture(scope="module")
def aux_run(cohort, tmp_path_factory):
    """A two-step ``anatoseg_organ_aux`` run: its folder."""
    out = tmp_path_factory.mktemp("aux") / "run"
    run_train(cohort, out, overrides=AUX, device="cpu", progress=False)
    return out


def _first_loss(folder) -> float:
    with open(folder / "log.csv") as handle:
        return float(next(csv.DictReader(handle))["loss"])


def test_the_organ_head_trains_on_the_organ_map(cohort, aux_run, tmp_path):
    checkpoint = load_checkpoint(aux_run / "model.pt", kind="stage3")
    config = Config.from_dict(checkpoint["meta"]["config"])
    rng.seed_everything(config.seed)  # the run's initial weights, as the loop builds them
    initial, _ = build_model(config.model, tuple(config.data.patch_size))
    assert initial.organ_aux and not initial.uses_prompts
    heads = {k: v for k, v in initial.state_dict().items() if k.startswith("organ_head.")}
    assert heads and all(not torch.equal(v, checkpoint["model"][k]) for k, v in heads.items())
    # Same first batch and weights without the auxiliary term: the logged loss drops by the organ
    # cross-entropy, about log(num_organs + 1) for a freshly initialised head.
    run_train(cohort, tmp_path / "no_aux", overrides=[*AUX, "loss.organ_aux_weight=0"], device="cpu",
              progress=False, fingerprint=aux_run / "fingerprint.json")
    organ_ce = _first_loss(aux_run) - _first_loss(tmp_path / "no_aux")
    assert organ_ce == pytest.approx(math.log(initial.config.num_organs + 1), rel=0.3)


def test_organ_aux_weight_and_corruption_are_checked():
    with pytest.raises(ConfigError, match="organ_aux_weight -1"):
        apply_overrides(Config(), ["loss.organ_aux_weight=-1"]).validate()
    with pytest.raises(ConfigError, match=r"augment\.organ_corruption\.drop_prob must lie in \[0, 1\]"):
        apply_overrides(Config(), ["augment.organ_corruption.drop_prob=2"]).validate()
    config = apply_overrides(Config(), ["augment.organ_corruption.shift_max=5"]).validate()
    assert config.augment.organ_corruption.shift_max == 5 and Config.from_dict(config.to_dict()) == config
    # Stage 2 shares the augment section: its config still validates and round-trips.
    pretrain = PretrainConfig().validate()
    assert PretrainConfig.from_dict(pretrain.to_dict()) == pretrain


def _volume(shape=(40, 36, 44)) -> TrainVolume:
    generator = np.random.default_rng(0)
    label = np.zeros(shape, np.uint8)
    label[20:24, 10:14, 20:25] = 1
    organs = np.zeros(shape, np.uint8)
    organs[2:20, 4:30, 6:40] = 5
    organs[22:38, 12:34, 2:20] = 7
    organs[10:30, 2:12, 24:42] = 12
    return TrainVolume("v", generator.normal(size=(2, *shape)).astype(np.float32), label, organs)


def _batches(volume, corruption, *, prompts=True, augment=None, seed=3) -> PatchBatches:
    augment = dataclasses.replace(augment or AugmentConfig(), organ_corruption=corruption)
    return PatchBatches([volume], (16, 16, 16), batch_size=4, lesion_fraction=0.25, augment=augment, seed=seed,
                        use_organs=True, steps=20, organ_prompts=prompts)


def test_prompt_corruption_changes_the_organ_map_alone():
    volume = _volume()
    clean, corrupted = _batches(volume, OFF), _batches(volume, STRONG)
    changed = 0
    for step in range(8):
        a, b = clean[step], corrupted[step]
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["label"], b["label"])
        changed += int((a["organs"] != b["organs"]).flatten(1).any(1).sum())
        again = _batches(volume, STRONG)[step]  # a function of (seed, step)
        assert all(torch.equal(b[key], again[key]) for key in b)
    assert 0 < changed < 32  # some of the 32 patches, not all
    # Without augmentation the clean batch holds the crops themselves.
    no_augment = AugmentConfig(**{name: 0.0 for name in vars(AugmentConfig()) if name.endswith("_prob")})
    plain = _batches(volume, OFF, augment=no_augment)[0]
    assert set(torch.unique(plain["organs"]).tolist()) <= {0, 5, 7, 12}


def test_an_organ_map_that_is_no_prompt_is_never_corrupted():
    volume = _volume()
    target, clean = _batches(volume, STRONG, prompts=False), _batches(volume, OFF)
    for step in range(4):
        assert all(torch.equal(target[step][key], clean[step][key]) for key in clean[step])
    with pytest.raises(ValueError, match="organ_prompts needs use_organs"):
        PatchBatches([volume], (16, 16, 16), batch_size=2, lesion_fraction=0.5, augment=AugmentConfig(), seed=0,
                     use_organs=False, steps=1, organ_prompts=True)


def _encoders(path, preprocessing):
    tiny = NetConfig.preset("tiny")
    save_checkpoint(path, encoder_checkpoint(build_network("anatoseg", tiny), "anatoseg", tiny,
                                             preprocessing=preprocessing))
    return path


def test_init_refuses_encoders_pretrained_at_another_spacing(cohort, aux_run, tmp_path, capsys):
    ours = load_checkpoint(aux_run / "model.pt", kind="stage3")["meta"]["preprocessing"]
    other = _encoders(tmp_path / "other.pt", {**ours, "target_spacing": [4.0, 4.0, 4.0]})
    kwargs = dict(device="cpu", progress=False, fingerprint=aux_run / "fingerprint.json")
    with pytest.raises(ConfigError, match=r"target spacing \(Z, Y, X mm\): \[4, 4, 4\] in stage 2, \[8, 8, 8\] "
                                          r"here.*allow_preprocessing_mismatch"):
        run_train(cohort, tmp_path / "refused", overrides=SETTINGS, init=other, **kwargs)
    capsys.readouterr()
    run_train(cohort, tmp_path / "allowed", overrides=[*SETTINGS, "train.allow_preprocessing_mismatch=true"],
              init=other, stop_at=1, **kwargs)
    assert "warning: --init" in capsys.readouterr().err
    same = _encoders(tmp_path / "same.pt", ours)
    run_train(cohort, tmp_path / "same", overrides=SETTINGS, init=same, stop_at=1, **kwargs)
    assert "warning" not in capsys.readouterr().err
    # Encoders pretrained on volumes given directly record no preprocessing: not checkable, a warning.
    unknown = _encoders(tmp_path / "unknown.pt", None)
    run_train(cohort, tmp_path / "unknown", overrides=SETTINGS, init=unknown, stop_at=1, **kwargs)
    assert "records no preprocessing" in capsys.readouterr().err


def test_arch_help_names_every_architecture():
    assert all(arch in ARCH_HELP for arch in ARCHITECTURES)
