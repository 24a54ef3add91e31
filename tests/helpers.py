"""Test helpers: real payloads from tests/events and in-memory port implementations."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from shared.errors import DhowError, ObjectMissing
from shared.events import DatasetRejected, ObjectRef, PipelineEvent
from shared.lineage import is_finished, typed
from shared.ports import (
    DeploymentPlan,
    EventBus,
    FinishedEntryImmutable,
    LineagePage,
    LineageRecord,
    LineageStore,
    ObjectChanged,
    ObjectInfo,
    ObjectPin,
    ObjectStore,
)

EVENTS = Path(__file__).parent / "events"


def deployment_plan(version: int = 2, previous: int | None = 1, **kw: Any) -> DeploymentPlan:
    """A canary plan of ``customers`` (10% for 5 minutes, the spec defaults' rule)."""
    fields: dict[str, Any] = {
        "dataset": "customers",
        "model_version": version,
        "previous_version": previous,
        "artifact": "s3://models/m.tar.gz",
        "artifact_sha256": "ab" * 32,
        "image": "",
        "strategy": "canary",
        "step_percent": 10,
        "interval_minutes": 5,
        "error_rate_threshold": 0.05,
        "p99_latency_ms": 2000,
        "min_requests": 20,
        **kw,
    }
    return DeploymentPlan(**fields)


def sample_rejected() -> DatasetRejected:
    """A small, valid pipeline event for adapter and parser tests."""
    return DatasetRejected(
        dataset="d",
        correlation_id="c",
        stage="ingest",
        reason="empty_object",
        message="m",
        source=ObjectRef(container="raw", key="datasets/d/x.csv"),
    )


def load_event(name: str) -> Any:
    """A real trigger payload from tests/events/ (JSON), or its raw text."""
    text = (EVENTS / name).read_text()
    return json.loads(text) if name.endswith(".json") else text


class MemoryStore(ObjectStore):
    """Objects in a dict; etags are a counter, as opaque as the real ones.

    ``versioned=True`` keeps every version, as an S3 bucket with versioning on: HEAD
    names the current version, and a read pinned to a version gets that version's bytes.
    A read pinned to an etag only (Blob storage, an unversioned bucket) fails with
    ``ObjectChanged`` once the key holds other bytes, as If-Match does.
    """

    def __init__(self, *, versioned: bool = False) -> None:
        self.objects: dict[tuple[str, str], tuple[bytes, dict[str, str], str]] = {}
        # (container, key) -> the headers put_bytes stored with the object.
        self.headers: dict[tuple[str, str], dict[str, str]] = {}
        self.versions: dict[tuple[str, str, str], tuple[bytes, dict[str, str], str]] = {}
        self.versioned = versioned
        self.copies = 0
        self._n = 0

    def _get(self, ref: ObjectRef) -> tuple[bytes, dict[str, str], str]:
        try:
            return self.objects[(ref.container, ref.key)]
        except KeyError:
            raise ObjectMissing(f"no object at {ref.uri}") from None

    def _pinned(self, ref: ObjectRef, pin: ObjectPin | None) -> tuple[bytes, dict[str, str], str]:
        if pin is not None and pin.version_id is not None and self.versioned:
            try:
                return self.versions[(ref.container, ref.key, pin.version_id)]
            except KeyError:
                raise ObjectMissing(f"no version {pin.version_id} of {ref.uri}") from None
        current = self._get(ref)
        if pin is not None and pin.etag is not None and current[2] != pin.etag:
            raise ObjectChanged(f"{ref.uri} is no longer etag {pin.etag}")
        return current

    def _version_of(self, etag: str) -> str | None:
        return f"v-{etag}" if self.versioned else None

    def head(self, ref: ObjectRef, *, pin: ObjectPin | None = None) -> ObjectInfo:
        data, meta, etag = self._pinned(ref, pin)
        return ObjectInfo(
            size=len(data), etag=etag, metadata=meta, version_id=self._version_of(etag)
        )

    def read_prefix(self, ref: ObjectRef, length: int, *, pin: ObjectPin | None = None) -> bytes:
        return self._pinned(ref, pin)[0][:length]

    def iter_chunks(
        self, ref: ObjectRef, chunk_size: int = 1024 * 1024, *, pin: ObjectPin | None = None
    ) -> Iterator[bytes]:
        data = self._pinned(ref, pin)[0]
        for i in range(0, len(data), chunk_size):
            yield data[i : i + chunk_size]

    def put_bytes(
        self,
        ref: ObjectRef,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        content_type: str | None = None,
        content_disposition: str | None = None,
    ) -> None:
        # What the object would be served with (only what was set, as the clouds do).
        given = {"content_type": content_type, "content_disposition": content_disposition}
        self.headers[(ref.container, ref.key)] = {k: v for k, v in given.items() if v}
        self._n += 1
        etag = f"etag-{self._n}"
        self.objects[(ref.container, ref.key)] = (data, dict(metadata or {}), etag)
        version = self._version_of(etag)
        if version is not None:
            self.versions[(ref.container, ref.key, version)] = self.objects[
                (ref.container, ref.key)
            ]

    def upload_file(
        self, ref: ObjectRef, path: Path, metadata: Mapping[str, str] | None = None
    ) -> None:
        self.put_bytes(ref, path.read_bytes(), metadata)

    def delete(self, ref: ObjectRef) -> None:
        self.objects.pop((ref.container, ref.key), None)

    def list_keys(self, container: str, prefix: str) -> Iterator[str]:
        yield from sorted(k for c, k in self.objects if c == container and k.startswith(prefix))

    def copy(
        self,
        source: ObjectRef,
        target: ObjectRef,
        metadata: Mapping[str, str] | None = None,
        *,
        source_pin: ObjectPin | None = None,
    ) -> None:
        data = self._pinned(source, source_pin)[0]
        self.copies += 1
        self.put_bytes(target, data, metadata)


class MemoryBus(EventBus):
    def __init__(self, fail_times: int = 0) -> None:
        self.events: list[PipelineEvent] = []
        self.fail_times = fail_times

    def publish(self, event: PipelineEvent) -> None:
        if self.fail_times:
            self.fail_times -= 1
            raise DhowError("bus unavailable", reason="event_publish_failed")
        self.events.append(event)


class MemoryLineage(LineageStore):
    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], LineageRecord] = {}

    def put_if_absent(self, record: LineageRecord) -> bool:
        if (record.dataset, record.record_id) in self.rows:
            return False
        # Read back as its kind's record, as a real store's rows are.
        self.rows[(record.dataset, record.record_id)] = typed(record)
        return True

    def get(self, dataset: str, record_id: str) -> LineageRecord | None:
        return self.rows.get((dataset, record_id))

    def replace(self, record: LineageRecord, expected_revision: int) -> bool:
        current = self.rows.get((record.dataset, record.record_id))
        if current is None or current.revision != expected_revision:
            return False
        if is_finished(current.kind, current.status) or current.kind != record.kind:
            raise FinishedEntryImmutable(
                f"{current.kind} row {current.record_id} of {current.dataset} is "
                f"{current.status}: a finished entry is not written over",
                hint="record what happened next in a row of its own",
            )
        self.rows[(record.dataset, record.record_id)] = typed(record).model_copy(
            update={"revision": expected_revision + 1}
        )
        return True

    def list(self, dataset: str) -> list[LineageRecord]:
        return sorted(
            (r for (d, _), r in self.rows.items() if d == dataset), key=lambda r: r.created_at
        )

    def scan(self, cursor: str | None = None, page_size: int = 500) -> LineagePage:
        keys = sorted(self.rows)
        start = int(cursor) if cursor else 0
        page = keys[start : start + page_size]
        more = start + page_size < len(keys)
        return LineagePage(
            records=[self.rows[k] for k in page],
            next_cursor=str(start + page_size) if more else None,
        )


