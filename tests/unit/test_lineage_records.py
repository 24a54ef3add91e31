"""Lineage rows are typed by kind (shared.lineage): one record class per kind, told apart
by ``kind`` and serialised in one place for both stores. Rows stored before the classes
existed read back as their kind's class, and are written back byte for byte."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.aws import DynamoLineageStore
from shared.adapters.azure import TableLineageStore
from shared.lineage import (
    FINISHED_STATUSES,
    RECORD_TYPES,
    DeployRecord,
    IngestRecord,
    LineageKind,
    LineageRecord,
    UnknownLineageKind,
    from_stored,
    typed,
)
from tests.helpers import MemoryLineage

ROOT = Path(__file__).resolve().parents[2]
AT = "2026-11-23T09:30:00.123456+00:00"
# A row of each kind as the stores hold it today (the attributes one JSON string, sorted).
ATTRIBUTES = json.dumps({"sha256": "ab" * 32, "size_bytes": 10, "version": "abababababab"})


def _ddb_item(kind: str, status: str) -> dict[str, Any]:
    return {
        "pk": {"S": "customers"},
        "sk": {"S": f"{kind}:1"},
        "kind": {"S": kind},
        "status": {"S": status},
        "attributes": {"S": ATTRIBUTES},
        "created_at": {"S": AT},
        "updated_at": {"S": AT},
        "revision": {"N": "3"},
    }


def _table_entity(kind: str, status: str) -> dict[str, Any]:
    return {
        "PartitionKey": "customers",
        "RowKey": f"{kind}:1",
        "kind": kind,
        "status": status,
        "attributes": ATTRIBUTES,
        "created_at": AT,
        "updated_at": AT,
        "revision": 3,
    }


@pytest.mark.parametrize("kind", [k.value for k in LineageKind])
def test_a_stored_row_of_each_kind_reads_as_its_class_and_writes_back_the_same(kind: str) -> None:
    item = _ddb_item(kind, "claimed")
    row = DynamoLineageStore._record(item)
    assert type(row) is RECORD_TYPES[LineageKind(kind)]
    assert (row.dataset, row.record_id, row.kind, row.status, row.revision) == (
        "customers",
        f"{kind}:1",
        kind,
        "claimed",
        3,
    )
    assert row.attributes == json.loads(ATTRIBUTES)
    assert row.created_at == datetime(2026, 11, 23, 9, 30, 0, 123456, tzinfo=UTC)
    assert DynamoLineageStore._item(row) == item

    entity = _table_entity(kind, "claimed")
    row = TableLineageStore._record(entity)
    assert type(row) is RECORD_TYPES[LineageKind(kind)]
    assert TableLineageStore._entity(row) == entity


def test_each_kind_has_one_class_and_the_union_covers_them_all() -> None:
    assert set(RECORD_TYPES) == set(LineageKind)
    assert {t.__name__ for t in RECORD_TYPES.values()} == {
        t.__name__ for t in LineageRecord.__subclasses__()
    }


def test_finished_statuses_are_the_ones_the_audit_trail_has_always_held() -> None:
    assert {
        "ingest": frozenset({"ingested"}),
        "ingest_rejected": frozenset({"rejected"}),
        "validate": frozenset({"validated", "rejected", "failed"}),
        "train": frozenset({"launched"}),
        "register": frozenset({"approved", "rejected", "failed"}),
        "deploy": frozenset({"completed", "rolled_back", "failed", "superseded"}),
        "rollback": frozenset({"done"}),
        "drift": frozenset({"no_drift", "drift", "insufficient_data"}),
        "drift_action": frozenset({"done", "failed"}),
    } == FINISHED_STATUSES
    assert DeployRecord.finished == FINISHED_STATUSES["deploy"]


def test_a_row_of_a_kind_dhow_does_not_record_is_a_typed_error() -> None:
    with pytest.raises(UnknownLineageKind, match="'retired_kind'") as err:
        from_stored("customers", "x:1", _table_entity("retired_kind", "done"))
    assert err.value.hint


def test_a_kind_is_checked_when_a_row_is_made() -> None:
    with pytest.raises(ValueError, match="kind"):
        LineageRecord(dataset="customers", record_id="x", kind="ingst", status="claimed")  # type: ignore[arg-type]
    row = IngestRecord(dataset="customers", record_id="ingest:ab", status="claimed")
    assert row.kind == "ingest"
    assert row.kind is LineageKind.INGEST


def test_the_memory_store_hands_rows_back_typed_as_the_real_stores_do() -> None:
    lineage = MemoryLineage()
    lineage.put_if_absent(
        LineageRecord(dataset="customers", record_id="deploy:1", kind="deploy", status="claimed")  # type: ignore[arg-type]
    )
    row = lineage.get("customers", "deploy:1")
    assert isinstance(row, DeployRecord)
    assert typed(row) is row


def test_services_make_rows_of_their_kind_s_class_not_free_strings() -> None:
    offenders = []
    for path in sorted((ROOT / "shared").rglob("*.py")):
        if path.name == "lineage.py":
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if "LineageRecord(" in line or any(f'kind == "{k}"' in line for k in LineageKind):
                offenders.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not offenders, "use shared.lineage's record classes and LineageKind:\n" + "\n".join(
        offenders
    )
