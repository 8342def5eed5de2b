"""`anato --help`, `--version`, `backends`."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from anatoseg import __version__
from anatoseg.cli import app


def test_version_and_help():
    runner = CliRunner()
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "backends" in result.output


def test_backends_json():
    result = CliRunner().invoke(app, ["backends", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.output)["masked_patch_gather"]["reference"] == "available"


def test_console_entry_point_runs():
    out = subprocess.run([sys.executable, "-m", "anatoseg", "--version"], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and __version__ in out.stdout
