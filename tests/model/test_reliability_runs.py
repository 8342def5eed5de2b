"""Run safety (issue 21): divergence stops a run, run folders are locked, stale state is not reused,
OS failures are one line, temporaries never outlive a run, identical runs write identical files."""

import errno
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from anatoseg.checkpoint import load_checkpoint, save_checkpoint
from anatoseg.data.atomic import TEMP_FOLDER, write_text_atomic
from anatoseg.data.fingerprint import load_fingerprint, save_fingerprint
from anatoseg.data.layouts import find_cases
from anatoseg.data.phantom import generate_cohort
from anatoseg.errors import DivergedError
from anatoseg.stage3.run import run_train
from anatoseg.training.fingerprint import dataset_fingerprint
from anatoseg.training.log import RunLog
from anatoseg.training.optim import make_optimizer, optimizer_step
from anatoseg.training.run_folder import hold

from cli_testing import leftovers
from cli_testing import run_anato as anato

pytestmark = pytest.mark.usefixtures("one_thread")

TRAIN = ["--patch-size", "32,32,32", "--batch-size", 2, "--preset", "tiny", "--device", "cpu", "--no-progress",
         "--no-prompts", "--set", "data.val_cases=0", "--set", "train.ckpt_every=1"]
SETTINGS = ["model.preset=tiny", "data.patch_size=32,32,32", "train.batch_size=2", "train.steps=1",
            "data.val_cases=0", "model.net.use_prompts=false"]






@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return generate_cohort(tmp_path_factory.mktemp("data") / "data", cases=2, seed=0, spacing=10.0, progress=False)


@pytest.fixture(scope="module")
def stopped(cohort, tmp_path_factory):
    """A run folder stopped after step 1 of 2 (checkpoint.pt at step 1)."""
    out = tmp_path_factory.mktemp("runs") / "stopped"
    run_train(cohort, out, overrides=[*SETTINGS, "train.steps=2"], stop_at=1, device="cpu", progress=False)
    return out


# ------------------------------------------------------------------------------------ 1. divergence

def test_a_diverged_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint(cohort, tmp_path, monkeypatch,
                                                                                   capsys):
    out = tmp_path / "run"
    code, stdout, err = anato(monkeypatch, capsys, "train", cohort, out, "--steps", 4, "--lr", 1e30, *TRAIN)
    assert code == 1 and "model written" not in stdout
    assert err.startswith("error: training diverged at step 2: loss nan") and err.count("\n") == 1
    assert not (out / "model.pt").exists() and not leftovers(out)
    kept = load_checkpoint(out / "checkpoint.pt")  # the step-1 checkpoint, finite, loads
    assert kept["meta"]["step"] == 1

    # A checkpoint with non-finite weights (written by hand: save_checkpoint refuses it) is refused on load.
    kept["model"][next(iter(kept["model"]))].fill_(float("nan"))
    torch.save(kept, tmp_path / "nan.pt")
    code, _, err = anato(monkeypatch, capsys, "predict", tmp_path / "nan.pt", cohort, tmp_path / "pred")
    assert code == 1 and "NaN or infinite" in err and not (tmp_path / "pred").exists()
    with pytest.raises(DivergedError, match="not saved"):
        save_checkpoint(out / "checkpoint.pt", kept)
    assert load_checkpoint(out / "checkpoint.pt")["meta"]["step"] == 1


def test_optimizer_step_refuses_a_nonfinite_loss_or_gradient_before_stepping():
    net = torch.nn.Linear(3, 1)
    optimizer, scheduler = make_optimizer(net.parameters(), SimpleNamespace(
        name="adamw", learning_rate=1e-3, weight_decay=0.0, schedule="constant", warmup_steps=0), 10)
    optimizer_step(net(torch.ones(1, 3)).sum(), optimizer, scheduler, net.parameters())
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(DivergedError, match="pretraining diverged at step 2: loss nan"):
        optimizer_step(net(torch.ones(1, 3)).sum() * float("nan"), optimizer, scheduler, net.parameters(),
                       what="pretraining")
    net.weight.register_hook(lambda grad: torch.full_like(grad, float("inf")))  # finite loss, infinite gradient
    with pytest.raises(DivergedError, match="training diverged at step 2: loss .*, gradient norm inf"):
        optimizer_step(net(torch.ones(1, 3)).sum(), optimizer, scheduler, net.parameters(), grad_clip=1.0)
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))


