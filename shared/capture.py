"""Inference capture: sampled requests and their predictions, written in batches as JSON
Lines under a date-partitioned prefix, for the drift check to read later.

Layout: ``<capture bucket>/datasets/<dataset>/YYYY/MM/DD/HH/<time>-<random>.jsonl``,
one line a row: ``captured_at``, ``model_version``, ``request_id``, ``inputs`` and
``prediction``. Sampling is per request, so a batch request is kept or left whole.

A capture failure never fails a prediction: it is counted (``failed_writes``) and
logged as a metric; the rows stay buffered for the next try, up to
``max_buffer_rows``, past which the oldest are dropped and counted
(``dropped_rows``), so memory stays bounded when storage is down.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.canary import stdout_line
from shared.events import ObjectRef
from shared.ports import ObjectStore
from shared.specs import DatasetSpec

log = logging.getLogger(__name__)

CAPTURE_PREFIX = "datasets/"


def capture_prefix(dataset: str) -> str:
    return f"{CAPTURE_PREFIX}{dataset}/"


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
    ) -> None:
        """Keep this request's rows (if sampled) and write a batch when one is due.
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
        key = (
            f"{capture_prefix(self._dataset)}{stamp:%Y/%m/%d/%H}/"
            f"{stamp:%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}.jsonl"
        )
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


def _read_objects(store: ObjectStore, container: str, keys: Iterable[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for key in keys:
        data = b"".join(store.iter_chunks(ObjectRef(container=container, key=key)))
        rows.extend(json.loads(line) for line in data.splitlines() if line.strip())
    return rows


def read_captures(store: ObjectStore, container: str, dataset: str) -> list[dict[str, Any]]:
    """Captured rows of a dataset, oldest first."""
    return _read_objects(store, container, store.list_keys(container, capture_prefix(dataset)))


def read_window(
    store: ObjectStore, container: str, dataset: str, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """Rows captured in ``[start, end)``, oldest first, reading only the hours it spans.

    An object is filed under the hour it was written, up to a batch's
    ``capture_max_seconds`` after its first row, so the hour before ``start`` is
    read too and every row is filtered on its own ``captured_at``.
    """
    hour = (start - timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    keys: list[str] = []
    while hour < end:
        keys.extend(store.list_keys(container, f"{capture_prefix(dataset)}{hour:%Y/%m/%d/%H}/"))
        hour += timedelta(hours=1)
    return [
        r
        for r in _read_objects(store, container, keys)
        if start <= datetime.fromisoformat(r["captured_at"]) < end
    ]
