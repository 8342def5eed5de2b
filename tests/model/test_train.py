"""Stage-3 training parts: config resolution, patch sampling, loss/schedule, checkpoints, --init."""

import json

import numpy as np
import pytest
import torch

from anatoseg.checkpoint import (
    encoder_checkpoint,
    load_checkpoint,
    load_encoders,
    make_checkpoint,
    save_checkpoint,
)
from anatoseg.config import AugmentConfig, LossConfig
from anatoseg.configbase import apply_overrides, load_file, merge
from anatoseg.errors import AnatoError, ConfigError
from anatoseg.nets import NetConfig, build_network
from anatoseg.stage3.config import PATCH_VOXEL_BUDGET, Config, defaults_from_fingerprint
from anatoseg.stage3.run import resolve_config
from anatoseg.training.cache import split_cases
from anatoseg.training.network import net_config
from anatoseg.training.optim import LRSchedule, make_loss
from anatoseg.training.sampling import PatchBatches, TrainVolume

pytestmark = pytest.mark.usefixtures("one_thread")


FINGERPRINT = {"median_spacing": [3.0, 2.04, 2.04], "median_body_shape": [326, 250, 380],  # (Z, Y, X)
               "median_shape": [326, 400, 400]}


def test_overrides_are_typed_and_checked():
    config = apply_overrides(Config(), ["optim.lr=3e-4", "train.steps=20", "data.patch_size=32,48,64",
                                        "train.amp=false", "model.net.widths=[4, 8, 16, 32]",
                                        "model.net.use_prompts=false", "data.val_cases=none"])
    assert config.optim.lr == pytest.approx(3e-4) and isinstance(config.optim.lr, float)
    assert config.train.steps == 20 and config.data.patch_size == (32, 48, 64) and config.train.amp is False
    assert config.model.net == {"widths": [4, 8, 16, 32], "use_prompts": False}
    assert net_config(config.model).widths == (4, 8, 16, 32)
    for bad, words in [("optim.lr=fast", "optim.lr"), ("train.steps=2.5", "train.steps"),
                       ("train.stepz=3", "unknown config key 'train.stepz'"), ("steps", "section.key=value"),
                       ("data.patch_size=32,32", "data.patch_size")]:
        with pytest.raises(ConfigError, match=words):
            apply_overrides(Config(), [bad])
    with pytest.raises(ConfigError, match="optim.name"):
        apply_overrides(Config(), ["optim.name=adam"]).validate()
    with pytest.raises(ConfigError, match="unknown network config keys"):
        net_config(apply_overrides(Config(), ["model.net.depth=3"]).model)


def test_config_file_and_round_trip(tmp_path):
    (tmp_path / "run.yaml").write_text("optim: {name: sgd, schedule: cosine}\ntrain: {steps: 7}\n")
    config = merge(Config(), load_file(tmp_path / "run.yaml"))
    assert (config.optim.name, config.optim.learning_rate, config.train.steps) == ("sgd", 1e-2, 7)
    assert Config.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_file(tmp_path / "bad.json")


def test_fingerprint_defaults_follow_the_data_and_the_network():
    for preset in ("tiny", "base"):
        patch = defaults_from_fingerprint(FINGERPRINT, preset, 16)["data"]["patch_size"]
        assert all(p % 16 == 0 and p > 0 for p in patch)
        assert np.prod(patch) <= PATCH_VOXEL_BUDGET[preset]
        assert np.prod(patch) > PATCH_VOXEL_BUDGET[preset] / 3
    assert defaults_from_fingerprint(FINGERPRINT)["data"]["spacing"] == [3.0, 2.04, 2.04]  # (Z, Y, X)
    small = {"median_spacing": [8.0, 8.0, 8.0], "median_body_shape": [70, 30, 40]}
    assert defaults_from_fingerprint(small, "tiny", 16)["data"]["patch_size"] == [64, 16, 32]
    # Precedence: fingerprint < file < overrides; the divisor follows the chosen architecture.
    config = resolve_config(FINGERPRINT, overrides=["model.arch=unet", "train.steps=3"])
    assert config.model.arch == "unet" and config.train.steps == 3 and config.data.spacing == (3.0, 2.04, 2.04)
    config = resolve_config(FINGERPRINT, overrides=["data.patch_size=32,32,32"])
    assert config.data.patch_size == (32, 32, 32)