def test_stage1_and_stage2_loops_stop_on_divergence(monkeypatch, tmp_path):
    from anatoseg.stage1 import build_config
    from anatoseg.stage1 import loop as stage1_train
    from anatoseg.stage2.config import PretrainConfig
    from anatoseg.stage2.loop import pretrain_volumes
    from anatoseg.training.sampling import TrainVolume

    config = build_config(overrides=["widths=4,8,8,8", "data.patch_size=16,16,16", "teacher.steps=3"])
    organs = np.zeros((20, 20, 20), np.uint8)
    organs[5:15, 5:15, 5:15] = 1
    case = SimpleNamespace(work=SimpleNamespace(image=np.zeros((2, 20, 20, 20), np.float32), organs=organs))
    real = stage1_train.masked_ce_dice
    monkeypatch.setattr(stage1_train, "masked_ce_dice", lambda *a: real(*a) * float("nan"))
    with pytest.raises(DivergedError, match="stage-1 teacher diverged at step 1"):
        stage1_train.train_teacher([case], config)

    rng = np.random.default_rng(0)
    volume = TrainVolume("c0", rng.normal(size=(2, 16, 16, 16)).astype(np.float32), np.zeros((16,) * 3, np.uint8))
    pretrain = PretrainConfig.from_dict({
        "model": {"net": {"widths": [4, 8], "stem_width": 4, "res_depths": [1, 1], "mamba_depths": [0, 1],
                          "d_state": 4, "hcca_stages": [1], "num_heads": 2, "prompt_dim": 8, "hyper_hidden": 8,
                          "rank": 2}},
        "crop": {"size": [16, 16, 16]}, "mask": {"patch_size": [4, 4, 4], "ratio": 0.6},
        "optim": {"lr": 1e30}, "train": {"steps": 6, "batch_size": 1, "ckpt_every": 1}})
    with pytest.raises(DivergedError, match="pretraining diverged at step"):
        pretrain_volumes(pretrain, [volume], tmp_path, progress=False)


# ------------------------------------------------------------------------------------------ 2. lock

def test_a_held_run_folder_is_refused_fast_and_released_when_its_holder_dies(cohort, stopped, monkeypatch, capsys):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from anatoseg.training.run_folder import hold\n"
         f"with hold({str(stopped)!r}):\n    print('held', flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for args in (["train", cohort, stopped, "--resume"], ["pretrain", cohort, stopped]):
            code, _, err = anato(monkeypatch, capsys, *args, "--device", "cpu", "--no-progress")
            assert code == 1 and f"in use by another anato process (pid {holder.pid})" in err, err
    finally:
        holder.kill()
        holder.wait()
    with hold(stopped):  # flock went with the killed process
        pass
    assert load_checkpoint(stopped / "checkpoint.pt")["meta"]["step"] == 1


# --------------------------------------------------------------------------------- 3. stale state

def test_a_foreign_fingerprint_is_computed_again_and_resume_refuses_other_data(cohort, stopped, tmp_path,
                                                                                monkeypatch, capsys):
    cases = find_cases(cohort)
    foreign = load_fingerprint(stopped / "fingerprint.json")
    foreign["case_ids"] = ["other_case"]
    save_fingerprint(foreign, tmp_path / "fingerprint.json")
    fp = dataset_fingerprint(cases, tmp_path, None, progress=False)
    assert sorted(fp["case_ids"]) == sorted(c.case_id for c in cases) and "computing it again" in \
        capsys.readouterr().err
    assert fp["settings"]["samples_per_case"] == 10_000

    one = tmp_path / "one"
    one.mkdir()
    first = sorted(p for p in cohort.parent.iterdir() if p.is_dir())[0]
    shutil.copytree(first, one / first.name)  # a dataset of one of the two cases
    before = (stopped / "checkpoint.pt").read_bytes()
    code, _, err = anato(monkeypatch, capsys, "train", one, stopped, "--resume", "--device", "cpu", "--no-progress")
    assert code == 1 and "other cases than the run was trained on" in err and "--allow-other-data" in err
    assert (stopped / "checkpoint.pt").read_bytes() == before


# ---------------------------------------------------------------------------------- 4. OS errors

