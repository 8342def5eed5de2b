"""Turn a pytest-benchmark JSON (and optionally a junit XML of the GPU tests) into one results file.

    python benchmarks/collect.py RAW.json [TESTS.xml] [GOLDEN.json]

writes ``benchmarks/results/<device>-<commit>.json``: device name, versions,
commit, timestamp, test outcome counts, and one row per benchmark (kernel,
provider, mode, size, median/q1/q3 in ms, and its extra_info such as bytes,
bandwidth and peak memory), and the golden comparisons of ``benchmarks/golden.py check`` if given.
Missing inputs (a step that timed out) are recorded as absent, never an error.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def _commit() -> str:
    if os.environ.get("ANATO_COMMIT"):  # a copy of the tree without .git (e.g. a lent GPU machine)
        return os.environ["ANATO_COMMIT"]
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _device() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"cpu-{platform.machine()}"


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "cuda": str(torch.version.cuda)}
    try:
        import triton

        versions["triton"] = triton.__version__
    except ImportError:
        versions["triton"] = "absent"
    return versions


def _tests(xml_path: Path | None) -> dict[str, object]:
    if xml_path is None or not xml_path.exists():
        return {}
    root = ET.parse(xml_path).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [f"{case.get('classname')}::{case.get('name')}" for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    return {**counts, "failed": failed}


def _golden(path: Path | None) -> list[dict] | str:
    if path is None:
        return []
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        return f"absent or unreadable: {exc}"


def rows(raw: dict) -> list[dict]:
    out = []
    for entry in raw.get("benchmarks", []):
        stats = entry["stats"]
        row = {"name": entry["name"], "median_ms": stats["median"] * 1e3, "q1_ms": stats["q1"] * 1e3,
               "q3_ms": stats["q3"] * 1e3, "rounds": stats["rounds"]}
        row.update(entry.get("extra_info", {}))
        out.append(row)
    return out


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    raw_path = Path(argv[0])
    try:
        raw = json.loads(raw_path.read_text()) if raw_path.exists() else {}
    except ValueError:  # a benchmark run cut off while writing
        raw = {}
    device = _device()
    commit = _commit()
    report = {"device": device, "commit": commit, "timestamp": datetime.now(timezone.utc).isoformat(),
              "versions": _versions(), "tests": _tests(Path(argv[1]) if len(argv) > 1 else None),
              "benchmarks": rows(raw), "golden": _golden(Path(argv[2]) if len(argv) > 2 else None)}
    RESULTS.mkdir(exist_ok=True)
    target = RESULTS / f"{re.sub(r'[^A-Za-z0-9._-]+', '_', device)}-{commit}.json"
    target.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {target} ({len(report['benchmarks'])} benchmarks)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
