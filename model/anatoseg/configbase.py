"""The config machinery every stage shares: one dataclass tree per stage, one file format, one override syntax.

A stage's config is a dataclass subclassing :class:`ConfigBase` whose fields are
sections (dataclasses) or values. Every stage resolves it the same way, lowest first:

1. the dataclass defaults (or a stage's own base: stage 3's fingerprint defaults,
   the config stored in a checkpoint being resumed);
2. a config file (``--config run.yaml``, YAML or JSON, same nesting as the dataclass);
3. ``--set section.key=value`` overrides, then the typed CLI options (``--steps``...),
   which are overrides too (:func:`anatoseg.cli.options.option_overrides`);

then :meth:`ConfigBase.validate`. Every root carries ``seed`` and ``axes``: sizes
and spacings are (Z, Y, X) (:data:`anatoseg.data.axes.AXES`), and a file or stored
config that says otherwise is refused. Optimiser settings are one section type,
:class:`OptimConfig`, validated wherever it appears.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

from anatoseg.data.axes import AXES, check_axes
from anatoseg.errors import ConfigError

OPTIMIZERS = ("adamw", "sgd")
SCHEDULES = ("poly", "cosine", "constant")
DEFAULT_LR = {"adamw": 3e-4, "sgd": 1e-2}

C = TypeVar("C", bound="ConfigBase")


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule (:func:`anatoseg.training.optim.make_optimizer`)."""

    name: str = "adamw"
    lr: float | None = None  # None: 3e-4 for AdamW, 1e-2 for SGD
    weight_decay: float = 1e-4
    momentum: float = 0.99  # SGD (Nesterov)
    schedule: str = "poly"
    warmup_steps: int = 0
    grad_clip: float | None = 12.0  # max gradient norm; None: no clipping

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.name] if self.lr is None else self.lr

    def validate(self, prefix: str = "optim") -> None:
        if self.name not in OPTIMIZERS:
            raise ConfigError(f"{prefix}.name must be one of {', '.join(OPTIMIZERS)}, got {self.name!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"{prefix}.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.learning_rate <= 0 or self.weight_decay < 0 or self.warmup_steps < 0:
            raise ConfigError(f"{prefix}: lr must be > 0, weight_decay and warmup_steps >= 0, got "
                              f"{self.learning_rate}, {self.weight_decay}, {self.warmup_steps}")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"{prefix}.grad_clip must be > 0 or None, got {self.grad_clip}")


@dataclass
class ConfigBase:
    """Root of a stage's config tree (module docstring).

    Subclasses add sections and implement :meth:`check` for their own rules.
    ``AXIS_KEYS``: dotted keys whose values are per-axis sizes that an older
    anatoseg read in (X, Y, Z) order; a config file that sets one must say
    ``axes: zyx``. ``OPTION_KEYS``: what ``--steps``, ``--batch-size``, ``--lr``
    and ``--seed`` set in this stage's tree.
    """

    seed: int = 0  # of everything random in the run
    axes: str = AXES  # the order of every size and spacing below

    AXIS_KEYS: ClassVar[tuple[str, ...]] = ()
    #: The config keys each shared CLI option (:mod:`anatoseg.cli.options`) sets.
    OPTION_KEYS: ClassVar[dict[str, tuple[str, ...]]] = {
        "steps": ("train.steps",), "batch_size": ("train.batch_size",), "lr": ("optim.lr",), "seed": ("seed",)}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any], source: object | None = None) -> C:
        """Defaults with ``values`` applied (e.g. a stored config); refuses another recorded axis order."""
        if isinstance(values, Mapping) and "axes" in values:
            check_axes(values["axes"], "config", source)
        return merge(cls(), values)

    @classmethod
    def build(cls: type[C], config_file: str | Path | None = None, overrides: Iterable[str] = (),
              base: C | None = None) -> C:
        """``base`` (default: the defaults), then ``config_file``, then ``overrides``; validated."""
        config = cls() if base is None else base
        config = merge(config, cls.read_file(config_file)) if config_file is not None else config
        return apply_overrides(config, overrides).validate()

    @classmethod
    def read_file(cls, path: str | Path) -> dict[str, Any]:
        """The nested values of a config file; ConfigError if it is in another axis order."""
        values = load_file(path)
        if "axes" in values:
            check_axes(values["axes"], "config file", path)
        else:
            legacy = [key for key in cls.AXIS_KEYS if _lookup(values, key) is not None]
            if legacy:
                raise ConfigError(f"sets {', '.join(legacy)} without 'axes: {AXES}'; these sizes used to be "
                                  f"(X, Y, Z) and are now (Z, Y, X): reverse them if needed and add "
                                  f"'axes: {AXES}'", path)
        return values

    def validate(self: C) -> C:
        """Check the axis order, that no number is NaN or infinite, every :class:`OptimConfig` section,
        then the stage's own rules."""
        check_axes(self.axes, "config")
        _check_finite(dataclasses.asdict(self))
        for name, section in self._sections():
            if isinstance(section, OptimConfig):
                section.validate(name)
        self.check()
        return self

    def check(self) -> None:
        """The stage's own rules (raise ConfigError); nothing by default."""

    def require_positive(self, *keys: str) -> None:
        """ConfigError unless every dotted ``key`` is >= 1."""
        for key in keys:
            value = _lookup(dataclasses.asdict(self), key)
            if value < 1:
                raise ConfigError(f"{key} must be >= 1, got {value}")

    def _sections(self, prefix: str = ""):
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if dataclasses.is_dataclass(value):
                yield f"{prefix}{item.name}", value
                if isinstance(value, ConfigBase):
                    yield from value._sections(f"{prefix}{item.name}.")


