"""``anato experiment``: its help and one-line errors for bad input before any work (anatoseg.cli)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from anatoseg.cli import app

from cli_testing import run_anato


def test_help_names_the_options():
    result = CliRunner().invoke(app, ["experiment", "--help"])
    assert result.exit_code == 0
    for option in ("--scale", "--variants", "--seeds", "--set", "--no-sanity", "--jobs", "--device"):
        assert option in result.output


@pytest.mark.parametrize("args, message", [
    (["--scale", "huge"], "error: unknown scale 'huge'; choose one of cpu, gpu"),
    (["--variants", "nope"], "error: unknown variant or group 'nope'"),
    (["--seeds", "0"], "error: --seeds must be at least 1, got 0"),
    (["--set", "stepz=3"], "error: --set 'stepz=3': expected field=value"),
    (["--jobs", "0"], "error: --jobs must be a whole number of at least 1, got 0"),
], ids=["scale", "variant", "seeds", "set", "jobs"])
def test_bad_input_is_one_line_and_exit_1_before_any_work(monkeypatch, capsys, tmp_path, args, message):
    code, _, err = run_anato(monkeypatch, capsys, "experiment", tmp_path / "out", *args)
    assert code == 1 and err.startswith(message) and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
