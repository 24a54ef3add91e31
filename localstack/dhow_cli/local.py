"""`dhow local`: the local platform (up, down, status) and the alerts it delivered."""

from __future__ import annotations

import sys

import click

from dhow_cli import app
from shared.errors import DhowError
from shared.topology import build_topology


@click.group()
def local() -> None:
    """The local platform: LocalStack (or Azurite), the topology and the runner."""


@local.command("up")
@click.option("--cloud", type=click.Choice(["aws", "azure"]), default="aws", show_default=True)
@app.json_option
def local_up(cloud: str, as_json: bool) -> None:
    """Start the emulator, create the topology in it and start the local runner."""
    from dhow_local import control
    from dhow_local.kit import LOCAL_KITS

    from shared.settings import Settings

    try:
        settings = LOCAL_KITS[cloud].emulated(Settings.from_env())
        result = control.up(
            settings.cloud, settings, progress=(lambda _m: None) if as_json else click.echo
        )
    except DhowError as exc:
        app.fail(as_json, exc)

    def text() -> None:
        r = result["resources"]
        click.echo(f"up in {result['seconds']}s, region {result['region']}, mode {result['mode']}")
        click.echo(f"  buckets: {', '.join(r['buckets'])}")
        click.echo(f"  queues:  {', '.join(r['queues'])}")
        click.echo(f"  tables:  {', '.join(r['tables'])}")
        for p in result["processes"]:
            click.echo(f"  {p['name']}: pid {p['pid']}, log {p['log']}")

    app.emit(as_json, {"ok": True, **result}, text)


@local.command("down")
@app.json_option
def local_down(as_json: bool) -> None:
    """Stop every process `local up` started (SIGTERM, then SIGKILL), also those no state
    file lists any more (found by the marker `up` puts in their environment)."""
    from dhow_local import control

    try:
        result = control.down()
    except DhowError as exc:
        app.fail(as_json, exc)

    def text() -> None:
        click.echo(
            "\n".join(f"{k}: {v}" for k, v in result["stopped"].items()) or "nothing was running"
        )
        for p in result["found_by_marker"]:
            click.echo(f"  ({p['name']}, pid {p['pid']}: no state listed it; found by its marker)")

    app.emit(as_json, {"ok": True, **result}, text)


@local.command("status")
@app.json_option
def local_status(as_json: bool) -> None:
    """Report whether the local platform is up and healthy (exit 4 if not)."""
    from dhow_local import control

    result = control.status()

    def text() -> None:
        click.echo(f"cloud {result['cloud']}, mode {result['mode']}, ready: {result['ready']}")
        for p in result["processes"]:
            state = "DEAD" if not p["alive"] else "running" if p["answering"] else "NOT ANSWERING"
            click.echo(f"  {p['name']}: pid {p['pid']} {state} (log {p['log']})")
        if result["localstack_services"]:
            services = ", ".join(f"{k}={v}" for k, v in result["localstack_services"].items())
            click.echo(f"  services: {services}")

    app.emit(as_json, {"ok": result["ready"], **result}, text)
    if not result["ready"]:
        sys.exit(app.EXIT_PLATFORM)


@local.command("alerts")
@click.option("--wait", default=0.0, show_default=True, help="Seconds to wait for one.")
@app.json_option
def local_alerts(wait: float, as_json: bool) -> None:
    """Alerts the local alerts topic delivered (what on-call would get), oldest first;
    each is shown once."""
    from dhow_local.provision import alert_inbox

    from shared.services.alerts import drain_alerts

    with app.cli_errors(as_json, "cannot read the local alerts"):
        settings = app.resolve_settings()
        topic = build_topology(settings.stage).topic("alerts").name
        alerts = [
            {"subject": a.subject, "message": a.message}
            for a in drain_alerts(alert_inbox(settings, topic), wait)
        ]

    def text() -> None:
        if not alerts:
            click.echo("no alerts")
        for a in alerts:
            click.echo(f"--- {a['subject']}")
            click.echo(a["message"])

    app.emit(as_json, {"ok": True, "topic": topic, "alerts": alerts}, text)
