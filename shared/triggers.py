"""Parsers at the edge: raw trigger payloads in, typed objects out.

Each source shape has one small parser class with an ``infer`` classmethod that
says whether a payload is its shape (the registry pattern mangum uses for its
handlers), so adding a source never grows an if/else chain.

Shapes understood:
- S3 event notification (``Records[].s3``), as S3 sends it to SQS/SNS/Lambda;
- EventBridge "Object Created" from S3, and the pipeline's own events on a bus;
- SQS batch (``Records[].body``) wrapping either of the above;
- Azure Event Grid ``Microsoft.Storage.BlobCreated``, Event Grid or CloudEvents schema;
- Azure Storage queue message (base64 or plain JSON) wrapping an Event Grid event.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Literal
from urllib.parse import unquote, unquote_plus, urlparse

from pydantic import BaseModel, ConfigDict, Field

from shared.constants import DATASET_NAME_PATTERN, EVENT_SOURCE
from shared.errors import EventParseError
from shared.events import ObjectRef, PipelineEvent, parse_pipeline_event
from shared.ports import DeploymentStateChange, LineageRecord, LineageStore, ValidationJobEnded

Json = Mapping[str, Any]


class ObjectCreated(BaseModel):
    """A new object in storage, whichever cloud told us about it."""

    model_config = ConfigDict(frozen=True)

    container: str
    key: str
    size: int | None = None
    etag: str | None = None  # unquoted
    # The version the event is about (S3 with versioning on); reads are pinned to it.
    version_id: str | None = None
    sequencer: str | None = None
    # Who the storage service authenticated for the upload, as the event says (facts
    # aws.s3.event_principal, azure.eventgrid.blob_created_fields); None where the
    # event does not say. Never the object's metadata: the uploader writes that.
    uploader: str | None = None
    event_time: datetime | None = None
    source_event: str  # which parser read it; for logs and lineage

    @property
    def ref(self) -> ObjectRef:
        return ObjectRef(container=self.container, key=self.key)


class SqsMessage(BaseModel):
    """One message of an SQS batch, as Lambda's event-source mapping hands it over."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    body: str
    receive_count: int = 1


def _loads(payload: str | bytes | Json | list[Any]) -> Json:
    data: Any = payload
    if isinstance(payload, str | bytes):
        try:
            data = json.loads(payload)
        except (ValueError, UnicodeDecodeError) as exc:
            raise EventParseError(
                "trigger payload is not JSON",
                hint="expected an S3, EventBridge or Event Grid event",
            ) from exc
    if isinstance(data, list) and len(data) == 1:
        data = data[0]  # Event Grid delivers arrays; one event per message is our wiring
    if not isinstance(data, Mapping):
        raise EventParseError("trigger payload is not a JSON object", hint=f"got {type(data)}")
    return data


def _version_id(raw: Any) -> str | None:
    """A version that names fixed bytes. S3 calls the version of an object written while
    versioning was off ``null`` (fact aws.s3.event_version_id): it is overwritten in
    place, so it pins nothing, and reads fall back to If-Match on the ETag."""
    return None if raw in (None, "", "null") else str(raw)


class _ObjectCreatedParser:
    name: ClassVar[str]

    @classmethod
    def infer(cls, data: Json) -> bool:
        raise NotImplementedError

    @classmethod
    def parse(cls, data: Json) -> list[ObjectCreated]:
        raise NotImplementedError


class S3Notification(_ObjectCreatedParser):
    name = "s3_notification"

    @classmethod
    def infer(cls, data: Json) -> bool:
        records = data.get("Records")
        return (
            isinstance(records, list)
            and bool(records)
            and all(isinstance(r, Mapping) and r.get("eventSource") == "aws:s3" for r in records)
        ) or data.get("Event") == "s3:TestEvent"

    @classmethod
    def parse(cls, data: Json) -> list[ObjectCreated]:
        out = []
        for record in data.get("Records", []):  # a TestEvent has none: nothing to do
            if not str(record.get("eventName", "")).startswith("ObjectCreated:"):
                continue
            obj = record["s3"]["object"]
            out.append(
                ObjectCreated(
                    container=record["s3"]["bucket"]["name"],
                    # S3 notifications URL-encode keys, with '+' for spaces.
                    key=unquote_plus(obj["key"]),
                    size=obj.get("size"),
                    etag=obj.get("eTag"),
                    version_id=_version_id(obj.get("versionId")),
                    sequencer=obj.get("sequencer"),
                    uploader=(record.get("userIdentity") or {}).get("principalId"),
                    event_time=record.get("eventTime"),
                    source_event=cls.name,
                )
            )
        return out


