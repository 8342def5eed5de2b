"""DDP under torchrun: two CPU processes (gloo) train and validate like one process with the same global batch."""

import os
import re
import shutil
import subprocess
import sys

import pytest
import torch

from anatoseg.checkpoint import load_checkpoint
from anatoseg.configbase import apply_overrides
from anatoseg.data.phantom import generate_cohort
from anatoseg.stage3.config import Config
from anatoseg.stage3.run import run_train
from anatoseg.training.network import build_model

# SGD and per-sample Dice make the loss of a batch the mean of per-sample losses, so averaging the
# gradients of two halves (DDP) equals the gradient of the whole batch up to float rounding.
SETTINGS = ["model.preset=tiny", "data.patch_size=32,32,32", "train.batch_size=2", "train.steps=2",
            "data.val_cases=1", "optim.name=sgd", "loss.batch_dice=false", "train.log_every=1"]


@pytest.mark.slow
def test_two_gloo_processes_match_one_process(tmp_path):
    data = generate_cohort(tmp_path / "data", cases=3, seed=2, spacing=10.0, progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        single = run_train(data, tmp_path / "single", overrides=SETTINGS, device="cpu", progress=False)
    finally:
        torch.set_num_threads(threads)
    shutil.copytree(tmp_path / "single" / "preprocessed", tmp_path / "ddp" / "preprocessed")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "anatoseg", "train", str(data), str(tmp_path / "ddp"), "--device", "cpu", "--no-progress",
               "--fingerprint", str(tmp_path / "single" / "fingerprint.json")]
    for item in SETTINGS:
        command += ["--set", item]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("model written to") == 1 and "stopped" not in done.stdout  # rank 0 reports
    # Validation runs sharded over the ranks and all-reduced: the same held-out Dice as one process.
    ddp_dice = float(re.search(r"val Dice ([0-9.]+)", done.stdout).group(1))
    assert single.val_dice is not None and abs(ddp_dice - single.val_dice) < 0.01

    ddp = load_checkpoint(tmp_path / "ddp" / "model.pt")["model"]
    ref = load_checkpoint(single.model)["model"]
    torch.manual_seed(0)  # train.seed: the initial weights of both runs
    init = build_model(apply_overrides(Config(), SETTINGS).model, (32, 32, 32))[0].state_dict()
    moved = max(float((ref[k] - init[k]).abs().max()) for k in ref if ref[k].is_floating_point())
    assert moved > 1e-3  # the two steps did train ...
    for key, value in ref.items():  # ... and two half-batches on two processes gave the same weights
        assert torch.allclose(ddp[key], value, rtol=1e-4, atol=1e-5), key
