"""Lineage rows, typed by kind.

Every stage records what it did as a row of one ``LineageKind``: one record class per
kind (``IngestRecord``, ``ValidateRecord``, ...), told apart by ``kind`` (a pydantic
discriminated union, ``LineageEntry``). A class states which of its statuses make the row
a finished entry of the audit trail (``finished``), so the stores' conditional writes, the
audit and the services read that from one place.

A row is stored by the ``LineageStore`` adapters (DynamoDB, Table storage) in one shape:
``to_stored`` writes it, ``from_stored`` reads it back as its kind's record (a row
written before these classes existed reads the same: the stored shape did not change).
The adapters only name the key columns their store wants.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from shared.errors import DhowError
from shared.reasons import Reason


class LineageKind(StrEnum):
    """What a lineage row records (its ``kind`` column)."""

    INGEST = "ingest"
    INGEST_REJECTED = "ingest_rejected"
    VALIDATE = "validate"
    TRAIN = "train"
    TRAIN_SKIPPED = "train_skipped"
    REGISTER = "register"
    MODEL_VERSION = "model_version"
    DEPLOY = "deploy"
    ROLLBACK = "rollback"
    SERVING = "serving"
    DRIFT = "drift"
    DRIFT_ACTION = "drift_action"
    DRIFT_POLICY = "drift_policy"
    DRIFT_TIMER = "drift_timer"


def _now() -> datetime:
    return datetime.now(UTC)


class LineageRecord(BaseModel):
    """One row of lineage: what happened to which bytes, keyed by dataset and record id.

    ``revision`` grows by one on every update and is what conditional updates
    compare, so two concurrent writers cannot both win. A store hands back each row as
    its kind's subclass; ``finished`` is the kind's set of finished statuses.
    """

    model_config = ConfigDict(frozen=True)

    # The statuses in which a row of this kind is a finished entry of the audit trail
    # (``shared.audit``): the action happened, and what the row says of it is never written
    # over. Each set is the kind's own done statuses, as its service claims them (a test
    # holds them equal), so no retry or takeover ever needs to move a finished row. A
    # handover status ("superseded" of an ingest, "handed_off" or "waiting") is not
    # finished: the work goes on in the same row. Kinds with none are state that moves on
    # by design (the serving router and rollout, the drift policy's cooldown, the drift
    # timer's period, the registry's model versions); what moved them is a finished row of
    # its own (a rollback, a drift check, a deploy).
    finished: ClassVar[frozenset[str]] = frozenset()

    dataset: str
    record_id: str
    kind: LineageKind
    status: str
    attributes: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime = Field(default_factory=_now)
    updated_at: datetime = Field(default_factory=_now)
    revision: int = 0


class IngestRecord(LineageRecord):
    """An upload's bytes, claimed, copied to staging and announced (``ingest:<sha256>``)."""

    finished: ClassVar[frozenset[str]] = frozenset({"ingested"})
    kind: Literal[LineageKind.INGEST] = LineageKind.INGEST


class IngestRejectedRecord(LineageRecord):
    """An upload refused before its bytes were taken (``rejected:<id>``)."""

    finished: ClassVar[frozenset[str]] = frozenset({"rejected"})
    kind: Literal[LineageKind.INGEST_REJECTED] = LineageKind.INGEST_REJECTED


class ValidateRecord(LineageRecord):
    """One attempt at validating a version (``validate:<sha256>[:attempt-N]``)."""

    finished: ClassVar[frozenset[str]] = frozenset({"validated", "rejected", "failed"})
    kind: Literal[LineageKind.VALIDATE] = LineageKind.VALIDATE


class TrainRecord(LineageRecord):
    """A training job launched, with what it learns from (``train:<job>``)."""

    finished: ClassVar[frozenset[str]] = frozenset({"launched"})
    kind: Literal[LineageKind.TRAIN] = LineageKind.TRAIN


class TrainSkippedRecord(LineageRecord):
    """A retrain that did not run, and why (``no_new_data``)."""

    kind: Literal[LineageKind.TRAIN_SKIPPED] = LineageKind.TRAIN_SKIPPED


class RegisterRecord(LineageRecord):
    """A finished training job gated and registered (``register:<job>``)."""

    finished: ClassVar[frozenset[str]] = frozenset({"approved", "rejected", "failed"})
    kind: Literal[LineageKind.REGISTER] = LineageKind.REGISTER


class ModelVersionRecord(LineageRecord):
    """A model version of the lineage-backed registry (Azure, local)."""

    kind: Literal[LineageKind.MODEL_VERSION] = LineageKind.MODEL_VERSION


