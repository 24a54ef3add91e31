"""`dhow`: the command line. Every verb takes --json; failures exit non-zero.

Exit codes: 0 success, 1 the pipeline said no (e.g. an upload was rejected),
2 usage or configuration error, 3 timed out waiting, 4 the platform is unreachable.

Verbs import what they need inside their function: pandas, pandera and the
cloud SDKs take seconds to import, which `dhow --help` should not pay.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn, TextIO

import click

from shared.artifacts import sha256_file
from shared.audit import AUDIT_KINDS
from shared.errors import DhowError, PlatformError
from shared.events import (
    DatasetIngested,
    DatasetRejected,
    DatasetValidated,
    ModelApproved,
    ModelRejected,
    ObjectRef,
    PipelineEvent,
    TrainingCompleted,
    TrainingLaunched,
)
from shared.ports import EventTap, ObjectStore
from shared.services.ingest import (
    UPLOAD_ID_META,
    UPLOADER_META,
    dataset_of,
    format_of,
    ingest_record_id,
)
from shared.settings import Settings
from shared.topology import DATASETS_PREFIX, build_topology

EXIT_REJECTED, EXIT_CONFIG, EXIT_TIMEOUT, EXIT_PLATFORM = 1, 2, 3, 4
# Events after which `upload --wait` has nothing more to follow (for now: the model's verdict).
TERMINAL_EVENTS: tuple[type[PipelineEvent], ...] = (ModelApproved, ModelRejected, DatasetRejected)


def _is_final(event: PipelineEvent) -> bool:
    failed_training = isinstance(event, TrainingCompleted) and event.status != "Completed"
    return isinstance(event, TERMINAL_EVENTS) or failed_training


def _uploader(attributes: dict[str, Any]) -> str:
    """Who uploaded, as storage authenticated them (``uploaded_by``), with the name the
    upload's metadata claimed beside it when it says something else."""
    proven = str(attributes.get("uploaded_by") or "")
    claimed = str(attributes.get("claimed_uploader") or "")
    if not proven:
        return f"{claimed} (claimed)" if claimed else str(attributes.get("uploader") or "")
    return proven if claimed in ("", proven) else f"{proven} (claims {claimed})"


def _emit(as_json: bool, payload: Any, text: Callable[[], None]) -> None:
    if as_json:
        click.echo(json.dumps(payload, indent=2, default=str))
    else:
        text()


def _fail(as_json: bool, exc: DhowError, code: int = EXIT_CONFIG) -> NoReturn:
    if as_json:
        click.echo(json.dumps({"ok": False, "error": exc.as_dict()}, indent=2))
    else:
        click.secho(f"error [{exc.reason}]: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"  what to do: {exc.hint}", err=True)
    sys.exit(EXIT_PLATFORM if isinstance(exc, PlatformError) else code)


@contextlib.contextmanager
def _cli_errors(as_json: bool, doing: str) -> Iterator[None]:
    """Dhow's own errors as they are; anything else (an SDK's connection error, mostly)
    as the platform being unreachable, with what to check."""
    try:
        yield
    except DhowError as exc:
        _fail(as_json, exc)
    except Exception as exc:
        _fail(
            as_json,
            PlatformError(f"{doing}: {exc}", hint="is the stack up? try `dhow local status`"),
        )


def resolve_settings() -> Settings:
    """Settings from the environment; pointed at the local platform when it is up
    and no endpoint was given explicitly."""
    settings = Settings.from_env()
    if settings.aws_endpoint_url or settings.azure_storage_connection_string:
        return settings
    from dhow_local.control import LOCAL_CREDENTIALS, local_settings
    from dhow_local.platform import PlatformState

    state = PlatformState.load()
    if state.endpoint and state.mode:
        for k, v in LOCAL_CREDENTIALS.items():
            os.environ.setdefault(k, v)
        return local_settings("aws" if state.cloud == "aws" else "azure", settings)
    return settings


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="dhow")
def main() -> None:
    """Dhow: uploads become validated datasets, trained models and monitored
    endpoints, in UAE regions only (AWS me-central-1, Azure uaenorth/uaecentral)."""


@main.group()
def local() -> None:
    """The local platform: LocalStack (or Azurite), the topology and the runner."""


@local.command("up")
@click.option("--cloud", type=click.Choice(["aws", "azure"]), default="aws", show_default=True)
@json_option
def local_up(cloud: str, as_json: bool) -> None:
    """Start the emulator, create the topology in it and start the local runner."""
    from dhow_local import control

    try:
        settings = control.local_settings("aws" if cloud == "aws" else "azure")
        result = control.up(
            settings.cloud, settings, progress=(lambda _m: None) if as_json else click.echo
        )
    except DhowError as exc:
        _fail(as_json, exc)

    def text() -> None:
        r = result["resources"]
        click.echo(f"up in {result['seconds']}s, region {result['region']}, mode {result['mode']}")
        click.echo(f"  buckets: {', '.join(r['buckets'])}")
        click.echo(f"  queues:  {', '.join(r['queues'])}")
        click.echo(f"  tables:  {', '.join(r['tables'])}")
        for p in result["processes"]:
            click.echo(f"  {p['name']}: pid {p['pid']}, log {p['log']}")

    _emit(as_json, {"ok": True, **result}, text)