def test_split_is_seeded_and_holds_out_cases():
    ids = [f"c{i}" for i in range(10)]
    train, val = split_cases(ids, Config().data, seed=0)
    assert len(val) == 2 and sorted(train + val) == ids
    assert split_cases(ids, Config().data, seed=0) == (train, val)
    assert split_cases(ids[:2], Config().data, seed=0)[1] != []
    with pytest.raises(ConfigError):
        split_cases(ids[:2], merge(Config(), {"data": {"val_cases": 2}}).data, seed=0)


def _volume(seed=0, shape=(40, 36, 44)):
    rng = np.random.default_rng(seed)
    label = np.zeros(shape, np.uint8)
    label[-10:-7, 5:8, -8:-4] = 1  # one lesion near a corner ...
    label[shape[0] // 2, shape[1] // 2, shape[2] // 2] = 1  # ... and a one-voxel lesion
    return TrainVolume("v", rng.normal(size=(2, *shape)).astype(np.float32), label,
                       rng.integers(0, 15, shape).astype(np.uint8))


NO_AUGMENT = AugmentConfig(**{name: 0.0 for name in vars(AugmentConfig()) if name.endswith("_prob")})


def test_batches_depend_only_on_seed_and_step():
    volume = _volume()
    kwargs = dict(batch_size=4, lesion_fraction=1 / 3, augment=AugmentConfig(affine_prob=0.5), seed=3,
                  use_organs=True, steps=10)
    whole = PatchBatches([volume], (16, 16, 16), **kwargs)
    first = whole[5]
    assert first["image"].shape == (4, 2, 16, 16, 16) and first["label"].shape == (4, 1, 16, 16, 16)
    assert first["organs"].dtype == torch.int64 and first["organs"].shape == (4, 16, 16, 16)
    again = PatchBatches([volume], (16, 16, 16), **kwargs)[5]
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not torch.equal(first["image"], whole[6]["image"])
    # Two DDP ranks hold the two halves of the same global batch.
    halves = [PatchBatches([volume], (16, 16, 16), rank=r, world_size=2, **kwargs)[5] for r in (0, 1)]
    for key in first:
        assert torch.equal(torch.cat([h[key] for h in halves]), first[key])


def test_about_a_third_of_patches_are_centred_on_lesions():
    volume = _volume(shape=(64, 64, 64))
    batches = PatchBatches([volume], (16, 16, 16), batch_size=8, lesion_fraction=1 / 3, augment=NO_AUGMENT,
                           seed=0, use_organs=False, steps=100)
    labels = torch.cat([batches[s]["label"] for s in range(40)])
    hits = (labels.sum((1, 2, 3, 4)) > 0).float()
    # Random crops of a 64³ volume seldom touch the two small lesions; centred ones always do.
    assert 0.25 < hits.mean() < 0.42
    small = labels.sum((1, 2, 3, 4)) == 1
    assert small.sum() > 0.3 * hits.sum()  # the one-voxel lesion is sampled as often as the big one, not by voxel count


def test_every_batch_holds_its_share_of_lesion_patches():
    volume = _volume(shape=(64, 64, 64))
    batches = PatchBatches([volume], (16, 16, 16), batch_size=2, lesion_fraction=1 / 3, augment=NO_AUGMENT,
                           seed=0, use_organs=False, steps=30)
    for step in range(30):  # as nnU-Net: the second of two samples is always centred on a lesion
        assert batches[step]["label"][1].sum() > 0
    single = PatchBatches([volume], (16, 16, 16), batch_size=1, lesion_fraction=0.5, augment=NO_AUGMENT,
                          seed=0, use_organs=False, steps=60)
    hits = sum(bool(single[step]["label"].sum() > 0) for step in range(60))
    assert 15 < hits < 45  # a batch of one draws with probability lesion_fraction


def test_small_volumes_are_padded_to_the_patch():
    volume = _volume(shape=(10, 40, 12))
    batch = PatchBatches([volume], (16, 16, 16), batch_size=2, lesion_fraction=1.0, augment=NO_AUGMENT,
                         seed=0, use_organs=True, steps=1)[0]
    assert batch["image"].shape == (2, 2, 16, 16, 16)
    assert torch.equal(batch["image"][:, :, 10:], batch["image"][:, :, 9:10].expand(-1, -1, 6, -1, -1))


def test_loss_and_schedule():
    loss = make_loss(Config().loss)
    label = torch.zeros(2, 1, 16, 16, 16)
    label[:, :, 4:12, 4:12, 4:12] = 1
    perfect = torch.cat([-10 * (label * 2 - 1), 10 * (label * 2 - 1)], 1)
    assert loss(perfect, label) < 0.01 < loss(-perfect, label)
    all_background = torch.cat([torch.full_like(label, 10.0), torch.full_like(label, -10.0)], 1)
    dice_term = make_loss(LossConfig(ce_weight=0.0))
    assert dice_term(all_background, label) == pytest.approx(1.0, abs=1e-3)  # the lesion Dice alone, no background
    levels = [perfect, perfect[:, :, ::2, ::2, ::2], perfect[:, :, ::4, ::4, ::4]]
    assert loss(levels, label) < 0.02 < loss([perfect, -levels[1], levels[2]], label)
    poly, cosine = LRSchedule("poly", 100, 10), LRSchedule("cosine", 100)
    assert poly(0) == pytest.approx(0.1) and poly(9) == pytest.approx(1.0) and poly(100) == 0.0
    assert cosine(50) == pytest.approx(0.5) and LRSchedule("constant", 5)(4) == 1.0


def test_checkpoints_are_atomic_and_weights_only(tmp_path):
    path = tmp_path / "run" / "c.pt"
    save_checkpoint(path, make_checkpoint("stage3", {"arch": "unet", "net": {}}, model={"w": torch.ones(2)}))
    assert [p.name for p in path.parent.iterdir()] == ["c.pt"]
    assert torch.equal(load_checkpoint(path, kind="stage3")["model"]["w"], torch.ones(2))
    with pytest.raises(ConfigError, match="expected 'encoders'"):
        load_checkpoint(path, kind="encoders")
    torch.save({"state": torch.zeros(1)}, tmp_path / "foreign.pt")
    with pytest.raises(ConfigError, match="not an anatoseg checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    (tmp_path / "broken.pt").write_bytes(path.read_bytes()[:100])
    with pytest.raises(AnatoError, match="checkpoint is empty or truncated"):
        load_checkpoint(tmp_path / "broken.pt")
    # An object that unpickles through code (here a pathlib class) is refused by weights_only.
    torch.save({"format": "anatoseg", "version": 1, "x": tmp_path}, tmp_path / "code.pt")
    with pytest.raises(AnatoError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "code.pt")


def test_init_loads_encoders_and_refuses_other_architectures(tmp_path):
    tiny = NetConfig.preset("tiny")
    source = build_network("anatoseg", tiny)
    save_checkpoint(tmp_path / "enc.pt", encoder_checkpoint(source, "anatoseg", tiny))
    target = build_network("anatoseg", tiny)
    load_encoders(target, tmp_path / "enc.pt")
    for name in ("pet_encoder", "ct_encoder"):
        for a, b in zip(getattr(source, name).state_dict().values(), getattr(target, name).state_dict().values()):
            assert torch.equal(a, b)
    wider = NetConfig.preset("tiny", widths=(16, 32, 64, 128))
    with pytest.raises(ConfigError, match="widths"):
        load_encoders(build_network("anatoseg", wider), tmp_path / "enc.pt")
    with pytest.raises(ConfigError, match="no PET/CT modality encoders"):
        load_encoders(build_network("unet", tiny), tmp_path / "enc.pt")
