"""Backend registry and selection."""

import json
import subprocess
import sys

import pytest
import torch

import anatokernels as ak
from anatokernels import _dispatch, _extension


def test_backends_table_shape():
    table = ak.backends()
    assert {"masked_patch_gather", "masked_patch_scatter"} <= set(table)
    for entries in table.values():
        assert set(entries) == set(_dispatch.BACKENDS)
        assert entries["reference"] == "available"
        assert all(isinstance(v, str) and v for v in entries.values())
    assert table["masked_patch_gather"]["cuda"] in ("no CUDA device", "extension not built with CUDA") or \
        table["masked_patch_gather"]["cuda"].startswith("unverified")


def test_backends_without_extension_in_fresh_process(tmp_path):
    """`import anatokernels; backends()` works where the extension was never built (and builds nothing)."""
    code = "import json, anatokernels as ak; print(json.dumps(ak.backends()))"
    env = {"ANATO_EXT_DIR": str(tmp_path), "PATH": "/usr/bin:/bin", "TRITON_INTERPRET": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    table = json.loads(out.stdout)
    assert table["masked_patch_gather"]["cpu"].startswith("extension not built")
    assert table["masked_patch_gather"]["triton"].startswith("no CUDA device")
    assert not any(tmp_path.iterdir()), "backends() must not compile anything"


def test_disabled_extension_reports_reason_and_auto_uses_reference(monkeypatch):
    monkeypatch.setenv("ANATO_BUILD_EXT", "0")
    monkeypatch.setitem(_extension._state, "loaded", None)
    assert ak.backends()["masked_patch_gather"]["cpu"] == "disabled by ANATO_BUILD_EXT=0"
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cpu")) == "reference"
    with pytest.raises(RuntimeError, match="disabled by ANATO_BUILD_EXT=0"):
        _dispatch.resolve("masked_patch_gather", "cpu", torch.device("cpu"))


def test_auto_on_cpu_prefers_built_extension():
    _extension.load(build=True)
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cpu")) == "cpu"


def test_cuda_backend_is_auto_only_where_it_passed_on_a_gpu(monkeypatch):
    spec = _dispatch._REGISTRY["masked_patch_gather"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_dispatch, "_extension_status", lambda s, b: _dispatch.AVAILABLE)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 6))
    assert _dispatch.availability(spec, "cuda").startswith("unverified: passed its GPU tests on sm_90 only")
    monkeypatch.setattr(_dispatch, "_triton_status", lambda: "triton not installed")
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cuda")) == "reference"
    monkeypatch.setattr(_dispatch, "_triton_status", lambda: _dispatch.AVAILABLE)
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cuda")) == "triton"
    assert _dispatch.resolve("masked_patch_gather", "cuda", torch.device("cuda")) == "cuda"  # by name it runs
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert _dispatch.availability(spec, "cuda") == _dispatch.AVAILABLE
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cuda")) == "cuda"


def test_unverified_backend_is_never_auto(monkeypatch):
    spec = _dispatch.OpSpec(name="toy", package="anatokernels.masked_patch", backends=("reference", "cuda"),
                            unverified={"cuda": "never run"}, cuda_verified_on=((9, 0),), gpu_preference=("cuda",))
    monkeypatch.setitem(_dispatch._REGISTRY, "toy", spec)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(_dispatch, "_extension_status", lambda s, b: _dispatch.AVAILABLE)
    assert _dispatch.availability(spec, "cuda") == "unverified: never run"
    assert _dispatch.resolve("toy", "auto", torch.device("cuda")) == "reference"


def test_triton_failure_on_gpu_falls_back_once(monkeypatch):
    monkeypatch.setattr(_dispatch, "interpreter_enabled", lambda: False)
    monkeypatch.setattr(_dispatch, "_triton_broken", set())

    def broken():
        raise RuntimeError("PTX assembly failed")

    with pytest.warns(RuntimeWarning, match="failed on this GPU"):
        assert _dispatch.run_with_fallback("masked_patch_gather", "triton", broken, lambda: "ref") == "ref"
    assert ("masked_patch_gather", "triton") in _dispatch._triton_broken
    with pytest.raises(ValueError):
        _dispatch.run_with_fallback("masked_patch_gather", "triton",
                                    lambda: (_ for _ in ()).throw(ValueError("bad input")), lambda: "ref")


def test_poisoned_buffers_are_nan():
    from anatokernels import _memory

    assert torch.isnan(_memory.empty((3,), dtype=torch.float32, device="cpu")).all()


def test_missing_cpu_kernels_warn_once(monkeypatch):
    monkeypatch.setattr(_dispatch, "_warned_no_cpu", False)
    monkeypatch.setattr(_dispatch, "availability", lambda spec, b: "extension not built (python -m anatokernels.build)"
                        if b == "cpu" else _dispatch.AVAILABLE)
    with pytest.warns(RuntimeWarning, match="C\\+\\+ CPU kernels unavailable"):
        assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cpu")) == "reference"
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cpu")) == "reference"


def test_damaged_library_is_reported_not_raised(monkeypatch, tmp_path):
    (tmp_path / "anatokernels_C.so").write_bytes(b"not a library")
    monkeypatch.setattr(_extension, "build_dir", lambda with_cuda: tmp_path)
    monkeypatch.setitem(_extension._state, "loaded", None)
    assert _extension.load(build=False) is False
    assert "extension library unusable" in _extension.status()
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cpu")) == "reference"
