"""AWS's trigger shapes: what S3, EventBridge, SageMaker, CodeDeploy and SQS send.

Each is one registered ``TriggerShape`` (``shared.triggers.registry``). The function
reads the body of one SQS message (``sqs_messages`` opens the batch Lambda's
event-source mapping hands over, ``shared.batch`` handles each message on its own).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar
from urllib.parse import unquote_plus

from pydantic import BaseModel, ConfigDict

from shared.constants import (
    CODEDEPLOY_STATE_CHANGE,
    ENDPOINT_STATE_CHANGE,
    PROCESSING_JOB_STATE_CHANGE,
    TRAINING_JOB_STATE_CHANGE,
)
from shared.errors import EventParseError
from shared.events import ObjectRef
from shared.ports import DeploymentStateChange, ValidationJobEnded
from shared.triggers.models import ObjectCreated, TrainingJobEnded
from shared.triggers.registry import (
    Json,
    PipelineEnvelope,
    TriggerContext,
    TriggerShape,
    register_shape,
)

# The name of the ProcessingInput that carries the staged object (shared/adapters/aws.py).
STAGED_INPUT_NAME = "staged"


def _version_id(raw: Any) -> str | None:
    """A version that names fixed bytes. S3 calls the version of an object written while
    versioning was off ``null`` (fact aws.s3.event_version_id): it is overwritten in
    place, so it pins nothing, and reads fall back to If-Match on the ETag."""
    return None if raw in (None, "", "null") else str(raw)


def _is_eventbridge(data: Json, source: str, detail_type: str) -> bool:
    return (data.get("source"), data.get("detail-type")) == (source, detail_type)


@register_shape
class S3Notification(TriggerShape):
    """S3's own event notification (``Records[].s3``), as S3 sends it to SQS/SNS/Lambda;
    its ``s3:TestEvent`` asks nothing."""

    name = "s3_notification"
    produces = ObjectCreated
    broken = "s3_notification payload is missing a field:"

    @classmethod
    def infer(cls, data: Json) -> bool:
        records = data.get("Records")
        return (
            isinstance(records, list)
            and bool(records)
            and all(isinstance(r, Mapping) and r.get("eventSource") == "aws:s3" for r in records)
        ) or data.get("Event") == "s3:TestEvent"

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[ObjectCreated]:
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


@register_shape
class EventBridgeObjectCreated(TriggerShape):
    """S3's "Object Created" on the default bus (the raw bucket's rule)."""

    name = "eventbridge_s3"
    produces = ObjectCreated
    broken = "eventbridge_s3 payload is missing a field:"

    @classmethod
    def infer(cls, data: Json) -> bool:
        return _is_eventbridge(data, "aws.s3", "Object Created")

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[ObjectCreated]:
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


@register_shape
class EventBridgePipelineEvent(PipelineEnvelope):
    """A pipeline event on Dhow's bus: its type is the ``detail-type``, its body the
    ``detail``."""

    name = "eventbridge_pipeline"
    type_field, body_field = "detail-type", "detail"


@register_shape
class SageMakerTrainingJobStateChange(TriggerShape):
    """SageMaker's "Training Job State Change" of a job that ended (the rule's filter)."""

    name = "sagemaker_training_state_change"
    produces = TrainingJobEnded
    broken = "training state change is missing a field:"

    @classmethod
    def infer(cls, data: Json) -> bool:
        return _is_eventbridge(data, "aws.sagemaker", TRAINING_JOB_STATE_CHANGE)

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[TrainingJobEnded]:
        d = data["detail"]
        return [
            TrainingJobEnded(
                job_name=d["TrainingJobName"],
                status=d["TrainingJobStatus"],
                failure_reason=d.get("FailureReason"),
                artifact=(d.get("ModelArtifacts") or {}).get("S3ModelArtifacts"),
                instance_type=(d.get("ResourceConfig") or {}).get("InstanceType"),
                image=(d.get("AlgorithmSpecification") or {}).get("TrainingImage"),
                hyperparameters={
                    str(k): str(v) for k, v in (d.get("HyperParameters") or {}).items()
                },
            )
        ]


@register_shape
class SageMakerProcessingJobStateChange(TriggerShape):
    """SageMaker's "Processing Job State Change" of a validation job that ended. Its
    detail is the job's description, whose ProcessingInputs name the staged object the
    job validated: that is how validate finds the lineage row."""

    name = "sagemaker_processing_state_change"
    produces = ValidationJobEnded
    broken = "processing job state change is not a validation job's end:"
    hint = (
        "the rule delivers only Completed, Failed and Stopped jobs with a 'staged' "
        "input; compare it with tests/events/sagemaker_processing_job_state_change.json"
    )

    @classmethod
    def infer(cls, data: Json) -> bool:
        return _is_eventbridge(data, "aws.sagemaker", PROCESSING_JOB_STATE_CHANGE)

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[ValidationJobEnded]:
        d = data["detail"]
        inputs = {i["InputName"]: i for i in d.get("ProcessingInputs") or []}
        staged = ObjectRef.from_uri(inputs[STAGED_INPUT_NAME]["S3Input"]["S3Uri"])
        return [
            ValidationJobEnded(
                job_name=d["ProcessingJobName"],
                status=d["ProcessingJobStatus"],
                staged=staged,
                failure_reason=d.get("FailureReason") or d.get("ExitMessage"),
            )
        ]


class _ServeTargetEnd(TriggerShape):
    """A serving platform's state change of one of its targets (``<serve prefix>
    <dataset>``): read only at an end, and only for the stage's own serve targets."""

    produces = DeploymentStateChange
    source: ClassVar[str]
    detail_type: ClassVar[str]
    target_field: ClassVar[str]
    state_field: ClassVar[str]
    ends: ClassVar[tuple[str, ...]]
    succeeded: ClassVar[str]

    @classmethod
    def infer(cls, data: Json) -> bool:
        return _is_eventbridge(data, cls.source, cls.detail_type)

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[DeploymentStateChange]:
        prefix = context.require_serve_prefix()
        d = data["detail"]
        target, state = str(d.get(cls.target_field, "")), d.get(cls.state_field)
        if not target.startswith(prefix) or state not in cls.ends:
            return []  # not a Dhow serve target, or START, UPDATING, ...: not an end
        return [cls.ended(d, target.removeprefix(prefix), state == cls.succeeded)]

    @classmethod
    def ended(cls, detail: Json, dataset: str, succeeded: bool) -> DeploymentStateChange:
        raise NotImplementedError


