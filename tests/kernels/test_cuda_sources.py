"""Compile checks of the CUDA sources on machines without a GPU.

Every ``csrc/**/*.cu`` is plain CUDA (no ATen), compiled with ``nvcc -c`` for
sm_80 and sm_90. Every ``*_cuda.cpp`` binding is syntax-checked with the host
compiler against torch's headers and the CUDA toolkit's headers (a CPU torch
wheel lacks one generated CUDA header; an empty stand-in is provided).
"""

import shutil
import subprocess
from pathlib import Path

import pytest

from anatokernels._extension import csrc_dir

NVCC = shutil.which("nvcc")
CU_FILES = sorted(csrc_dir().rglob("*.cu"))
BINDINGS = sorted(csrc_dir().rglob("*_cuda.cpp"))


def _cuda_include() -> Path:
    return Path(NVCC).resolve().parent.parent / "include" if NVCC else Path("/usr/local/cuda/include")


@pytest.mark.skipif(NVCC is None, reason="nvcc not found")
@pytest.mark.parametrize("arch", ["sm_80", "sm_90"])
@pytest.mark.parametrize("source", CU_FILES, ids=[p.name for p in CU_FILES])
def test_cu_compiles(source, arch, tmp_path):
    cmd = [NVCC, "-std=c++17", f"-arch={arch}", "-O3", f"-I{csrc_dir()}", "-c", str(source),
           "-o", str(tmp_path / "out.o")]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stderr[-4000:]}"


@pytest.mark.skipif(NVCC is None or shutil.which("g++") is None, reason="nvcc or g++ not found")
@pytest.mark.parametrize("source", BINDINGS, ids=[p.name for p in BINDINGS])
def test_cuda_binding_parses(source, tmp_path):
    from torch.utils.cpp_extension import include_paths

    cuda_include = Path("/usr/local/cuda/include")
    if not (cuda_include / "cuda_runtime_api.h").exists():
        cuda_include = _cuda_include()
    stub = tmp_path / "c10" / "cuda" / "impl"
    stub.mkdir(parents=True)
    (stub / "cuda_cmake_macros.h").write_text("")
    cmd = ["g++", "-std=c++20", "-fsyntax-only", "-DANATO_WITH_CUDA", f"-I{csrc_dir()}", f"-I{tmp_path}",
           f"-I{cuda_include}", *[f"-I{p}" for p in include_paths()], str(source)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]


def test_every_cuda_kernel_has_a_binding():
    for cu in CU_FILES:
        assert (cu.parent / (cu.stem + ".cpp")).exists(), f"{cu.name} has no {cu.stem}.cpp ATen binding"
