"""The ``anato`` Typer application. Each command lives in its own module of
this package and registers itself on :data:`app` with ``@app.command()``."""

from __future__ import annotations

import typer

from anatoseg import __version__

#: ``-h`` is ``--help`` on ``anato`` and, inherited through the click context, on every command.
HELP_OPTIONS = {"help_option_names": ["-h", "--help"]}

app = typer.Typer(
    name="anato",
    help="Whole-body PET-CT lesion segmentation with anatomy-guided prompting (anatoseg).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings=HELP_OPTIONS,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"anato (anatoseg) {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                 help="Print the version and exit."),
) -> None:
    """Whole-body PET-CT lesion segmentation with anatomy-guided prompting."""
