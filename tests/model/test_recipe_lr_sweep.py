"""The learning-rate sweep's bookkeeping: the tail loss read from a run log, the best rate per architecture
(diverged runs never), and its arguments."""

import math

from anatoseg.experiments.lr_sweep import ARCHS, _tail_loss, markdown, parse
from anatoseg.nets import ARCHITECTURES


def test_tail_loss_averages_the_last_logged_steps(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("step,loss,lr,val_dice,elapsed_s\n1,3.0,1e-3,,1\n2,2.0,1e-3,,2\n3,1.0,1e-3,0.1,3\n4,,1e-3,0.2,4\n")
    assert _tail_loss(log, 4, 3) == 1.5  # steps 2..4; step 4 logged no loss
    assert math.isnan(_tail_loss(log, 10, 2))


def test_markdown_marks_the_lowest_finite_tail_loss_and_names_divergence():
    runs = {"unet@0.001": {"arch": "unet", "lr": 1e-3, "tail_loss": 1.2, "seconds": 5.0},
            "unet@0.01": {"arch": "unet", "lr": 1e-2, "diverged": "training diverged at step 3", "seconds": 2.0},
            "unet@0.0001": {"arch": "unet", "lr": 1e-4, "tail_loss": 1.5, "seconds": 5.0}}
    meta = {"steps": 15, "patch": "64×32×32", "cases": 4, "spacing": 8.0, "tail": 5, "archs": ["unet"],
            "command": "python -m anatoseg.experiments.lr_sweep OUT", "machine": "test"}
    text = markdown({"runs": runs, "meta": meta, "seconds_total": 12.0})
    rows = [line for line in text.splitlines() if line.startswith("| unet")]
    assert rows == ["| unet | 0.0001 | 1.5000 | 5 |", "| unet | 0.001 **best** | 1.2000 | 5 |",
                    "| unet | 0.01 | diverged | 2 |"]
    assert "Command: `python -m anatoseg.experiments.lr_sweep OUT`" in text and "total 12 s" in text


def test_defaults_cover_every_architecture_family():
    args = parse(["out"])
    assert args.steps > args.tail and args.patch[0] % 32 == 0 and list(args.archs) == list(ARCHS)
    assert set(ARCHS) <= set(ARCHITECTURES)
