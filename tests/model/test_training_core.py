"""The shared training core (anatoseg.training): optimiser step, schedule, AMP, device, seeding, run log."""

import csv
import io
import json
import random

import numpy as np
import pytest
import torch

from anatoseg.configbase import OptimConfig
from anatoseg.data.axes import AXES
from anatoseg.data.fingerprint import FINGERPRINT_FORMAT
from anatoseg.errors import AnatoError
from anatoseg.training import fingerprint as fingerprint_module
from anatoseg.training.device import amp_active, autocast, choose_device
from anatoseg.training.fingerprint import FINGERPRINT_NAME, dataset_fingerprint
from anatoseg.training.log import LOG_NAME, RunLog
from anatoseg.training.optim import LRSchedule, ScheduledLR, make_optimizer, optimizer_step
from anatoseg.training.rng import seed_everything


def _linear(seed: int = 0) -> torch.nn.Linear:
    torch.manual_seed(seed)
    return torch.nn.Linear(4, 3)


def test_optimizer_step_clips_the_gradient_norm_then_steps_and_schedules():
    net = _linear()
    before = net.weight.detach().clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    scheduler = ScheduledLR(optimizer, LRSchedule("constant", 10))
    loss = 1000 * net(torch.ones(2, 4)).sum()
    optimizer_step(loss, optimizer, scheduler, net.parameters(), grad_clip=0.5)
    norm = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in net.parameters()]))
    assert norm == pytest.approx(0.5, rel=1e-5)
    assert torch.allclose(before - net.weight, net.weight.grad)  # one SGD step of lr 1 on the clipped gradient
    assert scheduler.last_epoch == 1


def test_optimizer_step_without_clipping_keeps_the_gradient_and_zeroes_the_previous_one():
    net = _linear()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    for _ in range(2):  # the second step must not accumulate onto the first gradient
        optimizer_step(net(torch.ones(1, 4)).sum(), optimizer, None, net.parameters(), grad_clip=None)
    assert torch.equal(net.weight.grad, torch.ones(3, 4))


def test_scheduler_resumes_through_its_state_dict_alone():
    config = OptimConfig(schedule="poly", warmup_steps=3)
    straight_net, resumed_net = _linear(), _linear()
    straight, straight_lr = make_optimizer(straight_net.parameters(), config, total_steps=10)
    for _ in range(6):
        straight.step()
        straight_lr.step()
    first, first_lr = make_optimizer(resumed_net.parameters(), config, total_steps=10)
    for _ in range(4):
        first.step()
        first_lr.step()
    state = first_lr.state_dict()
    assert "schedule" not in state and "lr_lambdas" not in state
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)  # the state fits a weights_only checkpoint
    second, second_lr = make_optimizer(resumed_net.parameters(), config, total_steps=10)
    second_lr.load_state_dict(state)
    for _ in range(2):
        second.step()
        second_lr.step()
    assert second_lr.get_last_lr() == straight_lr.get_last_lr()
    assert second_lr.state_dict() == straight_lr.state_dict()
    assert second_lr.schedule.kind == "poly" and second_lr.schedule.warmup_steps == 3


def test_scheduled_lr_matches_lambda_lr():
    nets = _linear(), _linear()
    ours = ScheduledLR(torch.optim.SGD(nets[0].parameters(), lr=0.1), LRSchedule("cosine", 7, 2))
    theirs = torch.optim.lr_scheduler.LambdaLR(torch.optim.SGD(nets[1].parameters(), lr=0.1),
                                               LRSchedule("cosine", 7, 2))
    for _ in range(8):
        assert ours.get_last_lr() == theirs.get_last_lr()
        ours.optimizer.step()
        theirs.optimizer.step()
        ours.step()
        theirs.step()


def test_amp_is_a_no_op_on_the_cpu():
    cpu = torch.device("cpu")
    assert not amp_active(cpu, True) and not amp_active(cpu, False)
    with autocast(cpu, True):
        out = torch.nn.Linear(4, 4)(torch.ones(2, 4))
    assert out.dtype == torch.float32
    assert amp_active(torch.device("cuda"), True) and not amp_active(torch.device("cuda"), False)


def test_device_choice():
    assert choose_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert choose_device(None).type == choose_device("auto").type == expected
    if not torch.cuda.is_available():
        with pytest.raises(AnatoError, match="no CUDA device"):
            choose_device("cuda")


def test_seed_everything_seeds_every_global_generator():
    draws = []
    for _ in range(2):
        seed_everything(7)
        draws.append((torch.rand(2).tolist(), np.random.rand(2).tolist(), random.random()))
    assert draws[0] == draws[1]


def test_run_log_writes_its_columns_and_drops_rows_after_the_resume_step(tmp_path):
    path = tmp_path / LOG_NAME
    log = RunLog(path, ("loss", "lr", "val_dice"), desc="t", total=3, progress=False)
    log.write(1, loss=0.5, lr=1e-3)
    log.write(2, loss=0.25, lr=5e-4, val_dice=float("nan"))
    log.write(3, loss=0.125, lr=None)
    log.advance(loss="0.1250")
    log.close()
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["step", "loss", "lr", "val_dice", "seconds"]
    assert [(r["step"], r["loss"], r["lr"], r["val_dice"]) for r in rows] == [
        ("1", "0.5", "0.001", ""), ("2", "0.25", "0.0005", "nan"), ("3", "0.125", "", "")]
    RunLog(path, ("loss", "lr", "val_dice"), desc="t", total=3, progress=False, resume_step=2).close()
    with path.open() as handle:
        assert [r["step"] for r in csv.DictReader(handle)] == ["1", "2"]
    RunLog(path, ("loss",), desc="t", total=3, progress=False).close()  # no resume: the file starts afresh
    assert path.read_text().splitlines() == ["step,loss,seconds"]


def test_run_log_without_a_path_writes_nothing(tmp_path):
    log = RunLog(None, ("loss",), desc="t", total=2, progress=False)
    log.write(1, loss=1.0)
    log.advance(loss="1.0")
    log.close()
    assert not any(tmp_path.iterdir())


def test_fingerprint_file_is_computed_once_then_read(tmp_path, monkeypatch):
    computed = []

    def compute(stream):
        computed.append(list(stream))
        return {"format": FINGERPRINT_FORMAT, "axes": AXES, "run": len(computed)}

    monkeypatch.setattr(fingerprint_module, "compute_fingerprint", compute)
    assert dataset_fingerprint([], tmp_path, None, progress=False)["run"] == 1
    assert dataset_fingerprint([], tmp_path, None, progress=False)["run"] == 1  # read back, not recomputed
    assert len(computed) == 1 and (tmp_path / FINGERPRINT_NAME).is_file()
    given = tmp_path / "given.json"
    given.write_text(json.dumps({"format": FINGERPRINT_FORMAT, "axes": AXES, "run": "given"}))
    assert dataset_fingerprint([], tmp_path, given, progress=False)["run"] == "given"
