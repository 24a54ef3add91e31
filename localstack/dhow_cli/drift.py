"""Monitoring: `dhow captures` (what the serve function captured) and `dhow drift`
(checks of those captures against the champion's training data)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from dhow_cli import app, identity
from shared.topology import build_topology


@click.command("captures")
@click.argument("dataset")
@click.option("--limit", default=5, show_default=True, help="Show the newest N rows.")
@app.json_option
def captures(dataset: str, limit: int, as_json: bool) -> None:
    """Rows the serve function captured for DATASET (inputs, prediction, version, time)."""
    from shared.capture import read_captures
    from shared.wiring import build_ports

    with app.cli_errors(as_json, "cannot read the captures"):
        settings = app.resolve_settings()
        container = build_topology(settings.stage).bucket("capture").name
        rows = read_captures(build_ports(settings).store, container, dataset)

    def text() -> None:
        by: dict[str, int] = {}
        for r in rows:
            by[str(r["model_version"])] = by.get(str(r["model_version"]), 0) + 1
        click.echo(
            f"{len(rows)} captured rows in {container}/datasets/{dataset}/ "
            f"({', '.join(f'v{v}: {n}' for v, n in sorted(by.items())) or 'none yet'})"
        )
        for r in rows[-limit:]:
            click.echo(
                f"  {r['captured_at'][:19]} v{r['model_version']} -> {r['prediction']}  "
                + json.dumps(r["inputs"])[:120]
            )

    app.emit(
        as_json, {"ok": True, "dataset": dataset, "total": len(rows), "rows": rows[-limit:]}, text
    )


@click.group()
def drift() -> None:
    """Drift checks: captured inputs against the champion's training data."""


def _print_check(r: dict[str, Any]) -> None:
    verdict = str(r["verdict"]).replace("_", " ")
    share = f", {r['drift_share']:.0%} of columns drifted" if r["drift_share"] is not None else ""
    click.echo(
        f"{r['dataset']}: {verdict.upper()}{share} "
        f"({r['current_rows']} captured rows vs {r['reference_rows']} reference rows, "
        f"model v{r['model_version']})"
    )
    for c in r["columns"]:
        mark = "DRIFT" if c["drifted"] else "ok"
        click.echo(
            f"  {c['column']:<20} {c['stattest']:<14} {c['statistic']:>11.4g}  "
            f"threshold {c['threshold']:<6g} {mark}"
        )
    if r.get("note"):
        click.echo(f"  note: {r['note']}")
    if r["action"] in ("retrain", "rollback"):
        click.echo(f"  action: {r['action']} requested (policy)")
    elif r["action"] == "alert":
        until = r.get("cooldown_until")
        click.echo(
            "  action: alert" + (f" only; policy cooling down until {until}" if until else "")
        )
    click.echo(f"  summary: {r['summary']}")
    if r.get("report"):
        click.echo(f"  report:  {r['report']}")


@drift.command("run")
@click.argument("dataset")
@app.json_option
def drift_run(dataset: str, as_json: bool) -> None:
    """Check DATASET for drift now, as its schedule would (exit 1 on drift)."""
    from shared.wiring import build_drift_service

    with app.cli_errors(as_json, "cannot run the drift check"):
        settings = app.resolve_settings()
        who = identity.caller_principal(settings)
        if not as_json:
            click.echo(f"checking {dataset} (evidently's report takes a few seconds) ...")
        outcome = build_drift_service(settings).check(dataset, requested_by=who)
    result = outcome.as_dict()
    app.emit(as_json, {"ok": True, **result}, lambda: _print_check(result))
    if outcome.verdict.verdict == "drift":
        sys.exit(app.EXIT_REJECTED)


@drift.command("status")
@click.argument("dataset")
@click.option("--limit", default=10, show_default=True, help="Show the newest N checks.")
@app.json_option
def drift_status(dataset: str, limit: int, as_json: bool) -> None:
    """DATASET's recent drift checks: verdict, drifted columns, action, report."""
    from shared.services.drift import drift_history
    from shared.wiring import build_ports

    with app.cli_errors(as_json, "cannot read the drift checks"):
        rows = drift_history(build_ports(app.resolve_settings()).lineage, dataset, limit)
    checks = [
        {"checked_at": r.created_at.isoformat(), "verdict": r.status, **r.attributes} for r in rows
    ]

    def text() -> None:
        if not checks:
            click.echo(f"{dataset}: no drift checks yet (run `dhow drift run {dataset}`)")
        for c in checks:
            cols = ", ".join(c.get("drifted_columns") or []) or "-"
            click.echo(
                f"{c['checked_at'][:19]}  {c['verdict']:<17} rows {c.get('current_rows')!s:<7} "
                f"action {c.get('action')!s:<8} drifted: {cols}"
            )
            if c.get("report"):
                click.echo(f"{'':21}report {c['report']}")

    app.emit(as_json, {"ok": True, "dataset": dataset, "checks": checks}, text)
