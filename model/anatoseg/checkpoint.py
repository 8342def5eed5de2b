"""Checkpoint files: atomic writes, ``weights_only`` loads, and the metadata checks.

A checkpoint is a dict of tensors and plain containers only, so that it loads
with ``torch.load(weights_only=True)`` (no pickled code runs)::

    {
      "format": "anatoseg",           # FORMAT
      "version": 1,                   # VERSION
      "kind": "stage3" | "encoders",
      "meta": {
        "arch": "anatoseg",           # anatoseg.nets.ARCHITECTURES
        "net": {...},                 # dataclasses.asdict(NetConfig) as JSON: the full network config
        "axes": "zyx",                # AXES: every size and spacing below is (Z, Y, X); required on load
        "patch_size": [Z, Y, X],
        "config": {...},              # the run's Config.to_dict() (stage3)
        "preprocessing": {...},       # Preprocessing.to_dict(): normalisation, spacing, crop
        "organ_model": str | None,    # stage-1 organ model that makes prompts at inference
        "step": int,
        "encoder": {...},             # kind "encoders": anatoseg.nets.encoder_config(...)
      },
      "model": state_dict,            # stage3
      "encoders": state_dict,         # kind "encoders": anatoseg.nets.encoder_state_dict(...)
      "train_state": {...},           # optional: optimiser, scheduler, RNG states (resume)
    }

Writing refuses non-finite weights (a diverged run must not replace a good file), and the bytes
depend on the contents only (the archive inside is always named ``archive``), so identical runs
write identical files. Reading refuses empty or truncated files and non-finite weights.

Stage 2 (``anato pretrain``) writes ``kind="encoders"`` with :func:`encoder_checkpoint`;
``anato train --init`` reads it with :func:`load_encoders`. The network package
is imported inside the functions that need it, so reading a checkpoint does not
load the kernels.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from anatoseg.data.atomic import write_bytes_atomic
from anatoseg.data.axes import AXES, check_axes
from anatoseg.errors import AnatoError, ConfigError, DivergedError

FORMAT = "anatoseg"
VERSION = 1
KINDS = ("stage3", "encoders")  # made here; stage 1 writes "stage1" (anatoseg.stage1.model)
WEIGHTS = ("model", "encoders")  # the entries that hold network weights


def nonfinite_weights(checkpoint: dict[str, Any]) -> list[str]:
    """Names of the floating-point weight tensors of ``checkpoint`` that hold a NaN or an infinity."""
    bad = []
    for entry in WEIGHTS:
        state = checkpoint.get(entry)
        for name, tensor in (state.items() if isinstance(state, dict) else ()):
            if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad.append(f"{entry}.{name}")
    return bad


def _refuse_nonfinite(checkpoint: dict[str, Any], path: object, doing: str) -> None:
    bad = nonfinite_weights(checkpoint)
    if bad:
        raise DivergedError(f"{doing}: {len(bad)} weight tensors hold NaN or infinite values (first {bad[0]!r}); "
                            "the run that made them diverged", path)


def save_checkpoint(path: str | os.PathLike, checkpoint: dict[str, Any]) -> Path:
    """Write ``checkpoint`` atomically; DivergedError (nothing written) when a weight is not finite.

    Serialised in memory first, so the file holds no temporary name and a full disk is an ``OSError``
    (ENOSPC) naming ``path`` rather than an error inside torch's archive writer.
    """
    path = Path(path)
    _refuse_nonfinite(checkpoint, path, "not saved")
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    write_bytes_atomic(path, buffer.getbuffer())
    return path


def _read(path: Path, map_location) -> Any:
    """``torch.load`` of ``path`` (weights only), every failure as one AnatoError line."""
    if path.stat().st_size == 0 or (_starts_like_zip(path) and not zipfile.is_zipfile(path)):
        raise AnatoError("checkpoint is empty or truncated (an interrupted copy or a full disk?)", path)
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises many types for truncated or foreign pickles
        first = (str(exc).strip().splitlines() or [""])[0]
        raise AnatoError(f"cannot read checkpoint ({type(exc).__name__}: {first})", path) from None


def _starts_like_zip(path: Path) -> bool:
    """Whether ``path`` starts like a zip archive (every torch checkpoint does)."""
    with open(path, "rb") as handle:
        return handle.read(4) == b"PK\x03\x04"


def load_checkpoint(path: str | os.PathLike, kind: str | None = None,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, refusing anything else.

    ``kind``: the required ``"kind"`` entry (``None`` accepts any).
    Raises :class:`AnatoError` for a missing, unreadable, empty or truncated file,
    :class:`~anatoseg.errors.DivergedError` for non-finite weights and
    :class:`ConfigError` for a file that is not an anatoseg checkpoint of that kind, or
    whose metadata does not record ``"axes": "zyx"`` (written when sizes could be (X, Y, Z)).
    """
    path = Path(path)
    if not path.is_file():
        raise AnatoError("checkpoint not found" if not path.exists() else "checkpoint is not a file", path)
    checkpoint = _read(path, map_location)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ConfigError("not an anatoseg checkpoint (no 'format: anatoseg' entry)", path)
    if checkpoint.get("version") != VERSION:
        raise ConfigError(f"checkpoint format version {checkpoint.get('version')} is not supported "
                          f"(this anatoseg reads version {VERSION})", path)
    if kind is not None and checkpoint.get("kind") != kind:
        raise ConfigError(f"is a {checkpoint.get('kind')!r} checkpoint; expected {kind!r}", path)
    meta = checkpoint.get("meta")
    check_axes(meta.get("axes") if isinstance(meta, dict) else None, "checkpoint", path)
    _refuse_nonfinite(checkpoint, path, "refused")
    return checkpoint