class EventBridgeObjectCreated(_ObjectCreatedParser):
    name = "eventbridge_s3"

    @classmethod
    def infer(cls, data: Json) -> bool:
        return data.get("source") == "aws.s3" and data.get("detail-type") == "Object Created"

    @classmethod
    def parse(cls, data: Json) -> list[ObjectCreated]:
        detail = data["detail"]
        obj = detail["object"]
        return [
            ObjectCreated(
                container=detail["bucket"]["name"],
                key=obj["key"],  # EventBridge keys are not URL-encoded
                size=obj.get("size"),
                etag=obj.get("etag"),
                version_id=_version_id(obj.get("version-id")),
                sequencer=obj.get("sequencer"),
                uploader=detail.get("requester"),
                event_time=data.get("time"),
                source_event=cls.name,
            )
        ]


def _blob_path(url: str) -> tuple[str, str]:
    """Container and blob name from a blob URL (account host or Azurite's path style)."""
    parsed = urlparse(url)
    parts = unquote(parsed.path).lstrip("/").split("/")
    # Azurite and other emulators put the account first: /devstoreaccount1/container/blob
    if parsed.hostname in ("127.0.0.1", "localhost") or (parsed.port or 443) not in (80, 443):
        parts = parts[1:]
    if len(parts) < 2:
        raise EventParseError(f"blob URL has no container and name: {url!r}")
    return parts[0], "/".join(parts[1:])


class EventGridBlobCreated(_ObjectCreatedParser):
    name = "eventgrid_blob_created"
    _TYPE = "Microsoft.Storage.BlobCreated"

    @classmethod
    def infer(cls, data: Json) -> bool:
        return cls._TYPE in (data.get("eventType"), data.get("type"))

    @classmethod
    def parse(cls, data: Json) -> list[ObjectCreated]:
        body = data["data"]
        container, key = _blob_path(body["url"])
        # CloudEvents carries the time as "time", the Event Grid schema as "eventTime".
        when = data.get("eventTime") or data.get("time")
        return [
            ObjectCreated(
                container=container,
                key=key,
                size=body.get("contentLength"),
                # Documented quoted ("\"0x8D…\""), as Blob storage's own ETag header.
                etag=str(body["eTag"]).strip('"') if body.get("eTag") else None,
                sequencer=body.get("sequencer"),
                uploader=(body.get("identity") or None),
                event_time=when,
                source_event=cls.name,
            )
        ]


_OBJECT_PARSERS: tuple[type[_ObjectCreatedParser], ...] = (
    S3Notification,
    EventBridgeObjectCreated,
    EventGridBlobCreated,
)


def parse_object_created(payload: str | bytes | Json | list[Any]) -> list[ObjectCreated]:
    """Every object-created record in one payload of any supported storage source."""
    data = _loads(payload)
    for parser in _OBJECT_PARSERS:
        if parser.infer(data):
            try:
                return parser.parse(data)
            except (KeyError, TypeError, ValueError) as exc:
                raise EventParseError(
                    f"{parser.name} payload is missing a field: {exc}",
                    hint="compare it with tests/events/ for the expected shape",
                ) from exc
    raise EventParseError(
        "payload is not an object-created event",
        hint="expected S3 notification, EventBridge 'Object Created' or Event Grid BlobCreated; "
        f"top-level keys were {sorted(data)[:8]}",
    )


