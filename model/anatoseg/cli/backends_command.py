"""``anato backends``: which kernel backends this machine has."""

from __future__ import annotations

import json

import typer

from anatoseg.cli.app import app


@app.command("backends")
def backends(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    build: bool = typer.Option(False, "--build", help="Compile the C++ extension first if it is missing."),
) -> None:
    """Show each op's backends (reference, triton, cuda, cpu) and whether they are usable here."""
    import anatokernels
    from anatokernels import _extension

    if build:
        _extension.load(build=True)
    table = anatokernels.backends()
    if as_json:
        typer.echo(json.dumps(table, indent=2))
        return
    width = max(len(name) for name in table)
    for name, entries in table.items():
        typer.echo(name)
        for backend, status in entries.items():
            typer.echo(f"  {backend:<{width}} {status}")
