"""Backend registry, selection, the dispatch call and Availability values."""

import json
import shutil
import subprocess
import sys

import pytest
import torch

import anatokernels as ak
from anatokernels import Availability, _dispatch, _extension
from anatokernels._availability import AVAILABLE


def test_backends_table_shape():
    table = ak.backends()
    assert {"masked_patch_gather", "masked_patch_scatter"} <= set(table)
    for entries in table.values():
        assert set(entries) == set(_dispatch.BACKENDS)
        assert entries["reference"] == AVAILABLE
        assert all(isinstance(v, Availability) and str(v) for v in entries.values())
    cuda = table["masked_patch_gather"]["cuda"]
    assert str(cuda) in ("no CUDA device", "extension not built with CUDA") or cuda.state == "unverified"
    assert table["masked_patch_gather"]["chunked"] == Availability("unimplemented", "not implemented for this op")
    assert table["hyper_cross_attention"]["chunked"] == AVAILABLE


def test_backends_without_extension_in_fresh_process(tmp_path):
    """`import anatokernels; backends()` works where the extension was never built (and builds nothing)."""
    code = "import json, anatokernels as ak; print(json.dumps(ak.backends(), default=str))"
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
    assert ak.backends()["masked_patch_gather"]["cpu"] == Availability("disabled", "disabled by ANATO_BUILD_EXT=0")
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cpu")) == "reference"
    with pytest.raises(RuntimeError, match="disabled by ANATO_BUILD_EXT=0"):
        _dispatch.resolve("masked_patch_gather", "cpu", torch.device("cpu"))


def test_auto_on_cpu_prefers_built_extension():
    _extension.load(build=True)
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cpu")) == "cpu"


def test_cuda_backend_is_auto_only_where_it_passed_on_a_gpu(monkeypatch):
    spec = _dispatch._REGISTRY["masked_patch_gather"]
    # as if today's csrc/masked_patch/ had passed the GPU suite on sm_90 (the recorded digest may be older)
    monkeypatch.setitem(_dispatch.CUDA_TESTED_SOURCES, "masked_patch", _extension.cuda_source_digest("masked_patch"))
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_dispatch, "_extension_availability", lambda s, b: AVAILABLE)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 6))
    status = _dispatch.availability(spec, "cuda")
    assert status.state == "unverified" and status.runs_by_name and not status.is_available
    assert str(status).startswith("unverified: passed its GPU tests on sm_90 only")
    monkeypatch.setattr(_dispatch, "_triton_availability", lambda: Availability("unavailable", "triton not installed"))
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cuda")) == "reference"
    monkeypatch.setattr(_dispatch, "_triton_availability", lambda: AVAILABLE)
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cuda")) == "triton"
    assert _dispatch.resolve("masked_patch_gather", "cuda", torch.device("cuda")) == "cuda"  # by name it runs
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    assert _dispatch.availability(spec, "cuda") == AVAILABLE
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cuda")) == "cuda"


def test_unverified_backend_is_never_auto(monkeypatch):
    spec = _dispatch.OpSpec(name="toy", package="anatokernels.masked_patch", backends=("reference", "cuda"),
                            unverified={"cuda": "never run"}, cuda_verified_on=((9, 0),), gpu_preference=("cuda",))
    monkeypatch.setitem(_dispatch._REGISTRY, "toy", spec)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(_dispatch, "_extension_availability", lambda s, b: AVAILABLE)
    assert _dispatch.availability(spec, "cuda") == Availability("unverified", "never run")
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
    not_built = Availability("unavailable", "extension not built (python -m anatokernels.build)")
    monkeypatch.setattr(_dispatch, "availability", lambda spec, b: not_built if b == "cpu" else AVAILABLE)
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
    assert _extension.status().state == "unavailable"
    assert "extension library unusable" in _extension.status().reason
    assert _dispatch.resolve("masked_patch_gather", "auto", torch.device("cpu")) == "reference"


def test_availability_values():
    assert str(AVAILABLE) == "available" and AVAILABLE.is_available and AVAILABLE.runs_by_name
    unverified = Availability("unverified", "never run on a GPU")
    assert str(unverified) == "unverified: never run on a GPU"
    assert unverified.runs_by_name and not unverified.is_available
    for state in ("unavailable", "unimplemented", "disabled"):
        status = Availability(state, "because")
        assert str(status) == "because" and not status.runs_by_name and not status.is_available
    with pytest.raises(ValueError, match="state must be one of"):
        Availability("maybe", "why")
    with pytest.raises(ValueError, match="needs a reason"):
        Availability("unavailable")


def test_op_spec_needs_a_pytorch_fallback_it_implements():
    with pytest.raises(ValueError, match="fallback"):
        _dispatch.OpSpec(name="toy", package="anatokernels.masked_patch", backends=("triton",))
    with pytest.raises(ValueError, match="must be among"):
        _dispatch.OpSpec(name="toy", package="anatokernels.masked_patch", backends=("reference", "opencl"))


