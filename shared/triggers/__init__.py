"""Triggers at the edge: raw payloads in, typed events out, each to its service method.

- ``registry``: the trigger shapes, one class each with ``infer`` and ``parse``
  (``register_shape``, ``SHAPES``), as mangum registers its handlers;
- ``aws``, ``azure``: each cloud's shapes (S3, EventBridge, SageMaker, CodeDeploy, SQS;
  Event Grid, Azure ML, Storage queues), ``schedule``: the schedules' messages;
- ``routes``: one ``RouteTable`` per function, event type to service method, and the
  one runner every function's entry point calls.

The ``parse_*`` functions below read one kind of event with the registry, for the
callers that expect that kind (adapters, the CLI, tests); a function reads its queue
through its route table.
"""

from __future__ import annotations

from shared.constants import (
    CODEDEPLOY_STATE_CHANGE,
    ENDPOINT_STATE_CHANGE,
    EVENT_SOURCE,
    PROCESSING_JOB_STATE_CHANGE,
    TRAINING_JOB_STATE_CHANGE,
)
from shared.events import PipelineEvent
from shared.ports import DeploymentStateChange, ValidationJobEnded
from shared.triggers.aws import (
    STAGED_INPUT_NAME,
    SqsMessage,
    sqs_messages,
)
from shared.triggers.azure import (
    AZUREML_RUN_STATUS_CHANGED,
    CHECK_KEY,
    TAG_ARTIFACT,
    TAG_COMPUTE,
    TAG_FAILURE,
    TAG_HYPERPARAMETERS,
    TAG_IMAGE,
    TAG_STAGED,
    TRAINING_EXPERIMENT,
    VALIDATION_EXPERIMENT,
    azure_queue_body,
    check_message,
    is_rollout_check,
)
from shared.triggers.models import ObjectCreated, RolloutCheckDue, TrainingJobEnded
from shared.triggers.registry import (
    SHAPES,
    Json,
    Payload,
    PipelineEnvelope,
    TriggerContext,
    TriggerShape,
    claiming,
    loads,
    parse_as,
    parse_one,
    register_shape,
    shapes_producing,
    top_level_keys,
)
from shared.triggers.routes import Route, RouteTable, drift_policy
from shared.triggers.schedule import (
    DRIFT_TIMER_RECORD,
    DriftRequest,
    ScheduledDriftCheck,
    ScheduledValidationSweep,
    ValidationSweepRequest,
    claim_drift_period,
    schedule_period,
    timer_drift_requests,
)

__all__ = [
    "AZUREML_RUN_STATUS_CHANGED",
    "CHECK_KEY",
    "CODEDEPLOY_STATE_CHANGE",
    "DRIFT_TIMER_RECORD",
    "ENDPOINT_STATE_CHANGE",
    "PROCESSING_JOB_STATE_CHANGE",
    "SHAPES",
    "STAGED_INPUT_NAME",
    "TAG_ARTIFACT",
    "TAG_COMPUTE",
    "TAG_FAILURE",
    "TAG_HYPERPARAMETERS",
    "TAG_IMAGE",
    "TAG_STAGED",
    "TRAINING_EXPERIMENT",
    "TRAINING_JOB_STATE_CHANGE",
    "VALIDATION_EXPERIMENT",
    "DriftRequest",
    "Json",
    "ObjectCreated",
    "Payload",
    "PipelineEnvelope",
    "RolloutCheckDue",
    "Route",
    "RouteTable",
    "SqsMessage",
    "TrainingJobEnded",
    "TriggerContext",
    "TriggerShape",
    "ValidationSweepRequest",
    "azure_queue_body",
    "check_message",
    "claim_drift_period",
    "drift_policy",
    "is_rollout_check",
    "is_validation_job_state_change",
    "is_validation_sweep_request",
    "loads",
    "parse_bus_event",
    "parse_deployment_state_change",
    "parse_drift_request",
    "parse_object_created",
    "parse_one",
    "parse_training_state_change",
    "parse_validation_job_ended",
    "register_shape",
    "schedule_period",
    "shapes_producing",
    "sqs_messages",
    "timer_drift_requests",
]


def _source_and_type(data: Json) -> str:
    return (
        f"got source {data.get('source')!r}, detail-type {data.get('detail-type')!r}, "
        f"eventType {data.get('eventType')!r}"
    )


def parse_object_created(payload: Payload) -> list[ObjectCreated]:
    """Every object-created record in one payload of any supported storage source."""
    return parse_as(
        payload,
        ObjectCreated,
        refused="payload is not an object-created event",
        hint=lambda data: (
            "expected S3 notification, EventBridge 'Object Created' or Event "
            f"Grid BlobCreated; top-level keys were {top_level_keys(data)}"
        ),
    )


def parse_bus_event(payload: Payload) -> PipelineEvent:
    """A pipeline event from an EventBridge envelope or Dhow's queue envelope."""
    expected = f"expected source {EVENT_SOURCE!r}"
    return parse_one(payload, PipelineEvent, "payload is not a Dhow pipeline event", expected)


def parse_training_state_change(payload: Payload) -> TrainingJobEnded:
    """A training job's end: SageMaker's "Training Job State Change" (EventBridge) or
    Azure ML's ``RunStatusChanged`` (Event Grid schema)."""
    return parse_one(
        payload,
        TrainingJobEnded,
        "payload is not a training job state change",
        lambda data: f"expected SageMaker's or Azure ML's; {_source_and_type(data)}",
    )


def is_validation_job_state_change(payload: Payload) -> bool:
    """Whether a message on the validate queue is a managed job's end (not DatasetIngested):
    SageMaker's "Processing Job State Change" or Azure ML's RunStatusChanged of a run in
    the validation experiment."""
    return claiming(loads(payload), shapes_producing([ValidationJobEnded])) is not None


def parse_validation_job_ended(payload: Payload) -> ValidationJobEnded:
    """A validation job's end: SageMaker's "Processing Job State Change" (EventBridge) or
    Azure ML's ``RunStatusChanged`` (Event Grid schema), in an end state."""
    return parse_one(
        payload,
        ValidationJobEnded,
        "payload is not a validation job's state change",
        lambda data: (
            "expected SageMaker's Processing Job State Change or Azure ML's "
            f"RunStatusChanged; {_source_and_type(data)}"
        ),
    )


def is_validation_sweep_request(payload: Payload) -> bool:
    """Whether a message on the validate queue is a sweep request (a bare
    ``{"dataset": ...}``)."""
    return ScheduledValidationSweep.infer(loads(payload))


def parse_drift_request(payload: Payload) -> DriftRequest:
    """A schedule's ``{"dataset": ...}`` message (or a direct invocation's payload)."""
    sent = ScheduledDriftCheck.hint
    return parse_one(payload, DriftRequest, "not a drift check request: no dataset", sent)


def parse_deployment_state_change(
    payload: Payload, serve_prefix: str
) -> DeploymentStateChange | None:
    """CodeDeploy's or SageMaker's end-of-deployment event for a Dhow serve target
    (``<serve_prefix><dataset>``); None for a state that is not an end (START, UPDATING)."""
    changes = parse_as(
        payload,
        DeploymentStateChange,
        refused="payload is not a CodeDeploy or SageMaker endpoint state change",
        hint=lambda data: (
            f"got source {data.get('source')!r}, detail-type {data.get('detail-type')!r}"
        ),
        context=TriggerContext(serve_prefix=serve_prefix),
    )
    return changes[0] if changes else None