def parse_bus_event(payload: str | bytes | Json) -> PipelineEvent:
    """A pipeline event from an EventBridge envelope or Dhow's queue envelope."""
    data = _loads(payload)
    if data.get("source") == EVENT_SOURCE and "detail-type" in data:
        return parse_pipeline_event(str(data["detail-type"]), data["detail"])
    if data.get("source") == EVENT_SOURCE and "type" in data:  # Azure queue envelope
        return parse_pipeline_event(str(data["type"]), data["data"])
    raise EventParseError(
        "payload is not a Dhow pipeline event", hint=f"expected source {EVENT_SOURCE!r}"
    )


class DriftRequest(BaseModel):
    """Check one dataset for drift: the body the schedule sends to the drift queue."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    requested_by: str = "schedule"
    # The schedule period a timer's request is for (its UTC start), or the run's time
    # EventBridge Scheduler writes in (fact aws.scheduler.scheduled_time_attribute); None
    # when a person asked. The drift check's window ends there.
    period: datetime | None = None


DRIFT_TIMER_RECORD = "drift:timer"


def schedule_period(now: datetime, period_s: float) -> datetime:
    """The start of the schedule period ``now`` falls in, periods counted from the epoch."""
    epoch = now.timestamp()
    return datetime.fromtimestamp(epoch - epoch % period_s, UTC)


def claim_drift_period(lineage: LineageStore, dataset: str, period: datetime) -> bool:
    """Whether this timer tick is the one that sends ``dataset``'s check for ``period``.

    A check that keeps failing is never recorded as done, so it stays due, and a timer
    that fires each minute would send it again each minute, on top of the queue's own
    redeliveries of the first. Storage queues have no duplicate detection (fact
    ``azure.storage.queue_no_duplicate_detection``), so the timer claims the period in
    one lineage row per dataset, moved forward by a conditional write: of every tick in a
    period (and of two timers at once) one sends, the queue's retries and its poison
    queue handle what fails, and the next period sends again.
    """
    attrs = {"period": period.isoformat()}
    for _ in range(3):  # a lost race re-reads the row
        row = lineage.get(dataset, DRIFT_TIMER_RECORD)
        if row is None:
            fresh = LineageRecord(
                dataset=dataset,
                record_id=DRIFT_TIMER_RECORD,
                kind="drift_timer",
                status="sent",
                attributes=attrs,
            )
            if lineage.put_if_absent(fresh):
                return True
            continue
        if datetime.fromisoformat(str(row.attributes["period"])) >= period:
            return False
        moved = row.model_copy(update={"attributes": attrs, "updated_at": datetime.now(UTC)})
        if lineage.replace(moved, row.revision):
            return True
    return False


def timer_drift_requests(
    lineage: LineageStore,
    due: Sequence[str],
    now: datetime,
    specs_dir: str | None,
    minute_seconds: float = 60.0,
) -> list[DriftRequest]:
    """The requests a timer tick sends for the ``due`` datasets: one per dataset and
    period of its ``drift.schedule`` (``claim_drift_period``)."""
    from shared.specs import load_spec
    from shared.topology import rate_minutes

    requests = []
    for dataset in due:
        minutes = rate_minutes(load_spec(dataset, specs_dir).drift.schedule) or 1
        period = schedule_period(now, minutes * minute_seconds)
        if claim_drift_period(lineage, dataset, period):
            requests.append(DriftRequest(dataset=dataset, period=period))
    return requests


def _schedule_message[M: BaseModel](
    model: type[M], payload: str | bytes | Json, what: str, sender: str
) -> M:
    """A schedule's ``{"dataset": ...}`` body as ``model``, or why it is not one."""
    try:
        return model.model_validate(_loads(payload))
    except ValueError as exc:
        raise EventParseError(
            f"not a {what}: {str(exc).splitlines()[0]}",
            hint=f'{sender} sends {{"dataset": "<name>"}}',
        ) from exc


def parse_drift_request(payload: str | bytes | Json) -> DriftRequest:
    """A schedule's ``{"dataset": ...}`` message (or a direct invocation's payload)."""
    return _schedule_message(DriftRequest, payload, "drift check request", "the schedule")