def make_checkpoint(kind: str, meta: dict[str, Any], **tensors: Any) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    return {"format": FORMAT, "version": VERSION, "kind": kind, "meta": {**meta, "axes": AXES}, **tensors}


def check_same_network(meta: dict[str, Any], arch: str, net: dict[str, Any], path: object) -> None:
    """Raise ConfigError unless ``meta`` describes network ``arch`` with config ``net``.

    Lists every differing field, e.g. ``widths: checkpoint [8, 16] vs requested [16, 32]``.
    """
    if meta.get("arch") != arch:
        raise ConfigError(f"checkpoint holds a {meta.get('arch')!r} network, not {arch!r}", path)
    stored = meta.get("net") or {}
    differing = [f"{key}: checkpoint {stored.get(key)!r} vs requested {net.get(key)!r}"
                 for key in sorted(set(stored) | set(net))
                 if stored.get(key) != net.get(key) and key != "gradient_checkpointing"]
    if differing:
        raise ConfigError("checkpoint was trained with another network config (" + "; ".join(differing) + ")",
                          path)


def load_state_strict(module: torch.nn.Module, state: dict[str, torch.Tensor], path: object,
                      what: str = "model") -> None:
    """``module.load_state_dict(state)`` after a key/shape check whose failure is one ConfigError line."""
    from anatoseg.nets import check_state_dict

    check_state_dict(module.state_dict(), state, what=what, source=path)
    module.load_state_dict(state, strict=True)


def encoder_checkpoint(net: torch.nn.Module, arch: str, net_config: Any, **meta: Any) -> dict[str, Any]:
    """A ``kind="encoders"`` checkpoint of ``net.pet_encoder`` and ``net.ct_encoder`` (stage 2 output).

    ``net_config``: the :class:`anatoseg.nets.NetConfig` of ``net``; its
    encoder-defining fields go into ``meta["encoder"]`` and are checked on load.
    """
    from anatoseg.nets import encoder_config, encoder_state_dict

    encoder = json.loads(json.dumps(encoder_config(net_config)))
    return make_checkpoint("encoders", {"arch": arch, "encoder": encoder, **meta},
                           encoders=encoder_state_dict(net))


def load_encoders(net: torch.nn.Module, path: str | os.PathLike) -> dict[str, Any]:
    """Copy the PET and CT encoder weights of a stage-2 checkpoint into ``net``; returns its meta.

    Raises ConfigError when ``net`` has no modality encoders (the MONAI baselines)
    or the stored encoders have another architecture (differing fields named).
    """
    from anatoseg.nets import load_encoder_state

    checkpoint = load_checkpoint(path, kind="encoders")
    if "encoders" not in checkpoint:
        raise ConfigError("encoder checkpoint has no 'encoders' weights", path)
    load_encoder_state(net, checkpoint["encoders"], state_config=checkpoint["meta"].get("encoder"),
                       source=Path(path))
    return checkpoint["meta"]
