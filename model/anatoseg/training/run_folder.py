"""What the run folders of stages 2 and 3 hold in common: the config copy and the case cache."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

CONFIG_NAME = "config.yaml"  # the run's resolved config
CACHE_NAME = "preprocessed"  # the preprocessed-case cache (anatoseg.training.cache)


def write_config(out: Path, values: dict[str, Any]) -> None:
    """``out/config.yaml``: the run's config (its ``to_dict()``), keys in their declared order."""
    (out / CONFIG_NAME).write_text(yaml.safe_dump(values, sort_keys=False))


def jsonable(values: Any) -> Any:
    """``values`` as plain JSON types (tuples become lists), as checkpoints store them."""
    return json.loads(json.dumps(values))
