"""``python benchmarks/static/run.py [args]``: the same as ``python -m benchmarks.static``."""

import os
import runpy
import sys
from pathlib import Path

os.environ["TRITON_INTERPRET"] = "0"
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
runpy.run_module("benchmarks.static", run_name="__main__")
