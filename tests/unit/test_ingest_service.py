"""Ingest service with in-memory ports: checks, idempotency, crash safety."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from shared.cloud_facts import value
from shared.errors import DhowError, WorkInProgress
from shared.events import DatasetIngested, DatasetRejected, ObjectRef, parse_pipeline_event
from shared.ports import ObjectInfo, ObjectPin
from shared.services.ingest import IngestService, dataset_of
from shared.triggers import ObjectCreated, parse_object_created
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore, load_event

RAW, STAGING = "dhow-t-raw", "dhow-t-staging"
CSV = b"customer_id,age\nC1,30\nC2,41\n"
PARQUET_HEAD = b"PAR1" + b"\x00" * 64 + b"PAR1"


def make(
    max_bytes: int = 1024, bus: MemoryBus | None = None
) -> tuple[IngestService, MemoryStore, MemoryBus, MemoryLineage]:
    store, lineage = MemoryStore(), MemoryLineage()
    bus = bus or MemoryBus()
    svc = IngestService(
        store, bus, lineage, staging_container=STAGING, max_upload_bytes=max_bytes, claim_seconds=60
    )
    return svc, store, bus, lineage


def upload(store: MemoryStore, key: str, data: bytes, **meta: str) -> ObjectCreated:
    store.put_bytes(ObjectRef(container=RAW, key=key), data, meta)
    return ObjectCreated(container=RAW, key=key, size=len(data), source_event="test")


def test_good_upload_is_hashed_staged_recorded_and_announced() -> None:
    svc, store, bus, lineage = make()
    obj = upload(
        store, "datasets/customers/jan.csv", CSV, dhow_upload_id="u-1", dhow_uploaded_by="amal"
    )
    out = svc.handle(obj)
    sha = hashlib.sha256(CSV).hexdigest()
    assert out.status == "ingested"
    assert out.sha256 == sha
    staged_key = f"datasets/customers/sha256={sha}/data.csv"
    assert store.objects[(STAGING, staged_key)][0] == CSV
    assert store.objects[(RAW, obj.key)][0] == CSV  # the upload stays where it was
    [event] = bus.events
    assert isinstance(event, DatasetIngested)
    assert (event.sha256, event.correlation_id, event.uploader) == (sha, "u-1", "amal")
    [row] = lineage.list("customers")
    assert row.status == "ingested"
    assert row.attributes["version"] == sha[:12]
    assert row.attributes["size_bytes"] == len(CSV)
    assert row.attributes["source"] == f"{RAW}/{obj.key}"


def test_same_object_delivered_twice_gives_one_row_and_one_event() -> None:
    svc, store, bus, lineage = make()
    obj = upload(store, "datasets/customers/jan.csv", CSV)
    assert svc.handle(obj).status == "ingested"
    assert svc.handle(obj).status == "duplicate"
    assert len(bus.events) == 1
    assert len(lineage.rows) == 1
    assert store.copies == 1


def test_same_bytes_under_another_name_are_the_same_version() -> None:
    svc, store, bus, _ = make()
    svc.handle(upload(store, "datasets/customers/a.csv", CSV))
    assert svc.handle(upload(store, "datasets/customers/b.csv", CSV)).status == "duplicate"
    assert len(bus.events) == 1


@pytest.mark.parametrize(
    ("key", "data", "reason"),
    [
        ("datasets/customers/empty.csv", b"", "empty_object"),
        ("datasets/customers/big.csv", b"x" * 1025, "object_too_large"),
        ("datasets/customers/sheet.xlsx", b"PK\x03\x04", "unsupported_format"),
        ("datasets/customers/noext", CSV, "unsupported_format"),
        ("datasets/customers/fake.parquet", CSV, "format_mismatch"),
        ("datasets/customers/fake.jsonl", CSV, "format_mismatch"),
        ("datasets/customers/binary.csv", PARQUET_HEAD, "format_mismatch"),
        ("datasets/customers/../../etc/passwd.csv", CSV, "key_outside_prefix"),
        ("datasets/customers/%2e%2e/x.csv", CSV, "key_outside_prefix"),
        ("datasets//x.csv", CSV, "key_outside_prefix"),
        ("datasets/customers.csv", CSV, "key_outside_prefix"),
        ("uploads/customers/x.csv", CSV, "key_outside_prefix"),
        ("datasets/customers\\..\\x.csv", CSV, "key_outside_prefix"),
        ("datasets/Customers!/x.csv", CSV, "invalid_dataset_name"),
    ],
)
def test_bad_uploads_are_rejected_with_reason_and_left_in_place(
    key: str, data: bytes, reason: str
) -> None:
    svc, store, bus, lineage = make()
    obj = upload(store, key, data, dhow_upload_id="u-9")
    out = svc.handle(obj)
    assert (out.status, out.reason) == ("rejected", reason)
    assert store.objects[(RAW, key)][0] == data  # nothing deleted or moved
    assert not any(c == STAGING for c, _ in store.objects)
    [event] = bus.events
    assert isinstance(event, DatasetRejected)
    assert event.reason == reason
    assert event.stage == "ingest"
    [row] = [r for r in lineage.rows.values()]
    assert row.attributes["reason"] == reason
    assert row.status == "rejected"
    # The same rejection delivered again is recorded once.
    svc.handle(obj)
    assert len(bus.events) == 1
    assert len(lineage.rows) == 1


def test_good_formats_pass_the_sniff() -> None:
    svc, store, _, _ = make()
    assert svc.handle(upload(store, "datasets/d/a.parquet", PARQUET_HEAD)).status == "ingested"
    assert svc.handle(upload(store, "datasets/d/b.jsonl", b'{"a": 1}\n')).status == "ingested"
    assert svc.handle(upload(store, "datasets/d/c.ndjson", b'\xef\xbb\xbf{"a": 2}\n')).status == (
        "ingested"
    )


def test_vanished_object_is_not_an_error_and_writes_nothing() -> None:
    svc, _, bus, lineage = make()
    obj = ObjectCreated(container=RAW, key="datasets/d/gone.csv", source_event="test")
    assert svc.handle(obj).status == "missing"
    assert bus.events == []
    assert lineage.rows == {}


def test_a_publish_failure_is_finished_by_the_retry() -> None:
    """Crash between claim and publish: the row stays 'claimed' and the retry completes it."""
    svc, store, bus, lineage = make(bus=MemoryBus(fail_times=1))
    obj = upload(store, "datasets/d/a.csv", CSV)
    with pytest.raises(DhowError):
        svc.handle(obj)
    [row] = lineage.rows.values()
    assert row.status == "claimed"
    # A retry inside the claim window backs off rather than racing the first delivery.
    with pytest.raises(WorkInProgress):
        svc.handle(obj)
    # Once the claim is stale (its holder died), the next delivery takes it over.
    key = (row.dataset, row.record_id)
    lineage.rows[key] = row.model_copy(
        update={"updated_at": datetime.now(UTC) - timedelta(hours=1)}
    )
    assert svc.handle(obj).status == "ingested"
    assert len(bus.events) == 1
    assert lineage.rows[key].status == "ingested"


def test_a_rejection_whose_event_failed_is_announced_on_retry() -> None:
    svc, store, bus, lineage = make(bus=MemoryBus(fail_times=1))
    obj = upload(store, "datasets/d/empty.csv", b"")
    with pytest.raises(DhowError):
        svc.handle(obj)
    assert svc.handle(obj).status == "rejected"
    assert len(bus.events) == 1
    assert next(iter(lineage.rows.values())).status == "rejected"


@pytest.mark.parametrize(
    ("key", "dataset"),
    [("datasets/customers/x.csv", "customers"), ("datasets/a-b_c/2026/q3/x (1).csv", "a-b_c")],
)
def test_dataset_names_come_from_the_prefix(key: str, dataset: str) -> None:
    assert dataset_of(key) == (dataset, None)


class ChecksummedStore(MemoryStore):
    """Storage that vouches for each object's SHA-256, as S3 does for a FULL_OBJECT
    checksum; reading a whole object fails, so a test sees whether ingest streamed it."""

    def head(self, ref: ObjectRef, *, pin: ObjectPin | None = None) -> ObjectInfo:
        info = super().head(ref, pin=pin)
        data = self.objects[(ref.container, ref.key)][0]
        return info.model_copy(update={"sha256": hashlib.sha256(data).hexdigest()})

    def iter_chunks(
        self, ref: ObjectRef, chunk_size: int = 1024 * 1024, *, pin: ObjectPin | None = None
    ) -> Iterator[bytes]:
        raise AssertionError("ingest streamed an object whose SHA-256 storage vouched for")


def test_an_upload_with_a_full_object_sha256_is_not_read_again() -> None:
    store = ChecksummedStore()
    bus, lineage = MemoryBus(), MemoryLineage()
    svc = IngestService(
        store, bus, lineage, staging_container="staging", max_upload_bytes=5 * 1024**3
    )
    data = b"a,b\n1,2\n"
    obj = upload(store, "datasets/customers/big.csv", data)
    out = svc.handle(obj)
    assert out.status == "ingested"
    assert out.sha256 == hashlib.sha256(data).hexdigest()  # the same version id as streaming


def test_the_uploader_is_who_storage_authenticated_and_the_metadata_only_a_claim() -> None:
    """The event names the principal S3 authenticated (fact aws.s3.event_principal); the
    object's metadata, which the uploader writes, is kept apart as a claim."""
    _, store, bus, lineage = make()
    [obj] = parse_object_created(load_event("s3_notification.json"))
    store.put_bytes(obj.ref, CSV, {"dhow_uploaded_by": "the-ceo"})
    # The event's ETag and version as this store names the bytes just put.
    obj = obj.model_copy(update={"etag": store.head(obj.ref).etag, "version_id": None})
    principal = value("aws.s3.event_principal")["notification"]
    assert principal == "userIdentity.principalId"
    svc = IngestService(store, bus, lineage, staging_container=obj.container, max_upload_bytes=1024)
    assert svc.handle(obj).status == "ingested"
    [event] = bus.events
    assert isinstance(event, DatasetIngested)
    assert (event.uploaded_by, event.claimed_uploader) == ("AWS:AIDAINPONIXQXHT3IKHL2", "the-ceo")
    [row] = lineage.list("customers")
    assert row.attributes["uploaded_by"] == "AWS:AIDAINPONIXQXHT3IKHL2"
    assert row.attributes["claimed_uploader"] == "the-ceo"