ROOT = Path(__file__).resolve().parents[1]


def train_artifact(tmp: Path, curated: Path, **hps: object) -> Path:
    """Run the real trainer with SageMaker's contract and tar its model dir as SageMaker does."""
    train = tmp / "input/data/train"
    train.mkdir(parents=True)
    (train / "data.parquet").write_bytes(curated.read_bytes())
    env = {
        **os.environ,
        "SM_CHANNEL_TRAIN": str(train),
        "SM_MODEL_DIR": str(tmp / "model"),
        "SM_OUTPUT_DATA_DIR": str(tmp / "out"),
        "SM_OUTPUT_DIR": str(tmp / "o"),
        "SM_HPS": json.dumps(
            {"target": "churned", "task": "classification", **{k: str(v) for k, v in hps.items()}}
        ),
    }
    r = subprocess.run(
        [sys.executable, "-m", "shared.trainer"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    archive = tmp / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for f in sorted((tmp / "model").iterdir()):
            tar.add(f, arcname=f.name)
    return archive


def broken_model(archive: bytes) -> bytes:
    """The same model.tar.gz with a card that asks for a column no request has, so every
    prediction it makes fails (as a model trained on a renamed column would)."""
    out = io.BytesIO()
    with (
        tarfile.open(fileobj=io.BytesIO(archive)) as src,
        tarfile.open(fileobj=out, mode="w:gz") as dst,
    ):
        for member in src.getmembers():
            f = src.extractfile(member)
            assert f is not None
            body = f.read()
            if member.name == "model.json":
                card = json.loads(body)
                card["features"].append("churn_score_v2")
                body = json.dumps(card).encode()
            member.size = len(body)
            dst.addfile(member, io.BytesIO(body))
    return out.getvalue()
