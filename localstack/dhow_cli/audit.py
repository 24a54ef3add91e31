"""`dhow audit`: who did what, to which version, why and when."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import click

from dhow_cli import app
from shared.audit import AUDIT_KINDS

# click's own formats, and the same with an offset (2026-11-02T13:00:00+04:00, Gulf time).
_AUDIT_TIME = click.DateTime(
    ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]
)


@click.command("audit")
@click.option("--dataset", help="Only this dataset's entries.")
@click.option("--since", type=_AUDIT_TIME, help="Entries at or after (UTC unless an offset).")
@click.option("--until", type=_AUDIT_TIME, help="Entries at or before (UTC unless an offset).")
@click.option("--principal", help="Entries whose principal contains this (any case).")
@click.option(
    "--kind",
    "kinds",
    multiple=True,
    type=click.Choice(AUDIT_KINDS),
    help="Entries of this kind (repeatable).",
)
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the entries to this CSV file (for a compliance officer).",
)
@app.json_option
def audit(
    dataset: str | None,
    since: datetime | None,
    until: datetime | None,
    principal: str | None,
    kinds: tuple[str, ...],
    csv_path: Path | None,
    as_json: bool,
) -> None:
    """Every action the platform or a person took, oldest first: who (as the cloud
    authenticated them), what, to which version, why and when."""
    from shared.audit import AuditFilter, AuditTrail, to_csv
    from shared.wiring import build_ports

    def utc(t: datetime | None) -> datetime | None:
        return t if t is None or t.tzinfo else t.replace(tzinfo=UTC)

    flt = AuditFilter(
        dataset=dataset,
        since=utc(since),
        until=utc(until),
        principal=principal,
        kinds=frozenset(kinds),
    )
    with app.cli_errors(as_json, "cannot read the audit trail"):
        entries = AuditTrail(build_ports(app.resolve_settings()).lineage).entries(flt)
    if csv_path is not None:
        csv_path.write_text(to_csv(entries), encoding="utf-8")

    def text() -> None:
        if csv_path is not None:
            click.echo(f"wrote {len(entries)} entries to {csv_path}")
            return
        if not entries:
            click.echo("no entries")
        for x in entries:
            click.echo(
                f"{x.at:%Y-%m-%d %H:%M:%S}  {x.dataset:<14} {x.kind:<15} {x.action}  "
                f"{x.version or ''}  by {x.principal or '(unrecorded)'} [{x.principal_source}]"
                + (f"  why: {x.reason}" if x.reason else "")
            )

    app.emit(
        as_json,
        {
            "ok": True,
            "filter": flt.model_dump(mode="json"),
            "csv": str(csv_path) if csv_path is not None else None,
            "entries": [x.model_dump(mode="json") for x in entries],
        },
        text,
    )