def test_a_dataset_ingested_of_the_old_shape_still_parses() -> None:
    old = DatasetIngested(
        dataset="d",
        correlation_id="c",
        sha256="ab",
        size_bytes=1,
        format="csv",
        source=ObjectRef(container="r", key="datasets/d/x.csv"),
        staged=ObjectRef(container="s", key="datasets/d/sha256=ab/data.csv"),
        uploader="amal",
    ).model_dump(mode="json", exclude={"uploaded_by", "claimed_uploader"})
    parsed = parse_pipeline_event("DatasetIngested", old)
    assert isinstance(parsed, DatasetIngested)
    assert (parsed.uploader, parsed.uploaded_by, parsed.claimed_uploader) == ("amal", None, None)


def test_an_overwrite_on_a_versioned_store_ingests_the_announced_version() -> None:
    store, bus, lineage = MemoryStore(versioned=True), MemoryBus(), MemoryLineage()
    svc = IngestService(store, bus, lineage, staging_container=STAGING, max_upload_bytes=1024)
    obj = upload(store, "datasets/d/a.csv", CSV)
    version = store.head(obj.ref).version_id
    store.put_bytes(obj.ref, b"a,b\n1,2\n")  # overwritten before ingest read it
    out = svc.handle(obj.model_copy(update={"version_id": version}))
    assert out.sha256 == hashlib.sha256(CSV).hexdigest()
    assert store.objects[(STAGING, out.staged.key)][0] == CSV  # type: ignore[union-attr]
