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
    """Show each op's backends (reference, chunked, triton, cuda, cpu) and whether they are usable here."""
    import anatokernels

    # "available" or the reason, per backend: the same strings as before Availability values existed
    table = {name: {backend: str(status) for backend, status in entries.items()}
             for name, entries in anatokernels.backends(build=build).items()}
    if as_json:
        typer.echo(json.dumps(table, indent=2))
        return
    width = max(len(name) for name in table)
    for name, entries in table.items():
        typer.echo(name)
        for backend, status in entries.items():
            typer.echo(f"  {backend:<{width}} {status}")
