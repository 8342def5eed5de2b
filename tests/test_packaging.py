"""The distribution as a user gets it: sdist -> wheel, its contents and metadata, and a clean install.

The wheel is built from a copy of the working tree (the files git tracks or would track), through the
sdist, with the setuptools of this environment (no build isolation, nothing downloaded). The slow test
installs it into a new virtual environment with the base dependencies only (torch, ninja: no triton, no
numpy, none of the method's dependencies) and, with no ``ninja`` usable on PATH, builds the C++ CPU
kernels and runs one op with ``backend="cpu"`` against the reference.
"""

from __future__ import annotations

import ast
import email.parser
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_ROOTS = {"anatokernels": ROOT / "anatokernels", "anatoseg": ROOT / "model" / "anatoseg"}
BASE = {"torch", "ninja"}  # what `pip install anatokernels` brings
NOT_IMPORTED = {"einops": "MONAI's UNETR (the unetr baseline) needs it at run time"}
DIST_OF_IMPORT = {"yaml": "pyyaml"}
MISSING_SEG = "error: the anato CLI needs the method's dependencies: pip install 'anatokernels[seg]'"


def _run(cmd: list[str], *, timeout: float, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)
    command = " ".join(map(str, cmd))
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _source_files() -> list[str]:
    """The working tree as a clone would have it (tracked or untracked-but-not-ignored files)."""
    try:
        out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                             check=True, timeout=60).stdout.decode()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the wheel test copies the files git would ship")
    return [name for name in out.split("\0") if name and (ROOT / name).is_file()]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """sdist of a copy of the working tree, then the wheel from that sdist (as pip does from PyPI)."""
    work = tmp_path_factory.mktemp("dist")
    source, dist = work / "src", work / "dist"
    for name in _source_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, source / name)
    _run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(dist)!r})"],
         cwd=source, timeout=300)
    (sdist,) = dist.glob("anatokernels-*.tar.gz")
    _run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", dist, sdist],
         cwd=work, timeout=300)
    (built,) = dist.glob("anatokernels-*.whl")
    return built


def _names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def _metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.parser.Parser().parsestr(archive.read(name).decode())


def _requirements(wheel: Path) -> dict[str | None, set[str]]:
    """{extra, or None for the base install: its distribution names (with their own extras)}."""
    metadata = _metadata(wheel)
    out: dict[str | None, set[str]] = {None: set(), **{e: set() for e in metadata.get_all("Provides-Extra") or []}}
    for line in metadata.get_all("Requires-Dist") or []:
        req = Requirement(line)
        extra = re.search(r"""extra == ['"]([\w-]+)['"]""", str(req.marker or ""))
        extras = f"[{','.join(sorted(req.extras))}]" if req.extras else ""
        out[extra and extra.group(1)].add(req.name.lower() + extras)
    return out


def _third_party_imports(folder: Path) -> set[str]:
    """Distribution names of what ``folder``'s .py files import (anywhere in them), except the standard
    library and the two packages themselves."""
    names: set[str] = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(a.name.partition(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.partition(".")[0])
    return {DIST_OF_IMPORT.get(n, n) for n in names
            if n not in sys.stdlib_module_names and n not in ("__future__", "anatokernels", "anatoseg")}


def test_wheel_contents(wheel):
    names = _names(wheel)
    others = {n.split("/")[0] for n in names} - {"anatokernels", "anatoseg"}
    assert len(others) == 1 and next(iter(others)).endswith(".dist-info"), f"top-level entries: {others}"
    junk = [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".so", ".o"))]
    assert not junk, junk
    # every module of both packages (a folder without __init__.py would be left out silently)
    for package, folder in PACKAGE_ROOTS.items():
        missing = [f"{package}/{p.relative_to(folder).as_posix()}" for p in folder.rglob("*.py")
                   if "__pycache__" not in p.parts and f"{package}/{p.relative_to(folder).as_posix()}" not in names]
        assert not missing, f"modules left out of the wheel: {missing}"
    # the C++/CUDA sources the JIT build needs, as anatokernels/_csrc/
    csrc = ROOT / "csrc"
    sources = {f"anatokernels/_csrc/{p.relative_to(csrc).as_posix()}" for p in csrc.rglob("*")
               if p.suffix in (".cpp", ".cu", ".h", ".cuh")}
    assert sources and sources <= set(names), sorted(sources - set(names))