class DeployRecord(LineageRecord):
    """One rollout of an approved model version."""

    finished: ClassVar[frozenset[str]] = frozenset(
        {"completed", "rolled_back", "failed", "superseded"}
    )
    kind: Literal[LineageKind.DEPLOY] = LineageKind.DEPLOY


class RollbackRecord(LineageRecord):
    """A rollback to the previous model version (by hand or by a drift policy)."""

    finished: ClassVar[frozenset[str]] = frozenset({"done"})
    kind: Literal[LineageKind.ROLLBACK] = LineageKind.ROLLBACK


class ServingRecord(LineageRecord):
    """The serving router's or rollout's current state (moves on by design)."""

    kind: Literal[LineageKind.SERVING] = LineageKind.SERVING


class DriftRecord(LineageRecord):
    """One drift check's verdict."""

    finished: ClassVar[frozenset[str]] = frozenset({"no_drift", "drift", "insufficient_data"})
    kind: Literal[LineageKind.DRIFT] = LineageKind.DRIFT


class DriftActionRecord(LineageRecord):
    """What a drift policy did about a drift (a retrain or a rollback)."""

    finished: ClassVar[frozenset[str]] = frozenset({"done", "failed"})
    kind: Literal[LineageKind.DRIFT_ACTION] = LineageKind.DRIFT_ACTION


class DriftPolicyRecord(LineageRecord):
    """A drift policy's cooldown (moves on by design)."""

    kind: Literal[LineageKind.DRIFT_POLICY] = LineageKind.DRIFT_POLICY


class DriftTimerRecord(LineageRecord):
    """The drift timer's last period (moves on by design)."""

    kind: Literal[LineageKind.DRIFT_TIMER] = LineageKind.DRIFT_TIMER


LineageEntry = Annotated[
    IngestRecord
    | IngestRejectedRecord
    | ValidateRecord
    | TrainRecord
    | TrainSkippedRecord
    | RegisterRecord
    | ModelVersionRecord
    | DeployRecord
    | RollbackRecord
    | ServingRecord
    | DriftRecord
    | DriftActionRecord
    | DriftPolicyRecord
    | DriftTimerRecord,
    Field(discriminator="kind"),
]
_ENTRY: TypeAdapter[LineageEntry] = TypeAdapter(LineageEntry)
RECORD_TYPES: Mapping[LineageKind, type[LineageRecord]] = {
    t.model_fields["kind"].default: t for t in LineageRecord.__subclasses__()
}

# Each kind's finished statuses (``LineageRecord.finished`` of its class), for the stores'
# conditional writes; kinds with none are left out.
FINISHED_STATUSES: Mapping[str, frozenset[str]] = {
    kind: t.finished for kind, t in RECORD_TYPES.items() if t.finished
}


def is_finished(kind: str, status: str) -> bool:
    """Whether a row of ``kind`` in ``status`` is a finished (append-only) entry."""
    return status in FINISHED_STATUSES.get(kind, frozenset())


class UnknownLineageKind(DhowError):
    """A stored lineage row's kind is none this version of Dhow records."""

    reason = Reason.LINEAGE_KIND_UNKNOWN


def typed(record: LineageRecord) -> LineageRecord:
    """``record`` as its kind's class (itself if it is one already)."""
    if type(record) is not LineageRecord:
        return record
    return RECORD_TYPES[record.kind].model_validate(record.model_dump())


def to_stored(record: LineageRecord) -> dict[str, Any]:
    """The columns a store writes of a row besides its keys (dataset, record id): the
    attributes as one JSON string, times as ISO 8601, as they have always been stored."""
    return {
        "kind": str(record.kind),
        "status": record.status,
        "attributes": json.dumps(record.attributes, default=str, sort_keys=True),
        "created_at": record.created_at.isoformat(),
        "updated_at": record.updated_at.isoformat(),
        "revision": record.revision,
    }


def from_stored(dataset: str, record_id: str, columns: Mapping[str, Any]) -> LineageRecord:
    """A stored row (``to_stored``'s columns) as its kind's record."""
    row = {
        "dataset": dataset,
        "record_id": record_id,
        "kind": columns["kind"],
        "status": columns["status"],
        "attributes": json.loads(columns["attributes"]),
        "created_at": datetime.fromisoformat(columns["created_at"]),
        "updated_at": datetime.fromisoformat(columns["updated_at"]),
        "revision": int(columns["revision"]),
    }
    if row["kind"] not in set(LineageKind):
        raise UnknownLineageKind(
            f"lineage row {record_id} of {dataset} has kind {row['kind']!r}, which this "
            f"version of Dhow does not record ({', '.join(LineageKind)})",
            hint="read it with the version of Dhow that wrote it, or upgrade this one",
        )
    return _ENTRY.validate_python(row)