def _check_finite(values: Any, key: str = "") -> None:
    """ConfigError naming the first NaN or infinite number in nested ``values``."""
    if isinstance(values, float) and not math.isfinite(values):
        raise ConfigError(f"{key} must be a finite number, got {values}")
    items = values.items() if isinstance(values, Mapping) else enumerate(values) \
        if isinstance(values, list | tuple) else ()
    for name, value in items:
        _check_finite(value, f"{key}.{name}" if key and isinstance(name, str) else
                      f"{key}[{name}]" if key else str(name))


def _lookup(values: Mapping[str, Any], key: str) -> Any:
    for part in key.split("."):
        if not isinstance(values, Mapping) or part not in values:
            return None
        values = values[part]
    return values


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a nested dict."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", path) from None
    try:
        values = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}", path) from None
    if values is None:
        return {}
    if not isinstance(values, dict):
        raise ConfigError("a config file must hold a mapping of sections", path)
    return values


def merge(config: Any, values: Mapping[str, Any], prefix: str = "") -> Any:
    """Return a copy of dataclass ``config`` with nested ``values`` applied, types coerced."""
    if not isinstance(values, Mapping):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(type(config))
    fields = {f.name for f in dataclasses.fields(config)}
    changes = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(f"unknown config key {name!r} (known here: {', '.join(sorted(fields))})")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current):
            changes[key] = merge(current, value, f"{name}.")
        else:
            changes[key] = _coerce(value, hints[key], name)
    return dataclasses.replace(config, **changes)


def apply_overrides(config: C, overrides: Iterable[str]) -> C:
    """Apply ``section.key=value`` strings. A ``dict`` field (e.g. ``model.net``) takes
    ``model.net.<field>=v`` one entry at a time."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {item!r} is not of the form section.key=value")
        parts = key.strip().split(".")
        value: Any = _parse_scalar(raw.strip())
        owner, depth = config, 0
        while depth < len(parts) - 1 and dataclasses.is_dataclass(getattr(owner, parts[depth], None)):
            owner, depth = getattr(owner, parts[depth]), depth + 1
        current = getattr(owner, parts[depth], None)
        if isinstance(current, dict) and depth < len(parts) - 1:
            value = {**current, ".".join(parts[depth + 1:]): value}
            parts = parts[:depth + 1]
        for part in reversed(parts):
            value = {part: value}
        config = merge(config, value)
    return config


def _parse_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Convert ``value`` to the annotated type ``hint`` (str, int, float, bool, tuples, Optional, dict)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], name)
    try:
        return _convert(value, hint, origin, args, name)
    except (TypeError, ValueError):
        raise ConfigError(f"{name}: cannot use {value!r} as {_type_name(hint)}") from None


def _convert(value: Any, hint: Any, origin: Any, args: tuple, name: str) -> Any:
    if hint is bool:
        if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
            return value.lower() in ("true", "yes", "1")
        if isinstance(value, bool):
            return value
        raise ValueError(value)
    if hint is int:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError(value)
        return int(float(value))
    if hint is float:
        if isinstance(value, bool):
            raise ValueError(value)
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ValueError(value)
        return value
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("x", ",").split(",") if v.strip()]
        items = list(value)
        if len(items) != len(args):
            raise ValueError(value)
        return tuple(_coerce(v, a, name) for v, a in zip(items, args, strict=True))
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ValueError(value)
        return dict(value)
    raise ConfigError(f"{name}: unsupported config type {hint}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
