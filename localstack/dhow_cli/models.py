"""What was learnt: `dhow models` (the registry's versions) and `dhow lineage` (every
upload of a dataset, or one model version back to the upload it learnt from)."""

from __future__ import annotations

from typing import Any

import click

from dhow_cli import app
from shared.errors import DhowError
from shared.lineage import LineageKind
from shared.ports import champion_of
from shared.reasons import Reason


def _uploader(attributes: dict[str, Any]) -> str:
    """Who uploaded, as storage authenticated them (``uploaded_by``), with the name the
    upload's metadata claimed beside it when it says something else."""
    proven = str(attributes.get("uploaded_by") or "")
    claimed = str(attributes.get("claimed_uploader") or "")
    if not proven:
        return f"{claimed} (claimed)" if claimed else str(attributes.get("uploader") or "")
    return proven if claimed in ("", proven) else f"{proven} (claims {claimed})"


@click.command("lineage")
@click.argument("target", metavar="DATASET[@vN]")
@app.json_option
def lineage(target: str, as_json: bool) -> None:
    """Show what happened to every upload of DATASET, oldest first; or, for DATASET@vN,
    trace model version N back to the raw upload it learnt from."""
    from shared.wiring import build_ports

    if "@" in target:
        _model_lineage(target, as_json)
        return
    dataset = target

    with app.cli_errors(as_json, "cannot read lineage"):
        rows = build_ports(app.resolve_settings()).lineage.list(dataset)

    def text() -> None:
        if not rows:
            click.echo(f"no lineage for {dataset!r} yet")
        for r in rows:
            a = r.attributes
            where = a.get("source") or ""
            if r.kind == LineageKind.TRAIN:
                what, where = f"job {a.get('job_name')} on {a.get('instance_type')}", ""
            elif r.kind == LineageKind.REGISTER:
                verdict = f"model v{a['model_version']}" if a.get("model_version") else ""
                what = f"{verdict} {a.get('gate') or a.get('reason') or ''}".strip()
                where = ""
            elif a.get("reason"):
                what = str(a["reason"])
            elif r.kind == LineageKind.VALIDATE:
                what = f"{a.get('rows', '?')} rows, spec {a.get('spec_version')}"
            else:
                what = str(a.get("version", ""))
            click.echo(
                f"{r.created_at:%Y-%m-%d %H:%M:%S}  {r.kind:<15} {r.status:<9} "
                f"{what}  {where}  {_uploader(a)}".rstrip()
            )

    app.emit(
        as_json,
        {"ok": True, "dataset": dataset, "records": [r.model_dump(mode="json") for r in rows]},
        text,
    )


def _model_lineage(target: str, as_json: bool) -> None:
    from shared.wiring import build_model_registry, build_ports

    dataset, _, tag = target.partition("@")
    try:
        number = int(tag.removeprefix("v"))
    except ValueError:
        app.fail(
            as_json,
            DhowError(
                f"{target!r} names no model version",
                reason=Reason.INVALID_VERSION,
                hint=f"write it as {dataset}@v3 (see `dhow models {dataset}`)",
            ),
        )
    with app.cli_errors(as_json, "cannot read lineage"):
        settings = app.resolve_settings()
        version = build_model_registry(settings).version(dataset, number)
        if version is None:
            raise DhowError(
                f"{dataset} has no model version {number}",
                reason=Reason.UNKNOWN_MODEL_VERSION,
                hint=f"`dhow models {dataset}` lists the versions",
            )
        sha = version.lineage.get("sha256", "")
        rows = [
            r
            for r in build_ports(settings).lineage.list(dataset)
            if r.attributes.get("sha256") == sha
        ]

    def text() -> None:
        m, lin = version, version.lineage
        metrics = ", ".join(
            f"{k}={v:.4f}" for k, v in sorted(m.metrics.items()) if not k.startswith("n_")
        )
        click.echo(f"model {dataset} v{m.version}  {m.status}  {metrics}")
        click.echo(f"  artifact   {m.artifact}")
        click.echo(
            f"  trained by {lin.get('job_name')} on {lin.get('instance_type')} "
            f"(trainer {lin.get('trainer_version')}, spec {lin.get('spec_version')})"
        )
        click.echo(f"  learnt from {lin.get('curated')}")
        for r in rows:
            a = r.attributes
            if r.kind == LineageKind.VALIDATE:
                click.echo(
                    f"  validated  {r.updated_at:%Y-%m-%d %H:%M:%S}  {a.get('rows')} rows "
                    f"against spec {a.get('spec_version')}, staged {a.get('staged')}"
                )
            elif r.kind == LineageKind.INGEST:
                click.echo(
                    f"  uploaded   {r.created_at:%Y-%m-%d %H:%M:%S}  {a.get('source')} "
                    f"by {_uploader(a) or 'unknown'}, sha256 {sha}"
                )

    app.emit(
        as_json,
        {
            "ok": True,
            "model": version.model_dump(mode="json"),
            "records": [r.model_dump(mode="json") for r in rows],
        },
        text,
    )


@click.command("models")
@click.argument("dataset")
@app.json_option
def models(dataset: str, as_json: bool) -> None:
    """List DATASET's registered model versions, newest first, with status and metrics."""
    from shared.wiring import build_model_registry

    with app.cli_errors(as_json, "cannot read the model registry"):
        versions = build_model_registry(app.resolve_settings()).versions(dataset)

    def text() -> None:
        if not versions:
            click.echo(f"no model versions for {dataset!r} yet")
        best = champion_of(versions)
        champion = best.version if best is not None else None
        for v in versions:
            mark = "*" if v.version == champion else " "
            shown = ", ".join(
                f"{k}={val:.4f}" for k, val in sorted(v.metrics.items()) if not k.startswith("n_")
            )
            click.echo(
                f"{mark} v{v.version:<3} {v.status:<9} {v.created_at:%Y-%m-%d %H:%M:%S} "
                f"{shown}  data {v.lineage.get('sha256', '')[:12]}  "
                f"job {v.lineage.get('job_name', '')}"
            )
            if v.status != "Approved" and v.status_reason:
                click.echo(f"        {v.status_reason}")

    app.emit(
        as_json,
        {"ok": True, "dataset": dataset, "versions": [v.model_dump(mode="json") for v in versions]},
        text,
    )
