"""The shared config base: one round trip, one override syntax, one precedence, the axis order on record."""

import json

import pytest
import torch

from anatoseg.checkpoint import load_checkpoint, make_checkpoint, save_checkpoint
from anatoseg.cli.options import option_overrides
from anatoseg.configbase import ConfigBase, OptimConfig
from anatoseg.errors import ConfigError
from anatoseg.stage1.config import Stage1Config
from anatoseg.stage2.config import PretrainConfig
from anatoseg.stage3.config import Config

STAGES = [Config, PretrainConfig, Stage1Config]


@pytest.mark.parametrize("stage", STAGES, ids=lambda c: c.__name__)
def test_every_stage_round_trips_and_records_seed_and_axes(stage, tmp_path):
    config = stage.build(overrides=["seed=7"])
    values = config.to_dict()
    assert values["seed"] == 7 and values["axes"] == "zyx"
    assert stage.from_dict(json.loads(json.dumps(values))) == config
    (tmp_path / "run.yaml").write_text("axes: zyx\nseed: 3\n")
    # Precedence: defaults < file < overrides.
    assert stage.build(tmp_path / "run.yaml").seed == 3
    assert stage.build(tmp_path / "run.yaml", ["seed=4"]).seed == 4
    with pytest.raises(ConfigError, match="axes 'xyz'"):
        stage.from_dict({**values, "axes": "xyz"})
    (tmp_path / "old.yaml").write_text("axes: xyz\n")
    with pytest.raises(ConfigError, match="axes 'xyz'.*\\(Z, Y, X\\)"):
        stage.build(tmp_path / "old.yaml")
    with pytest.raises(ConfigError, match="unknown config key 'nope'"):
        stage.build(overrides=["nope=1"])


def test_stage1_sizes_in_a_file_need_the_axis_order(tmp_path):
    (tmp_path / "old.yaml").write_text("data: {patch_size: [32, 48, 64]}\n")
    with pytest.raises(ConfigError, match="data.patch_size without 'axes: zyx'"):
        Stage1Config.build(tmp_path / "old.yaml")
    (tmp_path / "new.yaml").write_text("axes: zyx\ndata: {patch_size: [32, 48, 64]}\n")
    assert Stage1Config.build(tmp_path / "new.yaml").data.patch_size == (32, 48, 64)
    (tmp_path / "steps.yaml").write_text("teacher: {steps: 5}\n")  # no per-axis value: no axes needed
    assert Stage1Config.build(tmp_path / "steps.yaml").teacher.steps == 5


def test_optimiser_sections_are_one_type_validated_everywhere():
    config = Stage1Config()
    assert isinstance(config.teacher, OptimConfig) and isinstance(config.student, OptimConfig)
    assert (config.teacher.learning_rate, config.teacher.schedule, config.teacher.grad_clip) == (5e-3, "cosine", None)
    for stage, key in [(Config, "optim"), (PretrainConfig, "optim"), (Stage1Config, "teacher"),
                       (Stage1Config, "student")]:
        with pytest.raises(ConfigError, match=f"{key}.name must be one of adamw, sgd"):
            stage.build(overrides=[f"{key}.name=adam"])
        with pytest.raises(ConfigError, match=f"{key}.schedule"):
            stage.build(overrides=[f"{key}.schedule=step"])


def test_shared_cli_options_set_each_stage_s_keys():
    assert option_overrides(Config, ["optim.lr=1"], [("model.arch", "unet"), ("data.patch_size", None)],
                            steps=5, seed=2) == ["optim.lr=1", "model.arch=unet", "train.steps=5", "seed=2"]
    stage1 = option_overrides(Stage1Config, None, steps=4, lr=0.1, batch_size=3)
    config = Stage1Config.build(overrides=stage1)
    assert (config.teacher.steps, config.student.steps, config.data.batch_size) == (4, 4, 3)
    assert config.teacher.lr == config.student.lr == 0.1
    assert PretrainConfig.build(overrides=option_overrides(PretrainConfig, None, batch_size=3)).train.batch_size == 3


def test_dict_fields_take_one_entry_per_override():
    config = Config.build(overrides=["model.net.widths=[4, 8, 16, 32]", "model.net.use_prompts=false"])
    assert config.model.net == {"widths": [4, 8, 16, 32], "use_prompts": False}
    assert issubclass(Config, ConfigBase)


@pytest.mark.parametrize("kind", ["stage3", "encoders"])
def test_checkpoints_without_the_axis_order_are_refused(kind, tmp_path):
    checkpoint = make_checkpoint(kind, {"patch_size": [32, 64, 64]}, model={"w": torch.zeros(1)})
    assert checkpoint["meta"]["axes"] == "zyx"
    save_checkpoint(tmp_path / "new.pt", checkpoint)
    assert load_checkpoint(tmp_path / "new.pt", kind=kind)["meta"]["patch_size"] == [32, 64, 64]
    del checkpoint["meta"]["axes"]
    save_checkpoint(tmp_path / "old.pt", checkpoint)
    with pytest.raises(ConfigError, match=r"checkpoint does not record its axis order \('axes': 'zyx'\)"):
        load_checkpoint(tmp_path / "old.pt", kind=kind)


def test_stage1_models_without_the_axis_order_are_refused(tmp_path):
    from anatoseg.data.labels import NUM_ORGANS
    from anatoseg.stage1.data import make_preprocessing
    from anatoseg.stage1.model import load_organ_model, save_organ_model
    from anatoseg.stage1.net import OrganUNet

    config = Stage1Config.build(overrides=["widths=4,4,4,4"])
    path = save_organ_model(tmp_path / "stage1.pt", OrganUNet(5, NUM_ORGANS + 1, config.widths), config,
                            make_preprocessing(config.data.spacing))
    assert load_organ_model(path).patch_size == (48, 48, 48)
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["meta"]["axes"]
    torch.save(checkpoint, tmp_path / "old.pt")
    with pytest.raises(ConfigError, match="written by an older anatoseg"):
        load_organ_model(tmp_path / "old.pt")
