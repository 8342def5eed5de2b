"""Run log: a CSV file, plus TensorBoard scalars when ``tensorboard`` is installed."""

from __future__ import annotations

import csv
import math
from pathlib import Path

FIELDS = ("step", "loss", "lr", "val_dice", "seconds")


class RunLog:
    """Appends rows ``step, loss, lr, val_dice, seconds`` to ``<out>/log.csv``.

    ``resume_step``: rows after this step (written by a run that stopped before its
    next checkpoint) are dropped, so a resumed run's log has no duplicates.
    """

    def __init__(self, out: Path, resume_step: int | None = None):
        self.path = out / "log.csv"
        rows = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as handle:
                rows = [row for row in csv.DictReader(handle) if int(row["step"]) <= resume_step]
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, FIELDS)
            writer.writeheader()
            writer.writerows(rows)
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            self.tensorboard = None
        else:
            self.tensorboard = SummaryWriter(str(out / "tensorboard"))

    def write(self, step: int, seconds: float, loss: float | None = None, lr: float | None = None,
              val_dice: float | None = None) -> None:
        row = {"step": step, "loss": _fmt(loss), "lr": _fmt(lr), "val_dice": _fmt(val_dice),
               "seconds": f"{seconds:.1f}"}
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, FIELDS).writerow(row)
        if self.tensorboard is not None:
            for name, value in (("loss", loss), ("lr", lr), ("val_dice", val_dice)):
                if value is not None and math.isfinite(value):
                    self.tensorboard.add_scalar(name, value, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
