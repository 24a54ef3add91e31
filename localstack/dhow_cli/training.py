"""`dhow train`: a retrain by hand, recorded with who asked and why."""

from __future__ import annotations

import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import click

from dhow_cli import app, identity
from dhow_cli.follow import follow
from shared.events import ModelApproved
from shared.layout import DatasetVersion
from shared.topology import build_topology


@click.command("train")
@click.argument("dataset")
@click.option("--instance-type", help="Train on this type instead of the spec's list.")
@click.option("--wait", is_flag=True, help="Follow the job to the model's verdict.")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds --wait waits at most.")
@click.option("--reason", "why", help="Why: recorded in the audit trail with who you are.")
@app.json_option
def train(
    dataset: str,
    instance_type: str | None,
    wait: bool,
    timeout: float,
    why: str | None,
    as_json: bool,
) -> None:
    """Retrain DATASET by hand on its latest validated version (recorded with who asked,
    as the cloud authenticated them, and why)."""
    from shared.services.train_launch import latest_validated
    from shared.wiring import build_event_tap, build_ports, build_train_launch_service

    with app.cli_errors(as_json, "cannot launch training"):
        settings = app.resolve_settings()
        topo = build_topology(settings.stage)
        ports = build_ports(settings, topo)
        correlation = f"train-{uuid.uuid4().hex}"
        event = latest_validated(ports.lineage, dataset, correlation)
        tap = build_event_tap(settings) if wait else None
        t0 = time.monotonic()
        user = identity.caller_principal(settings)
        outcome = build_train_launch_service(settings, ports).handle(
            event,
            instance_type=instance_type,
            run_tag=f"manual-{datetime.now(UTC):%Y%m%dT%H%M%S}",
            requested_by=user,
            reason=why,
        )
    if not as_json:
        click.echo(
            f"retraining {dataset} version {DatasetVersion(dataset, event.sha256).version} "
            f"for {user}: "
            f"{outcome.status} {outcome.job_name or ''}".rstrip()
        )
    events: list[dict[str, Any]] = []
    final = follow(tap, correlation, t0, timeout, as_json, events) if tap else None
    ok = outcome.status == "launched" and (tap is None or isinstance(final, ModelApproved))
    app.emit(
        as_json,
        {
            "ok": ok,
            "status": outcome.status,
            "job_name": outcome.job_name,
            "sha256": event.sha256,
            "events": events,
            "timed_out": tap is not None and final is None,
        },
        lambda: None,
    )
    if tap is not None and final is None:
        sys.exit(app.EXIT_TIMEOUT)
    if not ok:
        sys.exit(app.EXIT_REJECTED)