class ValidationSweepRequest(BaseModel):
    """Sweep one dataset's validations still handed to managed jobs: the body the
    ``validate_sweep`` schedule sends to the validate queue (``ValidateService.sweep``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # A dataset name as ingest accepts one: the sweep reads lineage by it, and a name
    # that is not one never reaches a store's query.
    dataset: str = Field(pattern=DATASET_NAME_PATTERN)
    # The run's time EventBridge Scheduler writes in, as for the drift schedule; unused:
    # a sweep reads the platform's state now, whichever run it is.
    period: datetime | None = None


def is_validation_sweep_request(payload: str | bytes | Json) -> bool:
    """Whether a message on the validate queue is a sweep request: a schedule's bare
    ``{"dataset": ...}``, where every event comes in an envelope (EventBridge's detail,
    a CloudEvent's data)."""
    data = _loads(payload)
    return "dataset" in data and set(data) <= set(ValidationSweepRequest.model_fields)


def parse_validation_sweep_request(payload: str | bytes | Json) -> ValidationSweepRequest:
    return _schedule_message(
        ValidationSweepRequest, payload, "validation sweep request", "the validate_sweep schedule"
    )


class TrainingJobEnded(BaseModel):
    """A training job reached an end state (SageMaker's "Training Job State Change")."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    status: str  # Completed | Failed | Stopped (in-progress states are not delivered to us)
    failure_reason: str | None = None
    artifact: str | None = None  # s3://bucket/key of model.tar.gz
    instance_type: str | None = None
    image: str | None = None
    hyperparameters: dict[str, str]


AZUREML_RUN_STATUS_CHANGED = "Microsoft.MachineLearningServices.RunStatusChanged"
# Azure ML run tags Dhow sets on its training jobs, read back from the run's event.
TAG_ARTIFACT, TAG_HYPERPARAMETERS, TAG_COMPUTE, TAG_IMAGE, TAG_FAILURE = (
    "dhow:artifact",
    "dhow:hyperparameters",
    "dhow:compute",
    "dhow:image",
    "dhow:failure-reason",
)
_AZUREML_END_STATES: dict[str, Literal["Completed", "Failed", "Stopped"]] = {
    "Completed": "Completed",
    "Failed": "Failed",
    "Canceled": "Stopped",
}
# The experiments Dhow's Azure ML jobs run in: the workspace's RunStatusChanged
# subscriptions route a run's end by its experiment (infra/azure/stack.py), validation's
# to the validate queue and training's to register, so neither adopts the other's run.
VALIDATION_EXPERIMENT, TRAINING_EXPERIMENT = "dhow-validate", "dhow-train"
# The staged object a validation job validated (container/key), read back from its
# run's event as SageMaker's is read from its ProcessingInputs.
TAG_STAGED = "dhow:staged"


def _sagemaker_training_ended(data: Json) -> TrainingJobEnded:
    d = data["detail"]
    return TrainingJobEnded(
        job_name=d["TrainingJobName"],
        status=d["TrainingJobStatus"],
        failure_reason=d.get("FailureReason"),
        artifact=(d.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
        instance_type=(d.get("ResourceConfig") or {}).get("InstanceType"),
        image=(d.get("AlgorithmSpecification") or {}).get("TrainingImage"),
        hyperparameters={str(k): str(v) for k, v in (d.get("HyperParameters") or {}).items()},
    )


def _azureml_training_ended(data: Json) -> TrainingJobEnded:
    d = data["data"]
    status = _AZUREML_END_STATES.get(str(d.get("runStatus")))
    if status is None:
        raise EventParseError(
            f"Azure ML run {d.get('runId')!r} is {d.get('runStatus')!r}, not an end state",
            hint="the subscription should deliver only Completed, Failed and Canceled runs",
        )
    tags: Mapping[str, Any] = d.get("runTags") or {}
    return TrainingJobEnded(
        job_name=d["runId"],
        status=status,
        failure_reason=tags.get(TAG_FAILURE)
        or (None if status == "Completed" else f"Azure ML run ended {d['runStatus']}"),
        artifact=tags.get(TAG_ARTIFACT),
        instance_type=tags.get(TAG_COMPUTE),
        image=tags.get(TAG_IMAGE),
        hyperparameters={
            str(k): str(v) for k, v in json.loads(tags.get(TAG_HYPERPARAMETERS) or "{}").items()
        },
    )


def parse_training_state_change(payload: str | bytes | Json) -> TrainingJobEnded:
    """A training job's end: SageMaker's "Training Job State Change" (EventBridge) or
    Azure ML's ``RunStatusChanged`` (Event Grid schema)."""
    data = _loads(payload)
    if data.get("source") == "aws.sagemaker" and (
        data.get("detail-type") == "SageMaker Training Job State Change"
    ):
        parse = _sagemaker_training_ended
    elif data.get("eventType") == AZUREML_RUN_STATUS_CHANGED:
        parse = _azureml_training_ended
    else:
        raise EventParseError(
            "payload is not a training job state change",
            hint=f"expected SageMaker's or Azure ML's; got source {data.get('source')!r}, "
            f"detail-type {data.get('detail-type')!r}, eventType {data.get('eventType')!r}",
        )
    try:
        return parse(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise EventParseError(
            f"training state change is missing a field: {exc}",
            hint="compare it with tests/events/ for the expected shape",
        ) from exc


PROCESSING_JOB_STATE_CHANGE = "SageMaker Processing Job State Change"
# The name of the ProcessingInput that carries the staged object (shared/adapters/aws.py).
STAGED_INPUT_NAME = "staged"


def _is_azureml_validation_run(data: Json) -> bool:
    body = data.get("data")
    return (
        data.get("eventType") == AZUREML_RUN_STATUS_CHANGED
        and isinstance(body, Mapping)
        and body.get("experimentName") == VALIDATION_EXPERIMENT
    )


def is_validation_job_state_change(payload: str | bytes | Json) -> bool:
    """Whether a message on the validate queue is a managed job's end (not DatasetIngested):
    SageMaker's "Processing Job State Change" or Azure ML's RunStatusChanged of a run in
    the validation experiment."""
    data = _loads(payload)
    return (data.get("source"), data.get("detail-type")) == (
        "aws.sagemaker",
        PROCESSING_JOB_STATE_CHANGE,
    ) or _is_azureml_validation_run(data)


def _azureml_validation_ended(data: Json) -> ValidationJobEnded:
    d = data["data"]
    status = _AZUREML_END_STATES.get(str(d.get("runStatus")))
    if status is None:
        raise EventParseError(
            f"Azure ML run {d.get('runId')!r} is {d.get('runStatus')!r}, not an end state",
            hint="the subscription should deliver only Completed, Failed and Canceled runs",
        )
    tags: Mapping[str, Any] = d.get("runTags") or {}
    return ValidationJobEnded(
        job_name=d["runId"],  # an Azure ML job's name is its run's id
        status=status,
        staged=ObjectRef.from_uri(tags[TAG_STAGED]),
        failure_reason=None if status == "Completed" else f"Azure ML run ended {d['runStatus']}",
    )


def parse_validation_job_ended(payload: str | bytes | Json) -> ValidationJobEnded:
    """A validation job's end: SageMaker's "Processing Job State Change" (EventBridge) or
    Azure ML's ``RunStatusChanged`` (Event Grid schema), in an end state.

    SageMaker's detail is the job's description, whose ProcessingInputs name the staged
    object the job validated; Azure ML's event carries the run's tags, and the
    ``dhow:staged`` tag names it. That is how the function finds the lineage row."""
    data = _loads(payload)
    if _is_azureml_validation_run(data):
        try:
            return _azureml_validation_ended(data)
        except (KeyError, TypeError, ValueError) as exc:
            raise EventParseError(
                f"Azure ML run status change is not a validation job's end: {exc}",
                hint=f"a validation run carries the {TAG_STAGED!r} tag; compare it with "
                "tests/events/azureml_validation_run_status_changed.json",
            ) from exc
    if not is_validation_job_state_change(data):
        raise EventParseError(
            "payload is not a validation job's state change",
            hint="expected SageMaker's Processing Job State Change or Azure ML's "
            f"RunStatusChanged; got source {data.get('source')!r}, detail-type "
            f"{data.get('detail-type')!r}, eventType {data.get('eventType')!r}",
        )
    try:
        d = data["detail"]
        inputs = {i["InputName"]: i for i in d.get("ProcessingInputs") or []}
        staged = ObjectRef.from_uri(inputs[STAGED_INPUT_NAME]["S3Input"]["S3Uri"])
        return ValidationJobEnded(
            job_name=d["ProcessingJobName"],
            status=d["ProcessingJobStatus"],
            staged=staged,
            failure_reason=d.get("FailureReason") or d.get("ExitMessage"),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EventParseError(
            f"processing job state change is not a validation job's end: {exc}",
            hint="the rule delivers only Completed, Failed and Stopped jobs with a 'staged' "
            "input; compare it with tests/events/sagemaker_processing_job_state_change.json",
        ) from exc


CODEDEPLOY_STATE_CHANGE = "CodeDeploy Deployment State-change Notification"
ENDPOINT_STATE_CHANGE = "SageMaker Endpoint State Change"


def is_deployment_state_change(data: Json) -> bool:
    return (data.get("source"), data.get("detail-type")) in (
        ("aws.codedeploy", CODEDEPLOY_STATE_CHANGE),
        ("aws.sagemaker", ENDPOINT_STATE_CHANGE),
    )


def parse_deployment_state_change(
    payload: str | bytes | Json, serve_prefix: str
) -> DeploymentStateChange | None:
    """CodeDeploy's or SageMaker's end-of-deployment event for a Dhow serve target
    (``<serve_prefix><dataset>``); None for a state that is not an end (START, UPDATING)."""
    data = _loads(payload)
    if not is_deployment_state_change(data):
        raise EventParseError(
            "payload is not a CodeDeploy or SageMaker endpoint state change",
            hint=f"got source {data.get('source')!r}, detail-type {data.get('detail-type')!r}",
        )
    d = data["detail"]
    if data["source"] == "aws.codedeploy":
        group = str(d.get("deploymentGroup", ""))
        state = d.get("state")
        if not group.startswith(serve_prefix) or state not in ("SUCCESS", "FAILURE", "STOP"):
            return None
        return DeploymentStateChange(
            dataset=group.removeprefix(serve_prefix),
            deployment_id=d["deploymentId"],
            status="Succeeded" if state == "SUCCESS" else "RolledBack",
            reason=None
            if state == "SUCCESS"
            else f"CodeDeploy deployment {d['deploymentId']} ended {state}; the alias was "
            "rolled back (an alarm fired or a step failed)",
        )
    endpoint = str(d.get("EndpointName", ""))
    status = d.get("EndpointStatus")
    if not endpoint.startswith(serve_prefix) or status not in ("IN_SERVICE", "FAILED"):
        return None
    return DeploymentStateChange(
        dataset=endpoint.removeprefix(serve_prefix),
        deployment_id=d["EndpointConfigName"],
        status="Succeeded" if status == "IN_SERVICE" else "RolledBack",
        reason=None if status == "IN_SERVICE" else d.get("FailureReason", "endpoint FAILED"),
        supersedes_open=True,
    )


def sqs_messages(event: Json) -> list[SqsMessage]:
    """The messages of an SQS batch event, as Lambda's event-source mapping delivers it."""
    records = event.get("Records")
    if not isinstance(records, Sequence) or not all(
        isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records
    ):
        raise EventParseError(
            "event is not an SQS batch", hint="the function must be triggered by its SQS queue"
        )
    return [
        SqsMessage(
            message_id=r["messageId"],
            body=r["body"],
            receive_count=int((r.get("attributes") or {}).get("ApproximateReceiveCount", 1)),
        )
        for r in records
    ]


def azure_queue_body(raw: bytes | str) -> Json:
    """Decode an Azure Storage queue message body: JSON, or base64 of JSON.

    Event Grid writes base64 to Storage queues; the Functions host usually decodes
    it, but a message put by hand may still be encoded.
    """
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    stripped = text.strip()
    if not stripped.startswith(("{", "[")):
        try:
            stripped = base64.b64decode(stripped, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise EventParseError(
                "queue message is neither JSON nor base64 JSON", hint=f"starts with {text[:20]!r}"
            ) from exc
    return _loads(stripped)