@local.command("down")
@json_option
def local_down(as_json: bool) -> None:
    """Stop every process `local up` started (SIGTERM, then SIGKILL), also those no state
    file lists any more (found by the marker `up` puts in their environment)."""
    from dhow_local import control

    try:
        result = control.down()
    except DhowError as exc:
        _fail(as_json, exc)

    def text() -> None:
        click.echo(
            "\n".join(f"{k}: {v}" for k, v in result["stopped"].items()) or "nothing was running"
        )
        for p in result["found_by_marker"]:
            click.echo(f"  ({p['name']}, pid {p['pid']}: no state listed it; found by its marker)")

    _emit(as_json, {"ok": True, **result}, text)


@local.command("status")
@json_option
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

    _emit(as_json, {"ok": result["ready"], **result}, text)
    if not result["ready"]:
        sys.exit(EXIT_PLATFORM)


def _describe(event: PipelineEvent) -> str:
    if isinstance(event, DatasetIngested):
        return (
            f"version {event.sha256[:12]}, {event.size_bytes} bytes, {event.format}, "
            f"staged at {event.staged.uri}"
        )
    if isinstance(event, DatasetValidated):
        return f"{event.rows} rows, spec {event.spec_version}, curated at {event.curated.uri}"
    if isinstance(event, TrainingLaunched):
        return f"job {event.job_name} on {event.instance_type} ({event.backend})"
    if isinstance(event, TrainingCompleted):
        return f"job {event.job_name}: {event.status}" + (
            f" ({event.reason})" if event.reason else ""
        )
    if isinstance(event, ModelApproved | ModelRejected):
        shown = {k: round(v, 4) for k, v in event.metrics.items() if not k.startswith("n_")}
        why = f"; {event.reason}" if isinstance(event, ModelRejected) else ""
        return f"version {event.model_version}, {shown}{why}"
    if isinstance(event, DatasetRejected):
        where = f"\n{'':31}quarantined at {event.quarantined.uri}" if event.quarantined else ""
        report = f"\n{'':31}report: {event.report.uri}" if event.report else ""
        return f"[{event.reason}] {event.message}{where}{report}"
    return event.model_dump_json(exclude={"event_id", "occurred_at", "correlation_id"})


progress_option = click.option(
    "--progress/--no-progress",
    default=None,
    help="Show progress on stderr (default: when stderr is a terminal; never with --json).",
)


def _progress_stream(as_json: bool, progress: bool | None) -> TextIO | None:
    """Where progress goes: stderr, and only for a person (a terminal, or --progress), so
    that stdout stays the command's answer and --json stays parseable."""
    if as_json or progress is False:
        return None
    stream = sys.stderr
    return stream if progress or stream.isatty() else None


# Which stage runs after each event of an upload, for `--wait`'s display.
_NEXT_STAGE: dict[type[PipelineEvent], str] = {
    DatasetIngested: "validate",
    DatasetValidated: "train-launch",
    TrainingLaunched: "training",
    TrainingCompleted: "register",
}


