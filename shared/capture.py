"""Inference capture: sampled requests and their predictions, written in batches as JSON
Lines under a date-partitioned prefix, for the drift check to read later.

Layout: ``<capture bucket>/datasets/<dataset>/YYYY/MM/DD/HH/<time>-<random>.jsonl``,
one line a row: ``captured_at``, ``model_version``, ``request_id``, ``inputs`` and
``prediction``, and under ``serving.out_of_domain: accept`` ``out_of_domain``: the
checks the row is outside of (``[{"column": ..., "check": ...}]``, empty when it is in
the domain), which the drift check counts. Sampling is per request, so a batch request
is kept or left whole.

A SageMaker endpoint (GPU serving) captures with SageMaker's own data capture, under
the same dataset prefix: its destination is ``datasets/<dataset>/endpoint``, below which
SageMaker writes ``<endpoint>/<variant>/YYYY/MM/DD/HH/<file>.jsonl``, one line a request
in SageMaker's format (``captureData.endpointInput`` / ``endpointOutput``, each JSON,
CSV or BASE64; facts ``aws.sagemaker.capture_layout``, ``aws.sagemaker.capture_record``).
The readers here read both and give the drift check the same rows from either.

A capture failure never fails a prediction: it is counted (``failed_writes``) and
logged as a metric; the rows stay buffered for the next try, up to
``max_buffer_rows``, past which the oldest are dropped and counted
(``dropped_rows``), so memory stays bounded when storage is down.
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import io
import json
import logging
import random
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.canary import stdout_line
from shared.events import ObjectRef
from shared.layout import (
    capture_key,
    capture_prefix,
    endpoint_capture_prefix,
    endpoint_variant_prefix,
    hour_prefix,
)
from shared.ports import ObjectStore
from shared.specs import DatasetSpec

log = logging.getLogger(__name__)


def endpoint_capture_uri(bucket: str, dataset: str) -> str:
    """``DataCaptureConfig.DestinationS3Uri`` of ``dataset``'s SageMaker endpoint."""
    return f"s3://{bucket}/{endpoint_capture_prefix(dataset)}"


@dataclass
class CaptureStats:
    captured_rows: int = 0  # written to storage
    sampled_out_rows: int = 0
    written_objects: int = 0
    failed_writes: int = 0
    dropped_rows: int = 0


