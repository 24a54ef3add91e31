"""`dhow compliance report`: residency and privacy evidence an auditor can read."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from dhow_cli import app


@click.group("compliance")
def compliance() -> None:
    """Evidence of UAE residency and privacy, from the stacks and the specs."""


@compliance.command("report")
@click.option(
    "--cloud",
    type=click.Choice(["aws", "azure", "both"]),
    default="both",
    show_default=True,
    help="Which stack: aws-uae, azure-uae or both.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("compliance-report"),
    show_default=True,
    help="Directory for compliance.html and compliance.json.",
)
@click.option(
    "--from-state",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A real stack's `pulumi stack export` JSON, instead of the program under mocks.",
)
@app.json_option
def report(cloud: str, out: Path, from_state: Path | None, as_json: bool) -> None:
    """Every resource with its region, encryption at rest, public access and retention;
    every role with what it may do; the policy pack's verdicts; each dataset's personal
    data and where its copies live. Exits 1 when anything fails."""
    from infra.compliance import Cloud, build_report
    from infra.compliance_page import write

    clouds: list[Cloud] = ["aws", "azure"] if cloud == "both" else [cloud]  # type: ignore[list-item]
    with app.cli_errors(as_json, "cannot build the compliance report"):
        built = build_report(clouds, from_state)
        page, document = write(built, out)
    failures = built.failures

    def text() -> None:
        for s in built.stacks:
            click.echo(
                f"{s.stack}: {len(s.resources)} resources, {len(s.roles)} roles, "
                f"{len(s.verdicts)} policy violations ({s.source})"
            )
        for f in failures:
            click.secho(f"FAIL {f.stack} {f.resource}: {f.what}", fg="red")
        click.echo(f"wrote {page} and {document}")

    app.emit(
        as_json,
        {
            "ok": not failures,
            "html": str(page),
            "json": str(document),
            "failures": [f.__dict__ for f in failures],
        },
        text,
    )
    if failures:
        sys.exit(app.EXIT_REJECTED)
