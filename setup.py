"""Packaging for anatokernels and anatoseg.

The C++/CUDA extension ``anatokernels._C`` is *not* built here: it is
JIT-compiled on first use (or ahead of time by ``python -m anatokernels.build``)
against whatever torch is installed, so ``pip install`` needs no compiler, no
CUDA toolkit and no torch at build time. This file only maps the two packages
and ships ``csrc/`` inside the wheel (as ``anatokernels/_csrc``) so that a
non-editable install can still compile the extension.
"""

import shutil
from pathlib import Path

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent


class BuildPyWithSources(build_py):
    """Copy the top-level csrc/ tree into the built package as anatokernels/_csrc."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "anatokernels" / "_csrc"
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(ROOT / "csrc", target, ignore=shutil.ignore_patterns("__pycache__", "*.o", "*.so"))


packages = find_packages(include=["anatokernels", "anatokernels.*"])
packages += ["anatoseg"] + [f"anatoseg.{p}" for p in find_packages(where="model/anatoseg")]

setup(
    packages=packages,
    package_dir={"anatoseg": "model/anatoseg"},
    cmdclass={"build_py": BuildPyWithSources},
)