def test_wheel_metadata(wheel):
    requires = _requirements(wheel)
    assert set(requires) == {None, "seg", "triton", "dev"}, requires
    assert requires[None] == BASE
    assert requires["triton"] == {"triton"}
    assert requires["dev"] >= {"anatokernels[seg,triton]", "pytest"}
    # the base install is what anatokernels imports (triton: the extra), the seg extra what anatoseg imports
    kernels = _third_party_imports(PACKAGE_ROOTS["anatokernels"])
    assert kernels - {"triton"} == BASE, f"imported by anatokernels: {sorted(kernels)}, base: {sorted(BASE)}"
    method = _third_party_imports(PACKAGE_ROOTS["anatoseg"]) - BASE
    assert method <= requires["seg"], f"anatoseg imports {sorted(method - requires['seg'])}, not in the seg extra"
    unused = requires["seg"] - method - set(NOT_IMPORTED)
    assert not unused, f"seg extra declares {sorted(unused)}, which anatoseg never imports"
    with zipfile.ZipFile(wheel) as archive:
        (entry,) = [n for n in archive.namelist() if n.endswith(".dist-info/entry_points.txt")]
        assert "anato = anatoseg.console:main" in archive.read(entry).decode()


CHECK = textwrap.dedent("""
    import importlib.util, sys
    import torch
    import anatokernels
    from anatokernels import _extension

    assert anatokernels.__file__.startswith(sys.prefix), anatokernels.__file__
    present = [m for m in ("triton", "numpy", "monai", "nibabel", "typer", "scipy", "matplotlib", "einops")
               if importlib.util.find_spec(m) is not None]
    assert not present, f"the base install brought {present}"
    table = anatokernels.backends()
    assert str(table["order_conv1d"]["triton"]) == "triton not installed", table["order_conv1d"]
    assert table["order_conv1d"]["cpu"].is_available, table["order_conv1d"]["cpu"]
    assert _extension._state["loaded"].startswith(sys.argv[1]), _extension._state

    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 2, 3, 4 * 5 * 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(2, 3, 4, dtype=torch.float64, generator=g, requires_grad=True)
    b = torch.randn(2, 3, dtype=torch.float64, generator=g, requires_grad=True)
    results = []
    for backend in ("cpu", "reference"):
        y = anatokernels.order_conv1d(x, w, b, spatial_shape=(4, 5, 6), orders=("zyx", "-zyx"), backend=backend)
        results.append((y, *torch.autograd.grad(y.square().sum(), (x, w, b))))
    for fast, ref in zip(*results):
        torch.testing.assert_close(fast, ref, rtol=1e-9, atol=1e-9)
    print("ok")
""")


@pytest.mark.slow
def test_clean_install_builds_and_runs_cpu_kernels(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], timeout=120)  # this pip installs into it
    python, scripts = venv / "bin" / "python", venv / "bin"
    if not python.exists():  # Windows layout
        python, scripts = venv / "Scripts" / "python.exe", venv / "Scripts"
    torch_version = torch.__version__.split("+")[0]  # this environment's torch, from the same index
    pip = [sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-compile",
           "--disable-pip-version-check"]
    _run([*pip, f"torch=={torch_version}"], timeout=600)
    _run([*pip, wheel], timeout=300)

    # A `ninja` that fails shadows any on PATH, and the environment is not activated: the build must
    # find the ninja that came with the base install on its own.
    fake = tmp_path / "fakebin"
    fake.mkdir()
    (fake / "ninja").write_text("#!/bin/sh\nexit 127\n")
    (fake / "ninja").chmod(0o755)
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d and Path(d).resolve() != Path(
        sys.executable).parent.resolve()]
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("ANATO_", "PYTHON", "VIRTUAL_ENV", "TRITON_"))}
    ext = tmp_path / "ext"
    env.update(PATH=os.pathsep.join([str(fake), *dirs]), ANATO_EXT_DIR=str(ext), PYTHONNOUSERSITE="1")

    _run([python, "-m", "anatokernels.build"], env=env, cwd=tmp_path, timeout=900)
    (tmp_path / "check.py").write_text(CHECK)
    assert _run([python, "check.py", ext], env=env, cwd=tmp_path, timeout=300).stdout.strip().endswith("ok")

    anato = subprocess.run([scripts / "anato", "--version"], capture_output=True, text=True, env=env,
                           cwd=tmp_path, timeout=120)
    assert anato.returncode == 1 and anato.stderr.strip() == MISSING_SEG, (anato.returncode, anato.stderr)
