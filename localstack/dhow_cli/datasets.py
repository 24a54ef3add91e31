"""Data in: `dhow upload` (which starts the pipeline), and `dhow dataset` (infer a spec
from a trusted sample, validate a file offline)."""

from __future__ import annotations

import getpass
import sys
import time
import uuid
from pathlib import Path
from typing import Any, TextIO

import click

from dhow_cli import app
from dhow_cli.follow import follow
from shared.artifacts import sha256_file
from shared.errors import DhowError
from shared.events import ModelApproved, ObjectRef
from shared.layout import DatasetVersion, upload_key
from shared.ports import ObjectStore
from shared.reasons import Reason
from shared.services.ingest import (
    UPLOAD_ID_META,
    UPLOADER_META,
    dataset_of,
    first_validation,
    format_of,
    revalidates,
    seen_before,
)
from shared.topology import build_topology

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


@click.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dataset", required=True, help="Dataset name: the key becomes datasets/NAME/FILE.")
@click.option("--wait", is_flag=True, help="Follow the pipeline's events and print each stage.")
@click.option("--timeout", default=120.0, show_default=True, help="Seconds --wait waits at most.")
@app.progress_option
@app.json_option
def upload(
    file: Path, dataset: str, wait: bool, timeout: float, progress: bool | None, as_json: bool
) -> None:
    """Upload FILE to the raw bucket, which starts the pipeline."""
    from shared.wiring import build_event_tap, build_ports

    key = upload_key(dataset, file.name)
    name, reason = dataset_of(key)
    with app.cli_errors(as_json, "upload failed"):
        if name is None:
            raise DhowError(
                f"{key!r} is not a valid upload key",
                reason=reason or Reason.INVALID_KEY,
                hint=Reason.INVALID_KEY.hint,
            )
        if format_of(key) is None:
            raise DhowError(
                f"{file.name!r} is not .csv, .parquet or .jsonl",
                reason=Reason.UNSUPPORTED_FORMAT,
                hint="convert the file first",
            )
        settings = app.resolve_settings()
        topo = build_topology(settings.stage)
        ports = build_ports(settings, topo)
        tap = build_event_tap(settings) if wait else None
        sha = sha256_file(file)
        known = seen_before(ports.lineage, name, sha)
        upload_id = uuid.uuid4().hex
        ref = ObjectRef(container=topo.bucket("raw").name, key=key)
        t0 = time.monotonic()
        stream = app.progress_stream(as_json, progress)
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
    # Read after the upload, as late as can be: the first upload's validation may have
    # ended meanwhile.
    checked = first_validation(ports.lineage, name, sha) if known is not None else None
    # Bytes whose validation job failed for a platform reason are validated again as a
    # new attempt (ingest announces the new upload), so there is something to wait for.
    retried = revalidates(checked)
    if retried and not as_json:
        click.echo("  these bytes' last validation job failed: a new attempt will run")
    if known is not None and known.status == "ingested" and not retried:
        # Ingest recognises the bytes and does nothing; there is nothing to wait for. The
        # answer is the one these bytes got the first time: refused bytes stay refused.
        refused = checked is not None and checked.status == "rejected"
        if not as_json:
            click.echo(
                f"  these bytes are already version {DatasetVersion(name, sha).version} of {name} "
                f"(ingested {known.created_at:%Y-%m-%d %H:%M:%S}); nothing new will run"
            )
            if refused and checked is not None:
                click.echo(
                    f"  they were rejected at validation on {checked.created_at:%Y-%m-%d %H:%M:%S}"
                    f"; `dhow lineage {name}` shows the report"
                )
        app.emit(
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
            raise SystemExit(app.EXIT_REJECTED)
        return
    if tap is None:
        app.emit(as_json, {"ok": True, "upload_id": upload_id, "key": key}, lambda: None)
        return
    final = follow(tap, upload_id, t0, timeout, as_json, events, progress=stream)
    ok = isinstance(final, ModelApproved)
    payload = {
        "ok": ok,
        "upload_id": upload_id,
        "key": key,
        "events": events,
        "timed_out": final is None,
    }
    app.emit(as_json, payload, lambda: None)
    if final is None:
        if not as_json:
            click.secho(
                f"no answer within {timeout:.0f}s; see `dhow lineage {dataset}` and "
                "the runner log (`dhow local status`)",
                fg="yellow",
                err=True,
            )
        sys.exit(app.EXIT_TIMEOUT)
    if not ok:
        sys.exit(app.EXIT_REJECTED)


@click.group()
def dataset() -> None:
    """Dataset specs: infer one from a trusted sample, validate a file offline."""


def read_sample(path: Path) -> Any:
    import pandas as pd

    fmt = format_of(path.name)
    if fmt == "csv":
        return pd.read_csv(path)
    if fmt == "parquet":
        return pd.read_parquet(path)
    if fmt == "jsonl":
        return pd.read_json(path, lines=True)
    raise DhowError(
        f"{path.name} is not .csv, .parquet or .jsonl", reason=Reason.UNSUPPORTED_FORMAT
    )


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
@app.json_option
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
        if dataset_of(upload_key(name, "x.csv"))[0] is None:
            raise DhowError(
                f"{name!r} is not a valid dataset name",
                reason=Reason.INVALID_DATASET_NAME,
                hint="1-63 lowercase letters, digits, '-' or '_'",
            )
        target_path = default_dir(specs_dir) / f"{name}.yaml"
        if target_path.exists() and not force:
            raise DhowError(
                f"{target_path} exists",
                reason=Reason.SPEC_EXISTS,
                hint="review and edit it, or pass --force to regenerate it",
            )
        inferred = infer(
            name,
            read_sample(sample),
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
        app.fail(as_json, exc)

    def text() -> None:
        click.echo(
            f"wrote {target_path} ({len(spec.columns)} columns, task "
            f"{spec.task}, version {spec.spec_version}); review it before "
            "deploying. Inferred from "
            f"{inferred.rows} rows:"
        )
        for c in inferred.columns:
            click.echo(f"  {c.column}: {c.why}")

    app.emit(
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
@app.progress_option
@app.json_option
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
                reason=Reason.UNSUPPORTED_FORMAT,
                hint="convert the file first",
            )
        spec = load_spec(name, specs_dir)
        stream = app.progress_stream(as_json, progress)
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
        app.fail(as_json, exc)

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

    app.emit(as_json, report.model_dump(mode="json"), text)
    if not report.ok:
        sys.exit(app.EXIT_REJECTED)