@pytest.mark.parametrize("failure", ["nospc", "erofs"])
def test_disk_full_and_read_only_are_one_line_and_leave_nothing(cohort, tmp_path, monkeypatch, capsys, failure):
    out = tmp_path / "run"
    if failure == "nospc":  # the flush of the checkpoint fails as on a full disk (no file name in the error)
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(errno.ENOSPC, os.strerror(28))))
    else:
        monkeypatch.setattr(os, "replace", lambda a, b: (_ for _ in ()).throw(
            OSError(errno.EROFS, "Read-only file system", str(b))))
    code, _, err = anato(monkeypatch, capsys, "train", cohort, out, "--steps", 1, *TRAIN)
    expected = "checkpoint.pt: no space left on device" if failure == "nospc" else ": read-only file system"
    assert code == 1 and err.startswith("error: ") and expected in err and err.count("\n") == 1, err
    assert not (out / "checkpoint.pt").exists() and not leftovers(out)


def test_out_a_file_truncated_checkpoints_memory_and_ctrl_c(cohort, stopped, tmp_path, monkeypatch, capsys):
    (tmp_path / "file").write_text("x")
    code, _, err = anato(monkeypatch, capsys, "train", cohort, tmp_path / "file", "--steps", 1, *TRAIN)
    assert code == 1 and err == f"error: {tmp_path / 'file'}: exists and is not a folder\n"

    whole = (stopped / "checkpoint.pt").read_bytes()
    for name, data in (("empty.pt", b""), ("cut.pt", whole[: len(whole) // 2])):
        (tmp_path / name).write_bytes(data)
        code, _, err = anato(monkeypatch, capsys, "predict", tmp_path / name, cohort, tmp_path / "pred")
        assert code == 1 and "checkpoint is empty or truncated" in err and err.count("\n") == 1, err

    import anatoseg.stage3.run as stage3_run

    def fail(exc):
        def raise_(*args, **kwargs):
            raise exc
        return raise_
    alloc = RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: can't allocate memory: you "
                         "tried to allocate 2199023255552 bytes. Error code 12 (Cannot allocate memory)")
    for exc, code_wanted, text in ((alloc, 1, "error: out of memory (asked for 2.0 TiB)"),
                                   (MemoryError(), 1, "error: out of memory"),
                                   (KeyboardInterrupt(), 130,
                                    "error: interrupted; the last checkpoint is kept, continue with --resume")):
        monkeypatch.setattr(stage3_run, "run_train", fail(exc))
        code, _, err = anato(monkeypatch, capsys, "train", cohort, tmp_path / "x")
        assert code == code_wanted and err.startswith(text) and err.count("\n") == 1, err


# ------------------------------------------------------------------------ 5. leftovers, clobbering

def test_orphaned_temporaries_are_cleaned_and_the_log_rewrite_is_atomic(tmp_path, monkeypatch):
    out = tmp_path / "run"
    (out / TEMP_FOLDER).mkdir(parents=True)
    (out / TEMP_FOLDER / ".checkpoint.pt.abc.tmp.pt").write_bytes(b"half")
    (tmp_path / ".run.xyz.tmp").mkdir()  # an atomic_dir(run) temporary of a killed process
    with hold(out):
        assert not (out / TEMP_FOLDER).exists() and not (tmp_path / ".run.xyz.tmp").exists()
        write_text_atomic(out / "a.txt", "a")
    assert (out / "a.txt").read_text() == "a" and not leftovers(tmp_path)

    log = out / "log.csv"
    log.write_text("step,loss,seconds\r\n1,0.5,1.0\r\n2,0.4,2.0\r\n3,0.3")  # the last row cut short by a kill
    before = log.read_bytes()
    real = type(log).write_text

    def killed(self, *args, **kwargs):
        real(self, "step,lo", encoding="utf-8")
        raise KeyboardInterrupt
    monkeypatch.setattr(type(log), "write_text", killed)
    with pytest.raises(KeyboardInterrupt):
        RunLog(log, ["loss"], desc="t", total=4, progress=False, resume_step=2)
    assert log.read_bytes() == before and not leftovers(out)
    monkeypatch.undo()
    RunLog(log, ["loss"], desc="t", total=4, progress=False, resume_step=3).close()
    assert log.read_text().splitlines() == ["step,loss,seconds", "1,0.5,1.0", "2,0.4,2.0"]


def test_identical_runs_write_identical_files(cohort, tmp_path):
    for name in ("a", "b"):
        run_train(cohort, tmp_path / name, overrides=SETTINGS, device="cpu", progress=False)
    for file in ("model.pt", "checkpoint.pt"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes(), file
