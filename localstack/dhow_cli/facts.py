"""`dhow facts`: the cloud rules Dhow relies on, each with its source."""

from __future__ import annotations

import click

from dhow_cli import app


@click.command("facts")
@click.option("--cloud", type=click.Choice(["aws", "azure"]), help="Only this cloud's facts.")
@app.json_option
def facts_cmd(cloud: str | None, as_json: bool) -> None:
    """List the cloud rules Dhow relies on, each with its documentation source."""
    from shared.cloud_facts import facts

    with app.cli_errors(as_json, "cannot read the cloud facts"):
        rows = [f for f in facts().values() if cloud in (None, f.cloud)]

    def text() -> None:
        for f in rows:
            click.echo(f"{f.id}\n  {f.rule}\n  value: {f.value}\n  source: {f.source}")

    app.emit(as_json, {"ok": True, "facts": [f.as_dict() for f in rows]}, text)