@register_shape
class CodeDeployDeploymentStateChange(_ServeTargetEnd):
    """CodeDeploy's state change of a serve function's deployment (the local router's
    end-of-rollout notification has this shape too)."""

    name = "codedeploy_state_change"
    broken = "CodeDeploy state change is missing a field:"
    source, detail_type = "aws.codedeploy", CODEDEPLOY_STATE_CHANGE
    target_field, state_field = "deploymentGroup", "state"
    ends, succeeded = ("SUCCESS", "FAILURE", "STOP"), "SUCCESS"

    @classmethod
    def ended(cls, detail: Json, dataset: str, succeeded: bool) -> DeploymentStateChange:
        deployment = detail["deploymentId"]
        return DeploymentStateChange(
            dataset=dataset,
            deployment_id=deployment,
            status="Succeeded" if succeeded else "RolledBack",
            reason=None
            if succeeded
            else f"CodeDeploy deployment {deployment} ended {detail['state']}; the alias was "
            "rolled back (an alarm fired or a step failed)",
        )


@register_shape
class SageMakerEndpointStateChange(_ServeTargetEnd):
    """SageMaker's state change of a serve endpoint: in service, or failed."""

    name = "sagemaker_endpoint_state_change"
    broken = "SageMaker endpoint state change is missing a field:"
    source, detail_type = "aws.sagemaker", ENDPOINT_STATE_CHANGE
    target_field, state_field = "EndpointName", "EndpointStatus"
    ends, succeeded = ("IN_SERVICE", "FAILED"), "IN_SERVICE"

    @classmethod
    def ended(cls, detail: Json, dataset: str, succeeded: bool) -> DeploymentStateChange:
        # An endpoint reports which config serves, not which deployment ended: any other
        # deployment still open when it is back in service did not make it.
        return DeploymentStateChange(
            dataset=dataset,
            deployment_id=detail["EndpointConfigName"],
            status="Succeeded" if succeeded else "RolledBack",
            reason=None if succeeded else detail.get("FailureReason", "endpoint FAILED"),
            supersedes_open=True,
        )


class SqsMessage(BaseModel):
    """One message of an SQS batch, as Lambda's event-source mapping hands it over."""

    model_config = ConfigDict(frozen=True)

    message_id: str
    body: str
    receive_count: int = 1


def is_sqs_batch(event: Json) -> bool:
    """Whether ``event`` is the batch Lambda's SQS event-source mapping delivers."""
    records = event.get("Records")
    return isinstance(records, Sequence) and all(
        isinstance(r, Mapping) and r.get("eventSource") == "aws:sqs" for r in records
    )


def sqs_messages(event: Json) -> list[SqsMessage]:
    """The messages of an SQS batch event, as Lambda's event-source mapping delivers it."""
    if not is_sqs_batch(event):
        raise EventParseError(
            "event is not an SQS batch", hint="the function must be triggered by its SQS queue"
        )
    return [
        SqsMessage(
            message_id=r["messageId"],
            body=r["body"],
            receive_count=int((r.get("attributes") or {}).get("ApproximateReceiveCount", 1)),
        )
        for r in event["Records"]
    ]
