"""``--resume``: a run stopped and resumed ends bit-identical to a straight run; mismatched runs are refused."""

import csv
import shutil

import pytest
import torch

from anatoseg.checkpoint import encoder_checkpoint, load_checkpoint, save_checkpoint
from anatoseg.data.phantom import generate_cohort
from anatoseg.errors import AnatoError, ConfigError
from anatoseg.nets import NetConfig, build_network
from anatoseg.stage3.run import run_train

SETTINGS = ["model.preset=tiny", "data.patch_size=32,32,32", "train.batch_size=2", "train.steps=4",
            "train.ckpt_every=2", "train.log_every=1", "data.val_cases=0", "augment.affine_prob=0.5"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return generate_cohort(tmp_path_factory.mktemp("phantom") / "data", cases=2, seed=0, spacing=8.0,
                           progress=False)


def _train(data, out, **kwargs):
    return run_train(data, out, overrides=SETTINGS, device="cpu", progress=False, **kwargs)


def test_stop_and_resume_equals_straight_run(cohort, tmp_path):
    straight = _train(cohort, tmp_path / "straight")
    # The second run shares the fingerprint and the preprocessed cache; a crash after the step-2
    # checkpoint is simulated by stopping at step 3 and rolling the checkpoint back to step 2.
    shutil.copytree(tmp_path / "straight" / "preprocessed", tmp_path / "resumed" / "preprocessed")
    fingerprint = tmp_path / "straight" / "fingerprint.json"
    stopped = _train(cohort, tmp_path / "resumed", stop_at=2, fingerprint=fingerprint)
    assert stopped.model is None and stopped.step == 2
    shutil.copy(tmp_path / "resumed" / "checkpoint.pt", tmp_path / "step2.pt")
    _train(cohort, tmp_path / "resumed", stop_at=3, resume=True, fingerprint=fingerprint)
    shutil.copy(tmp_path / "step2.pt", tmp_path / "resumed" / "checkpoint.pt")
    resumed = _train(cohort, tmp_path / "resumed", resume=True, fingerprint=fingerprint)
    assert resumed.step == straight.step == 4 and resumed.loss == straight.loss

    a, b = load_checkpoint(straight.model), load_checkpoint(resumed.model)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    first = load_checkpoint(tmp_path / "step2.pt")["model"]
    assert any(not torch.equal(first[k], a["model"][k]) for k in first)  # the last two steps did change weights
    sa = load_checkpoint(straight.checkpoint)["train_state"]
    sb = load_checkpoint(resumed.checkpoint)["train_state"]
    assert sa["scheduler"] == sb["scheduler"]
    assert all(torch.equal(x["exp_avg_sq"], y["exp_avg_sq"])
               for x, y in zip(sa["optimizer"]["state"].values(), sb["optimizer"]["state"].values()))
    with open(tmp_path / "resumed" / "log.csv") as handle:
        rows = list(csv.DictReader(handle))
    with open(tmp_path / "straight" / "log.csv") as handle:
        assert [r["loss"] for r in rows] == [r["loss"] for r in csv.DictReader(handle)]
    assert [int(r["step"]) for r in rows] == [1, 2, 3, 4]


def test_resume_refuses_another_network(cohort, tmp_path):
    _train(cohort, tmp_path, stop_at=1)
    with pytest.raises(AnatoError, match="already holds a run"):  # a fresh run never overwrites one
        _train(cohort, tmp_path)
    with pytest.raises(ConfigError, match="holds a 'anatoseg' network, not 'unet'"):
        run_train(cohort, tmp_path, overrides=SETTINGS + ["model.arch=unet"], resume=True, progress=False)
    with pytest.raises(ConfigError, match=r"widths: checkpoint \[8, 16, 32, 64\] vs requested \[8, 16, 32, 128\]"):
        run_train(cohort, tmp_path, overrides=SETTINGS + ["model.net.widths=[8,16,32,128]"], resume=True,
                  progress=False)
    with pytest.raises(ConfigError, match="optimiser 'adamw', not 'sgd'"):
        run_train(cohort, tmp_path, overrides=SETTINGS + ["optim.name=sgd"], resume=True, progress=False)


def test_resume_rebuilds_the_pretrained_encoder_group(cohort, tmp_path):
    tiny = NetConfig.preset("tiny")
    save_checkpoint(tmp_path / "enc.pt", encoder_checkpoint(build_network("anatoseg", tiny), "anatoseg", tiny))
    scale = ["optim.pretrained_lr_scale=0.1", "optim.lr=0.01", "optim.warmup_steps=2"]
    run_train(cohort, tmp_path / "run", overrides=SETTINGS + scale, init=tmp_path / "enc.pt", stop_at=2,
              device="cpu", progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint["meta"]["init"] == str((tmp_path / "enc.pt").resolve())
    new, old = checkpoint["train_state"]["optimizer"]["param_groups"]
    assert (new["initial_lr"], old["initial_lr"]) == pytest.approx((0.01, 0.001))
    run_train(cohort, tmp_path / "run", overrides=SETTINGS + scale, resume=True, device="cpu", progress=False)
    groups = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["train_state"]["optimizer"]["param_groups"]
    assert [g["name"] for g in groups] == ["new", "pretrained"]
    assert (groups[0]["initial_lr"], groups[1]["initial_lr"]) == pytest.approx((0.01, 0.001))
    with open(tmp_path / "run" / "log.csv") as handle:  # the rate for the next step: warm-up over 2, then poly
        rates = [float(r["lr"]) for r in csv.DictReader(handle)]
    assert rates == pytest.approx([0.01, 0.01, 0.01 * 0.5**0.9, 0.0])
