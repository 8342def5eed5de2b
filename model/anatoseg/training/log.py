"""The run log every training loop writes through: CSV rows, a progress bar, TensorBoard when installed.

Columns are ``step``, the loop's own fields, then ``seconds`` (since the log was
opened): stage 3 writes ``step, loss, lr, val_dice, seconds``; stage 2 adds one
column per loss term; stage 1 shows its progress bar only (its output folder is
written all at once at the end). A value of ``None`` is an empty cell; numbers
are written with 6 significant digits.
"""

from __future__ import annotations

import csv
import io
import math
import time
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from anatoseg.data.atomic import write_text_atomic

LOG_NAME = "log.csv"


class RunLog:
    """CSV log at ``path`` (None: no file, no TensorBoard) and a tqdm bar of ``total`` steps.

    ``fields``: the columns between ``step`` and ``seconds``. ``initial``: the step the
    bar starts at. ``resume_step``: rows after this step (written by a run that stopped
    before its next checkpoint) are dropped from an existing file, so a resumed run's
    log has no duplicates; without it the file starts afresh. That rewrite is atomic. ``progress``: show the bar.
    TensorBoard scalars go to ``<path folder>/tensorboard`` when ``tensorboard`` is installed.
    """

    def __init__(self, path: Path | None, fields: Sequence[str], *, desc: str, total: int, initial: int = 0,
                 progress: bool = True, resume_step: int | None = None):
        self.path = path
        self.columns = ("step", *fields, "seconds")
        self.start = time.perf_counter()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit="step", disable=not progress)
        self.tensorboard = None
        if path is not None:
            self._open(resume_step)

    def _open(self, resume_step: int | None) -> None:
        """Start the file: the kept rows are rewritten atomically, so a kill meanwhile loses nothing."""
        rows = []
        if resume_step is not None and self.path.is_file():
            with self.path.open(newline="") as handle:  # a row cut short by a kill has no "seconds": dropped
                rows = [row for row in csv.DictReader(handle)
                        if row.get("seconds") and row["step"].isdigit() and int(row["step"]) <= resume_step]
        text = io.StringIO(newline="")
        writer = csv.DictWriter(text, self.columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.path, text.getvalue())
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is optional
            return
        self.tensorboard = SummaryWriter(str(self.path.parent / "tensorboard"))

    @property
    def seconds(self) -> float:
        """Seconds since the log was opened."""
        return time.perf_counter() - self.start

    def write(self, step: int, **values: float | None) -> None:
        """Append the row of ``step`` (fields not given are empty) and its finite values to TensorBoard."""
        if self.path is None:
            return
        row = {"step": step, **{name: _fmt(value) for name, value in values.items()},
               "seconds": f"{self.seconds:.1f}"}
        with self.path.open("a", newline="") as handle:
            csv.DictWriter(handle, self.columns, restval="").writerow(row)
        if self.tensorboard is not None:
            for name, value in values.items():
                if value is not None and math.isfinite(value):
                    self.tensorboard.add_scalar(name, value, step)

    def advance(self, **shown: str) -> None:
        """One step done: show ``shown`` beside the bar and move it on."""
        self.bar.set_postfix(shown)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()
        if self.tensorboard is not None:
            self.tensorboard.close()


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"
