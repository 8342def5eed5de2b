"""csrc/order_digits.h (the CUDA kernels' 32-bit, division-free position math) against the division formula,
built for the host with the system C++ compiler (the header is plain C++)."""

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(shutil.which("g++") is None, reason="no g++")
def test_order_digits_match_the_division_formula(tmp_path):
    exe = tmp_path / "order_digits_check"
    subprocess.run(["g++", "-std=c++17", "-O1", "-I", str(ROOT / "csrc"), "-o", str(exe),
                    str(Path(__file__).parent / "cpp" / "order_digits_check.cpp")], check=True)
    result = subprocess.run([str(exe)], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stdout
