"""`dhow deploy`: what serves a dataset now, its rollouts, and rolling back by hand."""

from __future__ import annotations

import click

from dhow_cli import app, identity


@click.group()
def deploy() -> None:
    """Deployments of approved models: what serves now, and rolling back by hand."""


@deploy.command("status")
@click.argument("dataset")
@app.json_option
def deploy_status(dataset: str, as_json: bool) -> None:
    """Which model version serves what share of DATASET's traffic, and its rollouts."""
    from shared.wiring import build_deploy_service

    with app.cli_errors(as_json, "cannot read the deployment state"):
        result = build_deploy_service(app.resolve_settings()).status(dataset)

    def text() -> None:
        traffic = result["traffic"]
        click.echo(
            "serving: "
            + (", ".join(f"v{v} {share:.0%}" for v, share in traffic.items()) or "nothing yet")
        )
        for h in result["history"]:
            if h["kind"] == "rollback":
                click.echo(
                    f"  {h['at'][:19]}  rollback  v{h.get('from_version')} -> "
                    f"v{h.get('to_version')} by {h.get('requested_by')}: {h.get('why')}"
                )
            else:
                prev = h.get("previous_version")
                click.echo(
                    f"  {h['at'][:19]}  deploy    v{h.get('model_version')} "
                    f"({h.get('strategy')}, from {('v' + str(prev)) if prev else 'nothing'}) "
                    f"{h['status']}  {h.get('deployment_id', '')}"
                )
                if h.get("reason"):
                    click.echo(f"              {h['reason']}")

    app.emit(as_json, {"ok": True, **result}, text)


@deploy.command("rollback")
@click.argument("dataset")
@click.option(
    "--to",
    "to_version",
    type=int,
    help="Version to serve (default: the newest other approved one).",
)
@click.option("--reason", "why", required=True, help="Why: recorded in lineage with who you are.")
@app.json_option
def deploy_rollback(dataset: str, to_version: int | None, why: str, as_json: bool) -> None:
    """Send all of DATASET's traffic to an earlier version now, stopping any rollout."""
    from shared.wiring import build_deploy_service

    with app.cli_errors(as_json, "cannot roll back"):
        settings = app.resolve_settings()
        # The identity the cloud authenticated, not a name the caller chose.
        who = identity.caller_principal(settings)
        outcome = build_deploy_service(settings).rollback(dataset, to_version, who, why)
    app.emit(
        as_json,
        {
            "ok": True,
            "dataset": dataset,
            "serving": outcome.model_version,
            "id": outcome.deployment_id,
            "requested_by": who,
        },
        lambda: click.echo(
            f"{dataset}: all traffic to v{outcome.model_version} "
            f"({outcome.deployment_id}), recorded as {who}'s"
        ),
    )
