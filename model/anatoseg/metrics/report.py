"""Metric reports: a terminal table, JSON and CSV (files written atomically)."""

from __future__ import annotations

import csv
import io
import json
import os

from anatoseg.data.atomic import write_text_atomic
from anatoseg.metrics.autopet import METRIC_KEYS, CaseMetrics, aggregate


def _cell(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def format_table(results: list[CaseMetrics], mean: dict | None = None) -> str:
    """Fixed-width table: one row per case and a final ``mean`` row ('-' = does not apply)."""
    mean = aggregate(results) if mean is None else mean
    rows = [[r.case] + [_cell(getattr(r, k)) for k in METRIC_KEYS] for r in results]
    rows.append(["mean"] + [_cell(mean[k]) for k in METRIC_KEYS])
    header = ["case", *METRIC_KEYS]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    footer = (f"{mean['n_cases']} cases ({mean['n_positive']} with lesions); lesion-wise sensitivity "
              f"{_cell(mean['lesion_sensitivity'])}; Dice, FNV, sensitivity and HD95 averaged over cases "
              f"with lesions only")
    return "\n".join(lines + [footer])


def to_json(results: list[CaseMetrics], mean: dict | None = None) -> dict:
    """``{"cases": [{"case": ..., "dice": ..., ...}], "mean": {...}}``."""
    return {"cases": [r.to_dict() for r in results], "mean": aggregate(results) if mean is None else mean}


def write_json(path: str | os.PathLike, results: list[CaseMetrics]) -> None:
    write_text_atomic(path, json.dumps(to_json(results), indent=2) + "\n")


def write_csv(path: str | os.PathLike, results: list[CaseMetrics]) -> None:
    """One row per case, then a row ``mean`` with the aggregates (empty cell = does not apply)."""
    fields = list(results[0].to_dict()) if results else ["case", *METRIC_KEYS]
    mean = aggregate(results)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in results:
        writer.writerow({k: "" if v is None else v for k, v in r.to_dict().items()})
    writer.writerow({"case": "mean", **{k: "" if mean.get(k) is None else mean[k] for k in fields if k in mean}})
    write_text_atomic(path, buffer.getvalue())