class InferenceCapture:
    """Buffers captured rows and writes them in batches. Thread-safe."""

    def __init__(
        self,
        store: ObjectStore,
        container: str,
        dataset: str,
        *,
        sampling: float = 1.0,
        batch_rows: int = 500,
        max_seconds: float = 60.0,
        max_buffer_rows: int | None = None,
        clock: Callable[[], float] = time.monotonic,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self._container = container
        self._dataset = dataset
        self._sampling = sampling
        self._batch_rows = batch_rows
        self._max_seconds = max_seconds
        self._max_buffer = max_buffer_rows or 10 * batch_rows
        self._clock = clock
        self._now = now
        self._rng = rng or random.Random()  # noqa: S311 - sampling, not secrecy
        self._buffer: list[dict[str, Any]] = []
        self._first_at: float | None = None
        self._lock = threading.Lock()
        self.stats = CaptureStats()
        _LIVE.add(self)

    @classmethod
    def for_spec(cls, store: ObjectStore, container: str, spec: DatasetSpec) -> InferenceCapture:
        """The capture the spec's ``serving`` section asks for."""
        s = spec.serving
        return cls(
            store,
            container,
            spec.name,
            sampling=s.capture_sampling,
            batch_rows=s.capture_batch_rows,
            max_seconds=s.capture_max_seconds,
        )

    def record(
        self,
        inputs: list[dict[str, Any]],
        predictions: list[Any],
        model_version: str,
        request_id: str,
        flags: Sequence[Sequence[Mapping[str, object]]] | None = None,
    ) -> None:
        """Keep this request's rows (if sampled) and write a batch when one is due;
        ``flags``, per row, the domain checks it is outside of (``accept`` only).
        Never raises."""
        try:
            if self._sampling < 1.0 and self._rng.random() >= self._sampling:
                self.stats.sampled_out_rows += len(inputs)
                return
            at = self._now().isoformat()
            rows = [
                {
                    "captured_at": at,
                    "model_version": model_version,
                    "request_id": request_id,
                    "inputs": row,
                    "prediction": pred,
                }
                for row, pred in zip(inputs, predictions, strict=True)
            ]
            if flags is not None:
                for kept, row_flags in zip(rows, flags, strict=True):
                    kept["out_of_domain"] = [dict(f) for f in row_flags]
            with self._lock:
                if self._first_at is None:
                    self._first_at = self._clock()
                self._buffer.extend(rows)
                due = len(self._buffer) >= self._batch_rows or (
                    self._clock() - self._first_at >= self._max_seconds
                )
            if due:
                self.flush()
        except Exception:
            log.exception("inference capture failed; the prediction is unaffected")
            self.stats.failed_writes += 1

    def flush(self) -> int:
        """Write what is buffered as one object; returns the rows written. Never raises."""
        with self._lock:
            rows, self._buffer, self._first_at = self._buffer, [], None
        if not rows:
            return 0
        stamp = self._now()
        key = capture_key(self._dataset, stamp, uuid.uuid4().hex[:8])
        body = "\n".join(json.dumps(r, default=str) for r in rows).encode() + b"\n"
        try:
            self._store.put_bytes(ObjectRef(container=self._container, key=key), body)
        except Exception as exc:
            self.stats.failed_writes += 1
            with self._lock:
                self._buffer = rows + self._buffer
                excess = len(self._buffer) - self._max_buffer
                if excess > 0:
                    del self._buffer[:excess]
                    self.stats.dropped_rows += excess
                self._first_at = self._clock()
            # An Embedded Metric Format line: CloudWatch turns it into a metric on Lambda,
            # if it is the whole log event (printed, as the serve app's request metrics).
            stdout_line(
                json.dumps(
                    {
                        "_aws": {
                            "Timestamp": int(time.time() * 1000),
                            "CloudWatchMetrics": [
                                {
                                    "Namespace": "Dhow/Serving",
                                    "Dimensions": [["dataset"]],
                                    "Metrics": [{"Name": "CaptureFailures", "Unit": "Count"}],
                                }
                            ],
                        },
                        "dataset": self._dataset,
                        "CaptureFailures": 1,
                        "error": str(exc)[:200],
                    },
                    separators=(",", ":"),
                )
            )
            log.warning("capture write failed for %s: %s", self._dataset, exc)
            return 0
        self.stats.captured_rows += len(rows)
        self.stats.written_objects += 1
        return len(rows)

    def flush_if_due(self) -> int:
        """Write the buffer if its oldest row has waited ``max_seconds`` (for a server
        with a clock of its own; a Lambda only checks on the next request)."""
        with self._lock:
            due = self._first_at is not None and (
                self._clock() - self._first_at >= self._max_seconds
            )
        return self.flush() if due else 0

    def snapshot(self) -> dict[str, int]:
        """The counters, and how many rows wait in the buffer now."""
        with self._lock:
            buffered = len(self._buffer)
        return {**asdict(self.stats), "buffered_rows": buffered}


# Every capture of this process, so an entry point can write them all out before its
# runtime may stop it (weak: a capture no app holds any more is not kept alive by this).
_LIVE: weakref.WeakSet[InferenceCapture] = weakref.WeakSet()


def flush_all() -> int:
    """Write what every capture of this process holds; returns the rows written. Never
    raises (a failed write stays buffered and counted, as in ``flush``)."""
    return sum(capture.flush() for capture in list(_LIVE))


def flushed_after_each_call[**P, R](handler: Callable[P, R]) -> Callable[P, R]:
    """``handler`` (a Lambda handler), writing every capture's buffer before it returns.

    Lambda freezes the execution environment once a handler returns and stops it later
    without calling the function's code (no ASGI lifespan runs behind mangum), so a row
    still buffered then is lost. Writing at the end of each invocation costs one PUT of
    the sampled rows per request; the answer waits for it, the canary's latency (timed by
    the app) does not.
    """

    @functools.wraps(handler)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return handler(*args, **kwargs)
        finally:
            flush_all()

    return run


def out_of_domain(row: Mapping[str, Any]) -> bool:
    """Whether a captured row was served outside the spec's bounds or categories (flagged
    under ``accept``; rows captured otherwise carry no flags, and are not)."""
    return bool(row.get("out_of_domain"))


def _scalar(text: str) -> Any:
    """A CSV field as the value it spells: CSV carries text, and a number or a boolean
    read back as text would look drifted against the training data's own values."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _decoded(part: Any) -> tuple[str, str] | None:
    """(``json`` or ``csv``, text) of one side of a SageMaker capture record, or None."""
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        return None
    encoding = str(part.get("encoding", "")).upper()
    ctype = str(part.get("observedContentType", "")).split(";")[0].strip().lower()
    text = part["data"]
    if encoding == "BASE64":
        text = base64.b64decode(text, validate=True).decode("utf-8")
        encoding = "JSON" if ctype.endswith("json") else "CSV" if ctype == "text/csv" else ""
    if encoding == "JSON":
        return "json", text
    if encoding == "CSV":
        return "csv", text
    return None


def _input_rows(part: Any, columns: Sequence[str] | None) -> list[dict[str, Any]] | None:
    """The rows of a request: a row object, a list of them (what the serve app takes),
    ``{"instances": [...]}``, or positional rows (CSV, JSON lists) named by ``columns``."""
    decoded = _decoded(part)
    if decoded is None:
        return None
    kind, text = decoded
    if kind == "csv":
        items: list[Any] = [
            [_scalar(v) for v in row] for row in csv.reader(io.StringIO(text)) if row
        ]
    else:
        body = json.loads(text)
        if isinstance(body, dict) and isinstance(body.get("instances"), list):
            body = body["instances"]
        items = body if isinstance(body, list) else [body]
    rows: list[dict[str, Any]] = []
    for item in items:
        if isinstance(item, dict):
            rows.append(item)
        elif isinstance(item, list) and columns is not None and len(item) == len(columns):
            rows.append(dict(zip(columns, item, strict=True)))
        else:
            return None
    return rows


def _predictions(part: Any) -> list[Any]:
    decoded = _decoded(part)
    if decoded is None:
        return []
    kind, text = decoded
    if kind == "csv":
        return [_scalar(row[0]) for row in csv.reader(io.StringIO(text)) if row]
    body = json.loads(text)
    if isinstance(body, dict):
        body = body.get("predictions", [body])
    return body if isinstance(body, list) else [body]


def _endpoint_rows(record: dict[str, Any], columns: Sequence[str] | None) -> list[dict[str, Any]]:
    """Dhow's rows of one SageMaker capture record; raises ValueError if it has none."""
    data = record.get("captureData") or {}
    meta = record.get("eventMetadata") or {}
    inputs = _input_rows(data.get("endpointInput"), columns)
    if not inputs or "inferenceTime" not in meta:
        raise ValueError("no readable endpointInput, or no eventMetadata.inferenceTime")
    predictions = _predictions(data.get("endpointOutput"))
    if len(predictions) != len(inputs):
        predictions = [None] * len(inputs)
    at = datetime.fromisoformat(str(meta["inferenceTime"])).isoformat()
    request_id = meta.get("inferenceId") or meta.get("eventId")
    return [
        {
            "captured_at": at,
            "model_version": None,  # SageMaker's record does not say; the endpoint does
            "request_id": request_id,
            "inputs": row,
            "prediction": pred,
        }
        for row, pred in zip(inputs, predictions, strict=True)
    ]


def _read_objects(
    store: ObjectStore,
    container: str,
    keys: Iterable[str],
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    unreadable = 0
    for key in keys:
        data = b"".join(store.iter_chunks(ObjectRef(container=container, key=key)))
        for line in data.splitlines():
            if not line.strip():
                continue
            record = json.loads(line)
            if "captureData" not in record:
                rows.append(record)
                continue
            try:
                rows.extend(_endpoint_rows(record, columns))
            except (ValueError, TypeError, UnicodeDecodeError, binascii.Error):
                unreadable += 1
    if unreadable:
        # Counted, never silently dropped: a request the drift check cannot read is one
        # it does not judge, and the log says how many.
        log.warning("%d captured requests in %s could not be read as rows", unreadable, container)
    return rows


def _endpoint_folders(store: ObjectStore, container: str, dataset: str) -> list[str]:
    """``datasets/<d>/endpoint/<endpoint>/<variant>/`` of the dataset's SageMaker capture,
    if there is one: the deployer gives a dataset one endpoint and one variant, so the
    first key names the folder, and a window lists only its hours below it."""
    base = f"{endpoint_capture_prefix(dataset)}/"
    for key in store.list_keys(container, base):
        parts = key.removeprefix(base).split("/")
        if len(parts) > 2:
            return [endpoint_variant_prefix(dataset, parts[0], parts[1])]
    return []


def read_captures(
    store: ObjectStore, container: str, dataset: str, columns: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Captured rows of a dataset, oldest first (a SageMaker endpoint's after the
    serve function's). ``columns`` names positional (CSV) rows."""
    return _read_objects(
        store, container, store.list_keys(container, capture_prefix(dataset)), columns
    )


def read_window(
    store: ObjectStore,
    container: str,
    dataset: str,
    start: datetime,
    end: datetime,
    columns: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Rows captured in ``[start, end)``, reading only the hours it spans, of the serve
    function and of the dataset's SageMaker endpoint alike (each one's oldest first).

    An object is filed under the hour it was written, up to a batch's
    ``capture_max_seconds`` after its first row, so the hour before ``start`` is
    read too and every row is filtered on its own ``captured_at``. ``columns`` names
    positional (CSV) rows of an endpoint's capture.
    """
    folders = [capture_prefix(dataset), *_endpoint_folders(store, container, dataset)]
    first = (start - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    keys: list[str] = []
    for folder in folders:
        hour = first
        while hour < end:
            keys.extend(store.list_keys(container, hour_prefix(folder, hour)))
            hour += timedelta(hours=1)
    return [
        r
        for r in _read_objects(store, container, keys, columns)
        if start <= datetime.fromisoformat(r["captured_at"]) < end
    ]
