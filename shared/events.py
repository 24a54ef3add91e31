"""The pipeline's own events: typed, versioned, and the same on every cloud.

On the wire an event is its JSON body (``model_dump_json``) plus its type name,
which travels as the EventBridge ``detail-type`` or the queue envelope's
``type``. ``schema_version`` lets a consumer refuse a shape it does not know
instead of misreading it.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import EventParseError


def _now() -> datetime:
    return datetime.now(UTC)


def _new_id() -> str:
    return uuid.uuid4().hex


class ObjectRef(BaseModel):
    """A stored object: a bucket (AWS) or container (Azure) and a key inside it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    container: str
    key: str

    @property
    def uri(self) -> str:
        return f"{self.container}/{self.key}"

    @classmethod
    def from_uri(cls, uri: str) -> ObjectRef:
        """``s3://bucket/key`` or ``container/key`` (the ``uri`` form) as an ObjectRef."""
        container, _, key = uri.removeprefix("s3://").partition("/")
        if not container or not key:
            raise EventParseError(
                f"not an object location: {uri!r}", hint="expected s3://bucket/key or container/key"
            )
        return cls(container=container, key=key)


class PipelineEvent(BaseModel):
    """Base of every pipeline event."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    event_type: ClassVar[str]
    schema_version: Literal[1] = 1
    event_id: str = Field(default_factory=_new_id)
    occurred_at: datetime = Field(default_factory=_now)
    dataset: str
    # Follows one upload through every stage; set by ingest, copied onwards.
    correlation_id: str

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.event_type = cls.__name__


class DatasetIngested(PipelineEvent):
    """An upload passed the ingest checks and was copied to its content-addressed key."""

    sha256: str
    size_bytes: int
    format: Literal["csv", "parquet", "jsonl"]
    source: ObjectRef
    staged: ObjectRef
    # As before: the metadata's claim, else the event's principal. Read uploaded_by.
    uploader: str | None = None
    # Who storage authenticated for the upload, from the storage event; None where the
    # event does not say (Event Grid's identity is optional).
    uploaded_by: str | None = None
    # Who the upload's own metadata says uploaded it: the uploader writes this, so it
    # is a claim, never an identity.
    claimed_uploader: str | None = None


class DatasetRejected(PipelineEvent):
    """An upload was refused, at ingest or at validation; nothing was deleted."""

    stage: Literal["ingest", "validate"]
    reason: str
    message: str
    source: ObjectRef
    sha256: str | None = None
    quarantined: ObjectRef | None = None
    report: ObjectRef | None = None


class DatasetValidated(PipelineEvent):
    """A staged dataset passed its schema and has a curated copy."""

    sha256: str
    rows: int
    spec_version: str
    curated: ObjectRef
    reference_profile: ObjectRef | None = None


class TrainingLaunched(PipelineEvent):
    """A training job was started for a validated dataset."""

    sha256: str
    spec_version: str
    job_name: str
    instance_type: str
    backend: Literal["sagemaker", "azureml", "local"]


class TrainingCompleted(PipelineEvent):
    """A training job ended, in success or not."""

    job_name: str
    status: Literal["Completed", "Failed", "Stopped"]
    reason: str | None = None
    model_artifact: ObjectRef | None = None


class ModelApproved(PipelineEvent):
    """A trained model passed the quality gate and is the new champion candidate."""

    model_version: str
    job_name: str
    metrics: dict[str, float]
    champion_version: str | None = None


class ModelRejected(PipelineEvent):
    """A trained model failed the quality gate."""

    model_version: str
    job_name: str
    metrics: dict[str, float]
    reason: str
    champion_version: str | None = None


class DeploymentStarted(PipelineEvent):
    """A model version started receiving traffic under a rollout strategy."""

    model_version: str
    strategy: Literal["canary", "linear", "all_at_once"]
    previous_version: str | None = None
    deployment_id: str | None = None
    target: str | None = None  # the Lambda alias, endpoint or local router shifted


class DeploymentCompleted(PipelineEvent):
    """A rollout finished; ``traffic`` maps model versions to their share."""

    model_version: str
    traffic: dict[str, float]
    deployment_id: str | None = None


class DeploymentRolledBack(PipelineEvent):
    """A rollout was undone, automatically or by hand."""

    model_version: str
    restored_version: str | None
    reason: str
    deployment_id: str | None = None
    # None for an automatic rollback (an alarm); who asked, for `dhow deploy rollback`.
    requested_by: str | None = None


class DriftChecked(PipelineEvent):
    """A drift check ran (scheduled or asked for); always emitted."""

    model_version: str | None
    verdict: Literal["no_drift", "drift", "insufficient_data"]
    drifted_columns: list[str] = Field(default_factory=list)
    drift_share: float | None = None
    report: ObjectRef | None = None
    check_id: str | None = None
    summary: ObjectRef | None = None  # the JSON: every column's test and statistic
    current_rows: int | None = None


class DriftDetected(PipelineEvent):
    """A drift check found drift. ``action`` is what happens now: the spec's policy, or
    ``alert`` alone while the policy is cooling down (``cooldown_until``)."""

    model_version: str | None
    drifted_columns: list[str]
    drift_share: float
    action: Literal["alert", "retrain", "rollback"]
    report: ObjectRef | None = None
    check_id: str | None = None
    summary: ObjectRef | None = None
    policy: Literal["alert", "retrain", "rollback"] | None = None
    cooldown_until: datetime | None = None


EVENT_TYPES: dict[str, type[PipelineEvent]] = {
    cls.event_type: cls
    for cls in (
        DatasetIngested,
        DatasetRejected,
        DatasetValidated,
        TrainingLaunched,
        TrainingCompleted,
        ModelApproved,
        ModelRejected,
        DeploymentStarted,
        DeploymentCompleted,
        DeploymentRolledBack,
        DriftChecked,
        DriftDetected,
    )
}


def parse_pipeline_event(event_type: str, body: str | bytes | dict[str, Any]) -> PipelineEvent:
    """Turn a type name and a JSON body back into the typed event."""
    model = EVENT_TYPES.get(event_type)
    if model is None:
        raise EventParseError(
            f"unknown pipeline event type {event_type!r}",
            hint=f"known types: {', '.join(sorted(EVENT_TYPES))}",
        )
    try:
        if isinstance(body, dict):
            return model.model_validate(body)
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise EventParseError(
            f"{event_type} body does not match schema version 1: {exc.error_count()} error(s)",
            hint=str(exc.errors(include_url=False)[:3]),
        ) from exc
