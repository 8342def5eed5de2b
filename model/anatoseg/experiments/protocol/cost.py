"""What each variant costs: trainable parameters (rebuilt from a unit's stored stage-3 config, nothing loaded)
and its units' training and prediction times, for the report's cost table (:func:`section`)."""

from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Mapping


@functools.cache
def _parameters(model_json: str, patch: tuple[int, ...]) -> int:
    from anatoseg.config import ModelConfig
    from anatoseg.training.network import build_model

    net, _ = build_model(ModelConfig(**json.loads(model_json)), patch)
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def parameters(config: Mapping | None) -> int | None:
    """Trainable parameters of the network a unit's stage-3 ``config`` (``model`` and ``data.patch_size``)
    builds; None when the unit kept no config."""
    if not config or "model" not in config:
        return None
    return _parameters(json.dumps(config["model"], sort_keys=True), tuple(config["data"]["patch_size"]))


def _minutes(units: list[dict], field: str, part: str) -> str:
    values = [u[field][part] / 60 for u in units if isinstance(u.get(field), Mapping) and part in u[field]]
    return f"{statistics.fmean(values):.1f}" if values else "–"


def section(variants: Mapping[str, Mapping[int, dict]]) -> list[str]:
    """The cost table: per network variant its parameters and the mean over seeds of its units' training and
    prediction (all test cases) wall and CPU minutes; a variant predicting another's model trains nothing."""
    lines = ["| variant | parameters | train wall min | train CPU min | predict wall min | predict CPU min |",
             "|---|---|---|---|---|---|"]
    for name, by_seed in variants.items():
        units = list(by_seed.values())
        if units[0]["kind"] != "network":
            continue
        count = parameters(units[0].get("config"))
        shown = "–" if count is None else f"{count / 1e6:.2f} M"
        if units[0].get("spec", {}).get("trained_as"):
            shown += f" ({units[0]['spec']['trained_as']}'s)"
        lines.append(f"| {name} | {shown} | " + " | ".join(_minutes(units, field, part) for part in ("train", "predict")
                                                          for field in ("seconds", "cpu_seconds")) + " |")
    return lines