def _toy(monkeypatch, **kw):
    """A registered op ``toy`` whose backend modules are hyper_attention's (reference, chunked, triton)."""
    spec = _dispatch.OpSpec(name="toy", package="anatokernels.hyper_attention", gpu_preference=("triton",), **kw)
    monkeypatch.setitem(_dispatch._REGISTRY, "toy", spec)
    return spec


def _module_name(impl):
    return impl.__name__.rsplit(".", 1)[-1]


def test_dispatch_runs_reference_or_the_backend_module(monkeypatch):
    _toy(monkeypatch, backends=("reference", "chunked", "triton"))
    cpu = torch.device("cpu")
    run = lambda backend: _dispatch.dispatch("toy", backend, cpu, fast=_module_name, reference=lambda: "definition")
    assert run("reference") == "definition"
    assert run("chunked") == "chunked"
    assert run("auto") == "definition"  # auto on CPU without a cpu backend: the fallback, here the reference
    monkeypatch.setattr(_dispatch, "interpreter_enabled", lambda: True)
    assert run("triton") == "triton"


def test_dispatch_errors_name_the_op_and_the_reason(monkeypatch):
    _toy(monkeypatch, backends=("reference", "triton"))
    cpu = torch.device("cpu")
    run = lambda backend, device=cpu: _dispatch.dispatch("toy", backend, device, fast=_module_name,
                                                         reference=lambda: "definition")
    with pytest.raises(ValueError, match=r"toy: unknown backend 'cuDNN'"):
        run("cuDNN")
    with pytest.raises(ValueError, match=r"toy: backend 'chunked' is not implemented"):
        run("chunked")
    monkeypatch.setattr(_dispatch, "interpreter_enabled", lambda: False)
    with pytest.raises(RuntimeError, match="needs TRITON_INTERPRET=1"):
        run("triton")
    monkeypatch.setattr(_dispatch, "_triton_availability", lambda: Availability("unavailable", "triton not installed"))
    with pytest.raises(RuntimeError, match=r"toy: backend='triton' unavailable: triton not installed"):
        run("triton", torch.device("cuda"))
    with pytest.raises(RuntimeError, match="backend='cpu' needs CPU tensors"):
        _dispatch.dispatch("masked_patch_gather", "cpu", torch.device("cuda"), fast=_module_name,
                           reference=lambda: "definition")


@pytest.mark.parametrize("fallback", ["reference", "chunked"])
def test_dispatch_falls_back_when_a_triton_kernel_fails_on_a_gpu(monkeypatch, fallback):
    _toy(monkeypatch, backends=("reference", "chunked", "triton"), fallback=fallback)
    monkeypatch.setattr(_dispatch, "interpreter_enabled", lambda: False)
    monkeypatch.setattr(_dispatch, "_triton_availability", lambda: AVAILABLE)
    monkeypatch.setattr(_dispatch, "_triton_broken", set())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def fast(impl):
        if _module_name(impl) == "triton":
            raise RuntimeError("PTX assembly failed")
        return _module_name(impl)

    cuda = torch.device("cuda")
    run = lambda backend: _dispatch.dispatch("toy", backend, cuda, fast=fast, reference=lambda: "reference")
    assert _dispatch.resolve("toy", "auto", cuda) == "triton"
    with pytest.warns(RuntimeWarning, match=f"failed on this GPU.*PyTorch {fallback} backend"):
        assert run("auto") == fallback
    assert _dispatch.resolve("toy", "auto", cuda) == fallback  # never tried again
    assert run("auto") == fallback


def test_auto_on_cpu_runs_the_chunked_hyper_attention():
    assert _dispatch.resolve("hyper_cross_attention", "auto", torch.device("cpu")) == "chunked"


def test_cuda_backend_is_unverified_once_its_sources_change(monkeypatch, tmp_path):
    shutil.copytree(_extension.csrc_dir(), tmp_path / "csrc")
    monkeypatch.setattr(_extension, "csrc_dir", lambda: tmp_path / "csrc")
    _extension.cuda_source_digest.cache_clear()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    monkeypatch.setattr(_dispatch, "_extension_availability", lambda s, b: AVAILABLE)
    spec = _dispatch.OpSpec(name="toy", package="anatokernels.masked_patch", backends=("reference", "cuda"))
    digest = _extension.cuda_source_digest("masked_patch")
    monkeypatch.setitem(_dispatch.CUDA_TESTED_SOURCES, "masked_patch", digest)
    try:
        assert _dispatch.availability(spec, "cuda") == AVAILABLE  # same sources, listed arch
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (8, 0))
        assert _dispatch.availability(spec, "cuda").state == "unverified"  # same sources, other arch
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
        (tmp_path / "csrc" / "common.h").write_text((tmp_path / "csrc" / "common.h").read_text() + "\n// edit\n")
        (tmp_path / "csrc" / "masked_patch" / "unrelated.cpp").write_text("// CPU-only file: not hashed\n")
        _extension.cuda_source_digest.cache_clear()
        status = _dispatch.availability(spec, "cuda")  # an included header changed
        assert status.state == "unverified" and "changed since they passed the GPU tests" in str(status)
        new_digest = _extension.cuda_source_digest("masked_patch")
        monkeypatch.setitem(_dispatch.CUDA_TESTED_SOURCES, "masked_patch", new_digest)
        assert _dispatch.availability(spec, "cuda") == AVAILABLE  # re-verified: the new digest recorded
    finally:
        _extension.cuda_source_digest.cache_clear()