class _StageDisplay:
    """The stage running now and the time since the upload, on click's progress bar (its
    fill is the share of --timeout spent). One bar per stage: each event's line is printed
    between two bars, never into one."""

    def __init__(self, stream: TextIO, t0: float, timeout: float) -> None:
        self._stream, self._t0 = stream, t0
        self._tenths = max(int(timeout * 10), 1)
        self._bar: Any = None
        self._stage = ""

    def start(self, stage: str) -> None:
        self._stage = stage
        self._bar = click.progressbar(
            length=self._tenths,
            label=f"{stage:<12}",
            show_eta=False,
            show_percent=False,
            item_show_func=self._info,
            file=self._stream,
        )
        self._bar.__enter__()
        self.tick()

    def _info(self, _item: object) -> str:
        return f"running {self._stage}, {time.monotonic() - self._t0:.1f}s"

    def tick(self) -> None:
        if self._bar is None:
            return
        pos = min(int((time.monotonic() - self._t0) * 10), self._tenths)
        # update(0) draws nothing, so the bar is redrawn on the next tenth of a second.
        self._bar.update(max(pos - self._bar.pos, 0))

    def stop(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


def _follow(
    tap: EventTap,
    correlation: str,
    t0: float,
    timeout: float,
    as_json: bool,
    events: list[dict[str, Any]],
    progress: TextIO | None = None,
    first_stage: str = "ingest",
) -> PipelineEvent | None:
    """Print (and collect) this correlation's events until a final one or the timeout;
    with ``progress``, show the running stage and the elapsed time there meanwhile."""
    deadline = t0 + timeout
    display = _StageDisplay(progress, t0, timeout) if progress is not None else None
    if display is not None:
        display.start(first_stage)
    try:
        while time.monotonic() < deadline:
            for tapped in tap.receive(wait_s=1):
                if tapped.event.correlation_id != correlation:
                    tap.release(tapped)
                    continue
                tap.ack(tapped)
                elapsed = time.monotonic() - t0
                events.append(
                    {
                        "seconds": round(elapsed, 3),
                        "type": tapped.event.event_type,
                        "event": tapped.event.model_dump(mode="json"),
                    }
                )
                if display is not None:
                    display.stop()
                if not as_json:
                    click.echo(
                        f"  {elapsed:7.2f}s  {tapped.event.event_type:<18} "
                        f"{_describe(tapped.event)}"
                    )
                if _is_final(tapped.event):
                    return tapped.event
                if display is not None:
                    display.start(_NEXT_STAGE.get(type(tapped.event), first_stage))
            if display is not None:
                display.tick()
        return None
    finally:
        if display is not None:
            display.stop()


# Below this, an upload is one PUT that ends before a bar would be read (boto3's
# multipart threshold is 8 MiB as well).
UPLOAD_PROGRESS_MIN_BYTES = 8 * 1024**2


def _upload_with_progress(
    store: ObjectStore,
    ref: ObjectRef,
    file: Path,
    metadata: dict[str, str],
    stream: TextIO | None,
) -> None:
    """Upload ``file``; with ``stream`` and a large file, show the bytes sent there."""
    size = file.stat().st_size
    if stream is None or size < UPLOAD_PROGRESS_MIN_BYTES:
        store.upload_file(ref, file, metadata=metadata)
        return

    def shown(sent: int | None) -> str | None:
        return None if sent is None else f"{sent:,}/{size:,} bytes"

    with click.progressbar(
        length=size,
        label=f"uploading {file.name}",
        show_eta=True,
        show_percent=True,
        item_show_func=shown,
        file=stream,
    ) as bar:

        def sent(so_far: int) -> None:
            bar.update(max(so_far - bar.pos, 0), so_far)

        store.upload_file(ref, file, metadata=metadata, on_sent=sent)


@main.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dataset", required=True, help="Dataset name: the key becomes datasets/NAME/FILE.")
@click.option("--wait", is_flag=True, help="Follow the pipeline's events and print each stage.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds --wait waits at most.")
@progress_option
@json_option
def upload(
    file: Path, dataset: str, wait: bool, timeout: float, progress: bool | None, as_json: bool
) -> None:
    """Upload FILE to the raw bucket, which starts the pipeline."""
    from shared.wiring import build_event_tap, build_ports

    key = f"{DATASETS_PREFIX}{dataset}/{file.name}"
    name, reason = dataset_of(key)
    with _cli_errors(as_json, "upload failed"):
        if name is None:
            raise DhowError(
                f"{key!r} is not a valid upload key",
                reason=reason or "invalid_key",
                hint="dataset names are 1-63 lowercase letters, digits, '-' or '_'; "
                "file names letters, digits and . _ = + -",
            )
        if format_of(key) is None:
            raise DhowError(
                f"{file.name!r} is not .csv, .parquet or .jsonl",
                reason="unsupported_format",
                hint="convert the file first",
            )
        settings = resolve_settings()
        topo = build_topology(settings.stage)
        ports = build_ports(settings, topo)
        tap = build_event_tap(settings) if wait else None
        sha = sha256_file(file)
        known = ports.lineage.get(name, ingest_record_id(sha))
        upload_id = uuid.uuid4().hex
        ref = ObjectRef(container=topo.bucket("raw").name, key=key)
        t0 = time.monotonic()
        stream = _progress_stream(as_json, progress)
        _upload_with_progress(
            ports.store,
            ref,
            file,
            {UPLOAD_ID_META: upload_id, UPLOADER_META: getpass.getuser()},
            stream,
        )
    if not as_json:
        click.echo(f"uploaded {file} to {ref.uri} (upload id {upload_id})")
    events: list[dict[str, Any]] = []
    checked = None
    if known is not None:
        from shared.services.validate import validate_record_id

        checked = ports.lineage.get(name, validate_record_id(sha))
    # Bytes whose validation job failed for a platform reason are validated again as a
    # new attempt (ingest announces the new upload), so there is something to wait for.
    retried = checked is not None and checked.status == "failed"
    if retried and not as_json:
        click.echo("  these bytes' last validation job failed: a new attempt will run")
    if known is not None and known.status == "ingested" and not retried:
        # Ingest recognises the bytes and does nothing; there is nothing to wait for. The
        # answer is the one these bytes got the first time: refused bytes stay refused.
        refused = checked is not None and checked.status == "rejected"
        if not as_json:
            click.echo(
                f"  these bytes are already version {sha[:12]} of {name} "
                f"(ingested {known.created_at:%Y-%m-%d %H:%M:%S}); nothing new will run"
            )
            if refused and checked is not None:
                click.echo(
                    f"  they were rejected at validation on {checked.created_at:%Y-%m-%d %H:%M:%S}"
                    f"; `dhow lineage {name}` shows the report"
                )
        _emit(
            as_json,
            {
                "ok": not refused,
                "upload_id": upload_id,
                "key": key,
                "duplicate_of": sha,
                "rejected_before": refused,
                "events": [],
            },
            lambda: None,
        )
        if refused:
            raise SystemExit(EXIT_REJECTED)
        return
    if tap is None:
        _emit(as_json, {"ok": True, "upload_id": upload_id, "key": key}, lambda: None)
        return
    final = _follow(tap, upload_id, t0, timeout, as_json, events, progress=stream)
    ok = isinstance(final, ModelApproved)
    payload = {
        "ok": ok,
        "upload_id": upload_id,
        "key": key,
        "events": events,
        "timed_out": final is None,
    }
    _emit(as_json, payload, lambda: None)
    if final is None:
        if not as_json:
            click.secho(
                f"no answer within {timeout:.0f}s; see `dhow lineage {dataset}` and "
                "the runner log (`dhow local status`)",
                fg="yellow",
                err=True,
            )
        sys.exit(EXIT_TIMEOUT)
    if not ok:
        sys.exit(EXIT_REJECTED)


@main.command("lineage")
@click.argument("target", metavar="DATASET[@vN]")
@json_option
def lineage(target: str, as_json: bool) -> None:
    """Show what happened to every upload of DATASET, oldest first; or, for DATASET@vN,
    trace model version N back to the raw upload it learnt from."""
    from shared.wiring import build_ports

    if "@" in target:
        _model_lineage(target, as_json)
        return
    dataset = target

    with _cli_errors(as_json, "cannot read lineage"):
        rows = build_ports(resolve_settings()).lineage.list(dataset)

    def text() -> None:
        if not rows:
            click.echo(f"no lineage for {dataset!r} yet")
        for r in rows:
            a = r.attributes
            where = a.get("source") or ""
            if r.kind == "train":
                what, where = f"job {a.get('job_name')} on {a.get('instance_type')}", ""
            elif r.kind == "register":
                verdict = f"model v{a['model_version']}" if a.get("model_version") else ""
                what = f"{verdict} {a.get('gate') or a.get('reason') or ''}".strip()
                where = ""
            elif a.get("reason"):
                what = str(a["reason"])
            elif r.kind == "validate":
                what = f"{a.get('rows', '?')} rows, spec {a.get('spec_version')}"
            else:
                what = str(a.get("version", ""))
            click.echo(
                f"{r.created_at:%Y-%m-%d %H:%M:%S}  {r.kind:<15} {r.status:<9} "
                f"{what}  {where}  {_uploader(a)}".rstrip()
            )

    _emit(
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
        _fail(
            as_json,
            DhowError(
                f"{target!r} names no model version",
                reason="invalid_version",
                hint=f"write it as {dataset}@v3 (see `dhow models {dataset}`)",
            ),
        )
    with _cli_errors(as_json, "cannot read lineage"):
        settings = resolve_settings()
        version = build_model_registry(settings).version(dataset, number)
        if version is None:
            raise DhowError(
                f"{dataset} has no model version {number}",
                reason="unknown_model_version",
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
            if r.kind == "validate":
                click.echo(
                    f"  validated  {r.updated_at:%Y-%m-%d %H:%M:%S}  {a.get('rows')} rows "
                    f"against spec {a.get('spec_version')}, staged {a.get('staged')}"
                )
            elif r.kind == "ingest":
                click.echo(
                    f"  uploaded   {r.created_at:%Y-%m-%d %H:%M:%S}  {a.get('source')} "
                    f"by {_uploader(a) or 'unknown'}, sha256 {sha}"
                )

    _emit(
        as_json,
        {
            "ok": True,
            "model": version.model_dump(mode="json"),
            "records": [r.model_dump(mode="json") for r in rows],
        },
        text,
    )


@main.command("train")
@click.argument("dataset")
@click.option("--instance-type", help="Train on this type instead of the spec's list.")
@click.option("--wait", is_flag=True, help="Follow the job to the model's verdict.")
@click.option("--timeout", default=900.0, show_default=True, help="Seconds --wait waits at most.")
@click.option("--reason", "why", help="Why: recorded in the audit trail with who you are.")
@json_option
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

    with _cli_errors(as_json, "cannot launch training"):
        settings = resolve_settings()
        topo = build_topology(settings.stage)
        ports = build_ports(settings, topo)
        correlation = f"train-{uuid.uuid4().hex}"
        event = latest_validated(ports.lineage, dataset, correlation)
        tap = build_event_tap(settings) if wait else None
        t0 = time.monotonic()
        user = _caller_principal(settings)
        outcome = build_train_launch_service(settings, ports).handle(
            event,
            instance_type=instance_type,
            run_tag=f"manual-{datetime.now(UTC):%Y%m%dT%H%M%S}",
            requested_by=user,
            reason=why,
        )
    if not as_json:
        click.echo(
            f"retraining {dataset} version {event.sha256[:12]} for {user}: "
            f"{outcome.status} {outcome.job_name or ''}".rstrip()
        )
    events: list[dict[str, Any]] = []
    final = _follow(tap, correlation, t0, timeout, as_json, events) if tap else None
    ok = outcome.status == "launched" and (tap is None or isinstance(final, ModelApproved))
    _emit(
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
        sys.exit(EXIT_TIMEOUT)
    if not ok:
        sys.exit(EXIT_REJECTED)


@main.command("models")
@click.argument("dataset")
@json_option
def models(dataset: str, as_json: bool) -> None:
    """List DATASET's registered model versions, newest first, with status and metrics."""
    from shared.wiring import build_model_registry

    with _cli_errors(as_json, "cannot read the model registry"):
        versions = build_model_registry(resolve_settings()).versions(dataset)

    def text() -> None:
        if not versions:
            click.echo(f"no model versions for {dataset!r} yet")
        champion = next((v.version for v in versions if v.status == "Approved"), None)
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

    _emit(
        as_json,
        {"ok": True, "dataset": dataset, "versions": [v.model_dump(mode="json") for v in versions]},
        text,
    )


@main.command("facts")
@click.option("--cloud", type=click.Choice(["aws", "azure"]), help="Only this cloud's facts.")
@json_option
def facts_cmd(cloud: str | None, as_json: bool) -> None:
    """List the cloud rules Dhow relies on, each with its documentation source."""
    from shared.cloud_facts import facts

    with _cli_errors(as_json, "cannot read the cloud facts"):
        rows = [f for f in facts().values() if cloud in (None, f.cloud)]

    def text() -> None:
        for f in rows:
            click.echo(f"{f.id}\n  {f.rule}\n  value: {f.value}\n  source: {f.source}")

    _emit(as_json, {"ok": True, "facts": [f.as_dict() for f in rows]}, text)


@main.group()
def dataset() -> None:
    """Dataset specs: infer one from a trusted sample, validate a file offline."""


def _read_sample(path: Path) -> Any:
    import pandas as pd

    fmt = format_of(path.name)
    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "jsonl":
        return pd.read_json(path, lines=True)
    raise DhowError(f"{path.name} is not .csv, .parquet or .jsonl", reason="unsupported_format")


@dataset.command("init")
@click.argument("name")
@click.option(
    "--from",
    "sample",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A trusted sample of the data.",
)
@click.option("--target", required=True, help="The column a model will predict.")
@click.option(
    "--task",
    type=click.Choice(["classification", "regression"]),
    help="Inferred from the target when not given.",
)
@click.option("--unique", multiple=True, help="A column whose values must be unique (repeat).")
@click.option(
    "--specs-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Where specs live (default: $DHOW_SPECS_DIR, else shared/specs).",
)
@click.option("--force", is_flag=True, help="Overwrite an existing spec.")
@json_option
def dataset_init(
    name: str,
    sample: Path,
    target: str,
    task: str | None,
    unique: tuple[str, ...],
    specs_dir: Path | None,
    force: bool,
    as_json: bool,
) -> None:
    """Infer NAME's spec from a sample with pandera, and write it for review.

    Numeric columns get a sign where the sample has one and no other bound; text columns
    with a few values, each seen more than once, become categories. Each column's
    inference and its reason are printed, and head the written spec as comments.
    """
    from shared.specs import infer
    from shared.specs import specs_dir as default_dir

    try:
        if dataset_of(f"{DATASETS_PREFIX}{name}/x.csv")[0] is None:
            raise DhowError(
                f"{name!r} is not a valid dataset name",
                reason="invalid_dataset_name",
                hint="1-63 lowercase letters, digits, '-' or '_'",
            )
        target_path = default_dir(specs_dir) / f"{name}.yaml"
        if target_path.exists() and not force:
            raise DhowError(
                f"{target_path} exists",
                reason="spec_exists",
                hint="review and edit it, or pass --force to regenerate it",
            )
        inferred = infer(
            name,
            _read_sample(sample),
            target,
            task="classification"
            if task == "classification"
            else "regression"
            if task == "regression"
            else None,
            unique=list(unique),
        )
        spec = inferred.spec
        target_path.parent.mkdir(parents=True, exist_ok=True)
        # The reasons as comments: spec_version hashes the parsed spec, not the text.
        target_path.write_text(inferred.review_notes() + spec.to_yaml())
    except DhowError as exc:
        _fail(as_json, exc)

    def text() -> None:
        click.echo(
            f"wrote {target_path} ({len(spec.columns)} columns, task "
            f"{spec.task}, version {spec.spec_version}); review it before "
            "deploying. Inferred from "
            f"{inferred.rows} rows:"
        )
        for c in inferred.columns:
            click.echo(f"  {c.column}: {c.why}")

    _emit(
        as_json,
        {
            "ok": True,
            "path": str(target_path),
            "spec_version": spec.spec_version,
            "task": spec.task,
            "columns": spec.columns,
            "inferred": [c.model_dump(mode="json") for c in inferred.columns],
        },
        text,
    )


@dataset.command("validate")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--specs-dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--chunk-rows", default=100_000, show_default=True, help="Rows per chunk.")
@progress_option
@json_option
def dataset_validate(
    name: str,
    file: Path,
    specs_dir: Path | None,
    chunk_rows: int,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Validate FILE against NAME's spec offline, as the validate function would (exit 1 if not)."""
    from shared.specs import load_spec
    from shared.validation import ValidationProgress, validate_file

    fmt = format_of(file.name)
    try:
        if fmt is None:
            raise DhowError(
                f"{file.name!r} is not .csv, .parquet or .jsonl",
                reason="unsupported_format",
                hint="convert the file first",
            )
        spec = load_spec(name, specs_dir)
        stream = _progress_stream(as_json, progress)
        if stream is None:
            report = validate_file(file, fmt, spec, chunk_rows=chunk_rows).report
        else:
            started = time.monotonic()

            def info(p: ValidationProgress | None) -> str | None:
                if p is None:
                    return None
                rate = p.rows / max(time.monotonic() - started, 1e-6)
                return f"{p.rows:,} rows, {rate:,.0f} rows/s, {p.failures:,} failures"

            # Read per mille of the file: click's bar estimates the time left from it.
            with click.progressbar(
                length=1000,
                label=f"validating {file.name}",
                show_eta=True,
                item_show_func=info,
                file=stream,
            ) as bar:

                def advance(p: ValidationProgress) -> None:
                    bar.update(max(int(p.read_fraction * 1000) - bar.pos, 0), p)

                report = validate_file(
                    file, fmt, spec, chunk_rows=chunk_rows, on_progress=advance
                ).report
    except DhowError as exc:
        _fail(as_json, exc)

    def text() -> None:
        colour = "green" if report.ok else "red"
        click.secho(
            f"{'PASS' if report.ok else 'FAIL'} {report.reason or ''} {report.message}", fg=colour
        )
        if report.hint:
            click.echo(f"  what to do: {report.hint}")
        for c in report.checks[:20]:
            examples = ", ".join(repr(e) for e in c.examples)
            click.echo(f"  {c.failures:>7}  {c.column or '(table)'}: {c.check}  e.g. {examples}")
        for f in report.failure_cases[:10]:
            click.echo(f"  row {f.row}: {f.column} {f.check} = {f.value!r}")

    _emit(as_json, report.model_dump(mode="json"), text)
    if not report.ok:
        sys.exit(EXIT_REJECTED)


ServeAuth = Literal["none", "sigv4", "entra"]


def _serve_auth(url: str) -> ServeAuth:
    """How a serve URL is authorised, by its host: an Azure ML online endpoint's scoring
    URI (``<endpoint>.<region>.inference.ml.azure.com``) takes an Entra token; anything
    else is the AWS serve API (API Gateway with IAM auth), signed with SigV4."""
    import re
    from urllib.parse import urlsplit

    from shared.cloud_facts import value

    host = (urlsplit(url).hostname or "").lower()
    rule = value("azure.serving.scoring_uri_host")
    if host.endswith(rule["host_suffix"]):
        if not re.match(rule["host_pattern"], host):
            raise DhowError(
                f"{host} is not an online endpoint's scoring host",
                hint="pass the endpoint's scoring URI, the stack's serve_urls output "
                "(https://<endpoint>.<region>.inference.ml.azure.com/score)",
                reason="bad_serve_url",
            )
        return "entra"
    return "sigv4"


def _predict_url(dataset: str, url: str | None) -> tuple[str, ServeAuth]:
    """(the predict URL, how to authorise it)."""
    if url:
        auth = _serve_auth(url)
        base = url.rstrip("/")
        if auth == "entra":
            # The inference server answers on /score only (azure.serving.scoring_uri_host).
            from shared.cloud_facts import value

            path = value("azure.serving.scoring_uri_host")["path"]
            return base if base.endswith(path) else base + path, auth
        return base + ("" if base.endswith("/predict") else "/predict"), auth
    from dhow_local.platform import ROUTER_URL, PlatformState

    if PlatformState.load().endpoint is None:
        raise DhowError(
            "no --url given and the local platform is not up",
            hint="pass the serve API's URL (the stack exports it per dataset as serve_urls), "
            "or start the local platform with `dhow local up`",
            reason="no_serve_url",
        )
    return f"{ROUTER_URL}/datasets/{dataset}/predict", "none"


def _entra_token(credential: Any | None, scope: str, audience: str, hint: str) -> str:
    """A Microsoft Entra token for ``scope`` from ``credential`` (DefaultAzureCredential
    when None: az login, a managed identity, the environment's service principal), or a
    ``no_credentials`` error saying what to do."""
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    try:
        return str(credential.get_token(scope).token)
    except Exception as exc:  # azure-identity's ClientAuthenticationError and kin
        raise DhowError(
            f"no Microsoft Entra token{audience}: {exc}".splitlines()[0],
            hint=hint,
            reason="no_credentials",
        ) from exc


def _entra_headers(credential: Any | None = None) -> dict[str, str]:
    """An online endpoint's (AADToken) headers: a Microsoft Entra token for the
    ml.azure.com audience, from ``credential`` (DefaultAzureCredential when None: az
    login, a managed identity, the environment's service principal)."""
    from shared.cloud_facts import value

    rule = value("azure.serving.scoring_token_audience")
    token = _entra_token(
        credential,
        rule["scope"],
        f" for {rule['audience']}",
        hint="the endpoint takes Entra tokens; log in (az login) with an identity that "
        "holds the endpoint's score action",
    )
    return {
        "content-type": "application/json",
        rule["header"]: f"{rule['scheme']} {token}",
    }


def _jwt_claims(token: str) -> dict[str, Any]:
    """The payload of a JWT, unverified: the token came from Entra over TLS to this
    process, and only its claims about the caller are read, never trusted by a server."""
    import base64

    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError) as exc:
        raise DhowError("the Microsoft Entra token is not a JWT", reason="no_credentials") from exc
    return claims if isinstance(claims, dict) else {}


def _caller_principal(
    settings: Settings, *, sts: Any | None = None, credential: Any | None = None
) -> str:
    """Who runs this command, as the cloud authenticated them, for the audit trail:
    the ARN STS GetCallerIdentity returns on AWS (fact aws.sts.get_caller_identity), the
    Entra token's ``oid`` and name on Azure (fact azure.entra.access_token_principal).
    On the local platform nothing authenticates anyone: the OS user, marked ``local:``
    (and ``$DHOW_USER``, a name anyone can set, is never used)."""
    from shared.audit import ENTRA_PREFIX, LOCAL_PREFIX

    if settings.aws_endpoint_url or settings.azure_storage_connection_string:
        return f"{LOCAL_PREFIX}{getpass.getuser()} (unauthenticated)"
    if settings.cloud == "aws":
        if sts is None:
            from shared.adapters.aws import aws_client

            # The region-pinned factory: STS answers at me-central-1's regional endpoint.
            sts = aws_client("sts", settings)
        try:
            return str(sts.get_caller_identity()["Arn"])
        except Exception as exc:  # botocore's NoCredentialsError, ClientError and kin
            raise DhowError(
                f"AWS does not say who you are: {exc}".splitlines()[0],
                hint="log in (aws sso login, or set a profile): actions are recorded "
                "under the identity AWS authenticates",
                reason="no_credentials",
            ) from exc
    token = _entra_token(
        credential,
        "https://storage.azure.com/.default",
        "",
        hint="log in (az login): actions are recorded under the identity Entra authenticates",
    )
    claims = _jwt_claims(token)
    oid = claims.get("oid")
    if not oid:
        raise DhowError(
            "the Microsoft Entra token names no object id (oid)",
            hint="log in as a user or a service principal of the tenant",
            reason="no_credentials",
        )
    name = next(
        (
            claims[k]
            for k in ("upn", "unique_name", "preferred_username", "appid", "azp")
            if claims.get(k)
        ),
        "",
    )
    return f"{ENTRA_PREFIX}{name} oid={oid}" if name else f"{ENTRA_PREFIX}oid={oid}"


def _signed_headers(url: str, body: bytes, region: str) -> dict[str, str]:
    """SigV4 headers for the serve API (API Gateway, a route with AWS_IAM authorization:
    signed for execute-api, not lambda)."""
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.session import get_session

    from shared.cloud_facts import value

    # Only the credentials: no client is made here (clients come from aws_client).
    credentials = get_session().get_credentials()
    if credentials is None:
        raise DhowError(
            "no AWS credentials to sign the request with",
            hint="the serve API uses IAM auth; log in (aws sso login) first",
            reason="no_credentials",
        )
    request = AWSRequest(
        method="POST", url=url, data=body, headers={"content-type": "application/json"}
    )
    SigV4Auth(credentials, value("aws.apigateway.iam_signing_service"), region).add_auth(request)
    return dict(request.headers.items())


@main.command("predict")
@click.argument("dataset")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--url", help="The serve API's URL, the stack's serve_urls output (default: the local router)."
)
@click.option("--batch-rows", default=100, show_default=True, help="Rows per request.")
@click.option("--limit", type=int, help="Predict the first N rows only.")
@json_option
def predict(
    dataset: str, file: Path, url: str | None, batch_rows: int, limit: int | None, as_json: bool
) -> None:
    """Send FILE's rows (CSV, Parquet, JSON Lines) to DATASET's serve function in batches;
    the target column, if present, is left out. Exit 1 if any request failed."""
    import httpx2 as httpx

    with _cli_errors(as_json, "cannot reach the serve function"):
        settings = resolve_settings()
        target_url, auth = _predict_url(dataset, url)
        # One token for the whole run (an Entra token lasts an hour or more); SigV4 signs
        # each body.
        entra = _entra_headers() if auth == "entra" else None
        frame = _read_sample(file)
        from shared.specs import load_spec

        spec = load_spec(dataset, settings.specs_dir)
        frame = frame.drop(columns=[spec.target], errors="ignore")
        if limit is not None:
            frame = frame.head(limit)
        rows: list[dict[str, Any]] = json.loads(frame.to_json(orient="records", date_format="iso"))
        predictions: list[Any] = []
        versions: dict[str, int] = {}
        failures: list[dict[str, Any]] = []
        t0 = time.monotonic()
        batches = range(0, len(rows), max(1, batch_rows))
        with httpx.Client(timeout=60.0) as client:
            for n, start in enumerate(batches, 1):
                chunk = rows[start : start + batch_rows]
                body = json.dumps(chunk).encode()
                if auth == "sigv4":
                    headers = _signed_headers(target_url, body, settings.aws_region)
                else:
                    headers = entra or {"content-type": "application/json"}
                r = client.post(target_url, content=body, headers=headers)
                if r.status_code == 200:
                    answer = r.json()
                    predictions.extend(answer["predictions"])
                    v = answer["model_version"]
                    versions[v] = versions.get(v, 0) + len(chunk)
                else:
                    predictions.extend([None] * len(chunk))
                    try:
                        detail: Any = r.json()
                    except ValueError:
                        detail = r.text[:500]
                    failures.append(
                        {
                            "rows": [start, start + len(chunk)],
                            "status": r.status_code,
                            "detail": detail,
                        }
                    )
                if not as_json and len(batches) > 10 and n % 10 == 0:
                    click.echo(f"  {n}/{len(batches)} requests ...", err=True)
        seconds = round(time.monotonic() - t0, 3)

    def text() -> None:
        by = ", ".join(f"v{v}: {k} rows" for v, k in sorted(versions.items()))
        click.echo(
            f"{len(rows)} rows in {len(batches)} request(s), {seconds}s; served by {by or 'none'}"
        )
        for i, p in enumerate(predictions[:5]):
            click.echo(f"  row {i + 1}: {p}")
        if len(predictions) > 5:
            click.echo(f"  ... {len(predictions) - 5} more (--json for all)")
        for f in failures:
            click.secho(
                f"  rows {f['rows'][0] + 1}-{f['rows'][1]}: HTTP {f['status']} "
                + json.dumps(f["detail"])[:300],
                fg="red",
            )

    _emit(
        as_json,
        {
            "ok": not failures,
            "dataset": dataset,
            "url": target_url,
            "rows": len(rows),
            "seconds": seconds,
            "served_by": versions,
            "predictions": predictions,
            "failures": failures,
        },
        text,
    )
    if failures:
        sys.exit(EXIT_REJECTED)


@main.group()
def deploy() -> None:
    """Deployments of approved models: what serves now, and rolling back by hand."""


@deploy.command("status")
@click.argument("dataset")
@json_option
def deploy_status(dataset: str, as_json: bool) -> None:
    """Which model version serves what share of DATASET's traffic, and its rollouts."""
    from shared.wiring import build_deploy_service

    with _cli_errors(as_json, "cannot read the deployment state"):
        result = build_deploy_service(resolve_settings()).status(dataset)

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

    _emit(as_json, {"ok": True, **result}, text)


@deploy.command("rollback")
@click.argument("dataset")
@click.option(
    "--to",
    "to_version",
    type=int,
    help="Version to serve (default: the newest other approved one).",
)
@click.option("--reason", "why", required=True, help="Why: recorded in lineage with who you are.")
@json_option
def deploy_rollback(dataset: str, to_version: int | None, why: str, as_json: bool) -> None:
    """Send all of DATASET's traffic to an earlier version now, stopping any rollout."""
    from shared.wiring import build_deploy_service

    with _cli_errors(as_json, "cannot roll back"):
        settings = resolve_settings()
        # The identity the cloud authenticated, not a name the caller chose.
        who = _caller_principal(settings)
        outcome = build_deploy_service(settings).rollback(dataset, to_version, who, why)
    _emit(
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


# click's own formats, and the same with an offset (2026-11-02T13:00:00+04:00, Gulf time).
_AUDIT_TIME = click.DateTime(
    ["%Y-%m-%d", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S%z"]
)


@main.command("audit")
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
@json_option
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
    with _cli_errors(as_json, "cannot read the audit trail"):
        entries = AuditTrail(build_ports(resolve_settings()).lineage).entries(flt)
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

    _emit(
        as_json,
        {
            "ok": True,
            "filter": flt.model_dump(mode="json"),
            "csv": str(csv_path) if csv_path is not None else None,
            "entries": [x.model_dump(mode="json") for x in entries],
        },
        text,
    )


@main.command("captures")
@click.argument("dataset")
@click.option("--limit", default=5, show_default=True, help="Show the newest N rows.")
@json_option
def captures(dataset: str, limit: int, as_json: bool) -> None:
    """Rows the serve function captured for DATASET (inputs, prediction, version, time)."""
    from shared.capture import read_captures
    from shared.wiring import build_ports

    with _cli_errors(as_json, "cannot read the captures"):
        settings = resolve_settings()
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

    _emit(
        as_json, {"ok": True, "dataset": dataset, "total": len(rows), "rows": rows[-limit:]}, text
    )


@main.group()
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
@json_option
def drift_run(dataset: str, as_json: bool) -> None:
    """Check DATASET for drift now, as its schedule would (exit 1 on drift)."""
    from shared.wiring import build_drift_service

    with _cli_errors(as_json, "cannot run the drift check"):
        settings = resolve_settings()
        who = _caller_principal(settings)
        if not as_json:
            click.echo(f"checking {dataset} (evidently's report takes a few seconds) ...")
        outcome = build_drift_service(settings).check(dataset, requested_by=who)
    result = outcome.as_dict()
    _emit(as_json, {"ok": True, **result}, lambda: _print_check(result))
    if outcome.verdict.verdict == "drift":
        sys.exit(EXIT_REJECTED)


@drift.command("status")
@click.argument("dataset")
@click.option("--limit", default=10, show_default=True, help="Show the newest N checks.")
@json_option
def drift_status(dataset: str, limit: int, as_json: bool) -> None:
    """DATASET's recent drift checks: verdict, drifted columns, action, report."""
    from shared.services.drift import drift_history
    from shared.wiring import build_ports

    with _cli_errors(as_json, "cannot read the drift checks"):
        rows = drift_history(build_ports(resolve_settings()).lineage, dataset, limit)
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

    _emit(as_json, {"ok": True, "dataset": dataset, "checks": checks}, text)


def _aws_alerts(settings: Settings, topic: str, wait: float) -> list[dict[str, Any]]:
    """Drain the alerts topic's local subscriber queue (SNS to SQS in LocalStack)."""
    from dhow_local.provision import inbox_queue_name

    from shared.adapters.aws import aws_client

    sqs = aws_client("sqs", settings)
    url = sqs.get_queue_url(QueueName=inbox_queue_name(topic))["QueueUrl"]
    alerts: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while True:
        got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1)
        for m in got.get("Messages", []):
            body = json.loads(m["Body"])
            alerts.append({"subject": body.get("Subject"), "message": body.get("Message")})
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        if not got.get("Messages") and (alerts or time.monotonic() >= deadline):
            return alerts


def _azure_alerts(settings: Settings, topic: str, wait: float) -> list[dict[str, Any]]:
    """Drain the alerts queue (Azure keeps alerts in a queue of the region)."""
    from shared.adapters.azure import azure_clients

    queue = azure_clients(settings).queue(topic)
    alerts: list[dict[str, Any]] = []
    deadline = time.monotonic() + wait
    while True:
        got = list(queue.receive_messages(messages_per_page=32, max_messages=32))
        for m in got:
            body = json.loads(m.content)
            alerts.append({"subject": body.get("Subject"), "message": body.get("Message")})
            queue.delete_message(m.id, m.pop_receipt)
        if not got and (alerts or time.monotonic() >= deadline):
            return alerts
        if not got:
            time.sleep(0.5)


@local.command("alerts")
@click.option("--wait", default=0.0, show_default=True, help="Seconds to wait for one.")
@json_option
def local_alerts(wait: float, as_json: bool) -> None:
    """Alerts the local alerts topic delivered (what on-call would get), oldest first;
    each is shown once."""
    with _cli_errors(as_json, "cannot read the local alerts"):
        settings = resolve_settings()
        topic = build_topology(settings.stage).topic("alerts").name
        read = _azure_alerts if settings.cloud == "azure" else _aws_alerts
        alerts = read(settings, topic, wait)

    def text() -> None:
        if not alerts:
            click.echo("no alerts")
        for a in alerts:
            click.echo(f"--- {a['subject']}")
            click.echo(a["message"])

    _emit(as_json, {"ok": True, "topic": topic, "alerts": alerts}, text)


# Last, so that `python -m shared.cli` has every verb and helper defined before it runs
# (halfway down, it ran before `_caller_principal` and the verbs after it existed).
if __name__ == "__main__":
    main()