def test_cuda_source_digest_follows_includes():
    names = {p.name for p in _extension.cuda_sources("selective_scan")}
    assert {"selective_scan_cuda.cu", "selective_scan_cuda.cpp", "order_digits.h", "common.h"} <= names
    assert "selective_scan_cpu.cpp" not in names


def test_cuda_segment_is_unavailable_without_a_gpu(monkeypatch):
    """On a CPU machine the segment scan's CUDA backend says why it cannot run; by name on CPU tensors it refuses."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    table = ak.backends()
    for op in ("selective_scan", "selective_scan3d"):
        assert table[op]["cuda_segment"] == Availability("unavailable", "no CUDA device")
    assert table["masked_patch_gather"]["cuda_segment"].state == "unimplemented"
    with pytest.raises(RuntimeError, match="selective_scan3d: backend='cuda_segment' needs CUDA tensors, got cpu"):
        _dispatch.resolve("selective_scan3d", "cuda_segment", torch.device("cpu"))


def test_cuda_segment_needs_its_ops_in_a_cuda_build(monkeypatch):
    spec = _dispatch._REGISTRY["selective_scan3d"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(_extension, "status", lambda: AVAILABLE)
    monkeypatch.setattr(_extension, "has_cuda", lambda: False)
    assert str(_dispatch.availability(spec, "cuda_segment")) == "extension not built with CUDA"
    monkeypatch.setattr(_extension, "has_cuda", lambda: True)
    monkeypatch.setattr(_extension, "has_op", lambda name: "segment" not in name)
    assert str(_dispatch.availability(spec, "cuda_segment")) == (
        "extension lacks selective_scan3d_segment_fwd_cuda, selective_scan3d_segment_bwd_cuda "
        "(rebuild: python -m anatokernels.build)")


@pytest.mark.parametrize("arch", [(8, 0), (8, 6), (8, 9), (9, 0)], ids=lambda a: f"sm{a[0]}{a[1]}")
def test_cuda_segment_is_unverified_on_every_gpu_and_never_auto(monkeypatch, arch):
    """No digest of csrc/selective_scan_segment/ is recorded: unverified everywhere, runs only by name. With a
    digest recorded (after a GPU run) it is available where it passed, and still never picked by ``auto``."""
    spec = _dispatch._REGISTRY["selective_scan3d"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: arch)
    monkeypatch.setattr(_dispatch, "_extension_availability", lambda s, b: AVAILABLE)
    monkeypatch.setattr(_dispatch, "_triton_availability", lambda: AVAILABLE)
    assert "selective_scan_segment" not in _dispatch.CUDA_TESTED_SOURCES
    status = _dispatch.availability(spec, "cuda_segment")
    assert status.state == "unverified" and status.runs_by_name
    assert "csrc/selective_scan_segment/ never passed the GPU tests" in status.reason
    cuda = torch.device("cuda")
    assert _dispatch.resolve("selective_scan3d", "cuda_segment", cuda) == "cuda_segment"
    assert _dispatch.resolve("selective_scan3d", "auto", cuda) in ("cuda", "triton")
    digest = _extension.cuda_source_digest("selective_scan_segment")
    monkeypatch.setitem(_dispatch.CUDA_TESTED_SOURCES, "selective_scan_segment", digest)
    status = _dispatch.availability(spec, "cuda_segment")
    if arch in spec.cuda_verified_on:
        assert status == AVAILABLE
    else:
        assert status.state == "unverified" and "not yet on this" in status.reason
    monkeypatch.setattr(_dispatch, "_triton_availability", lambda: Availability("unavailable", "triton not installed"))
    assert _dispatch.resolve("selective_scan3d", "auto", cuda) in ("cuda", "reference")


def test_cuda_backends_map_to_their_csrc_folders():
    spec = _dispatch._REGISTRY["selective_scan3d"]
    assert _dispatch.cuda_folder(spec, "cuda") == "selective_scan"
    assert _dispatch.cuda_folder(spec, "cuda_segment") == "selective_scan_segment"
    names = {p.name for p in _extension.cuda_sources("selective_scan_segment")}
    assert {"selective_scan_segment_cuda.cu", "selective_scan_segment_cuda.cpp", "segment_backward.h",
            "segment_walk.h"} <= names
