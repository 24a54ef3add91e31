"""Azure's trigger shapes: what Event Grid, Azure ML and Dhow's own senders put on the
Storage queues the functions read.

Each is one registered ``TriggerShape`` (``shared.triggers.registry``). The Functions
host hands a function one queue message's body; ``azure_queue_body`` reads one that was
put by hand still in base64.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Literal
from urllib.parse import unquote, urlparse

from shared.errors import EventParseError
from shared.events import ObjectRef
from shared.ports import ValidationJobEnded
from shared.triggers.models import ObjectCreated, RolloutCheckDue, TrainingJobEnded
from shared.triggers.registry import (
    Json,
    PipelineEnvelope,
    TriggerContext,
    TriggerShape,
    loads,
    register_shape,
)

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
# The key that marks a deploy-queue message as a rollout check (not a pipeline event).
CHECK_KEY = "dhow-rollout-check"


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


@register_shape
class EventGridBlobCreated(TriggerShape):
    """Event Grid's ``Microsoft.Storage.BlobCreated``, in the Event Grid or the
    CloudEvents schema."""

    name = "eventgrid_blob_created"
    produces = ObjectCreated
    broken = "eventgrid_blob_created payload is missing a field:"
    _TYPE = "Microsoft.Storage.BlobCreated"

    @classmethod
    def infer(cls, data: Json) -> bool:
        return cls._TYPE in (data.get("eventType"), data.get("type"))

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[ObjectCreated]:
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


@register_shape
class QueuePipelineEvent(PipelineEnvelope):
    """A pipeline event as Dhow's Azure bus puts it on a queue (a CloudEvent): its type
    is ``type``, its body ``data``."""

    name = "queue_pipeline"
    type_field, body_field = "type", "data"


def _run_end(d: Json) -> Literal["Completed", "Failed", "Stopped"]:
    status = _AZUREML_END_STATES.get(str(d.get("runStatus")))
    if status is None:
        raise EventParseError(
            f"Azure ML run {d.get('runId')!r} is {d.get('runStatus')!r}, not an end state",
            hint="the subscription should deliver only Completed, Failed and Canceled runs",
        )
    return status


def _is_validation_run(data: Json) -> bool:
    body = data.get("data")
    return isinstance(body, Mapping) and body.get("experimentName") == VALIDATION_EXPERIMENT


@register_shape
class AzureMLTrainingRunEnded(TriggerShape):
    """Azure ML's ``RunStatusChanged`` (Event Grid schema) of a training run that ended;
    what SageMaker's job description says, the run's ``dhow:*`` tags say."""

    name = "azureml_training_run_ended"
    produces = TrainingJobEnded
    broken = "training state change is missing a field:"

    @classmethod
    def infer(cls, data: Json) -> bool:
        return data.get("eventType") == AZUREML_RUN_STATUS_CHANGED and not _is_validation_run(data)

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[TrainingJobEnded]:
        d = data["data"]
        status = _run_end(d)
        tags: Mapping[str, Any] = d.get("runTags") or {}
        hyperparameters = json.loads(tags.get(TAG_HYPERPARAMETERS) or "{}")
        return [
            TrainingJobEnded(
                job_name=d["runId"],
                status=status,
                failure_reason=tags.get(TAG_FAILURE)
                or (None if status == "Completed" else f"Azure ML run ended {d['runStatus']}"),
                artifact=tags.get(TAG_ARTIFACT),
                instance_type=tags.get(TAG_COMPUTE),
                image=tags.get(TAG_IMAGE),
                hyperparameters={str(k): str(v) for k, v in hyperparameters.items()},
            )
        ]


@register_shape
class AzureMLValidationRunEnded(TriggerShape):
    """Azure ML's ``RunStatusChanged`` of a run in the validation experiment that ended;
    its ``dhow:staged`` tag names the staged object the job validated."""

    name = "azureml_validation_run_ended"
    produces = ValidationJobEnded
    broken = "Azure ML run status change is not a validation job's end:"
    hint = (
        f"a validation run carries the {TAG_STAGED!r} tag; compare it with "
        "tests/events/azureml_validation_run_status_changed.json"
    )

    @classmethod
    def infer(cls, data: Json) -> bool:
        return data.get("eventType") == AZUREML_RUN_STATUS_CHANGED and _is_validation_run(data)

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[ValidationJobEnded]:
        d = data["data"]
        status = _run_end(d)
        tags: Mapping[str, Any] = d.get("runTags") or {}
        return [
            ValidationJobEnded(
                job_name=d["runId"],  # an Azure ML job's name is its run's id
                status=status,
                staged=ObjectRef.from_uri(tags[TAG_STAGED]),
                failure_reason=None
                if status == "Completed"
                else f"Azure ML run ended {d['runStatus']}",
            )
        ]


def is_rollout_check(data: Any) -> bool:
    return isinstance(data, dict) and CHECK_KEY in data


def check_message(dataset: str, deployment_id: str) -> str:
    """The deploy-queue message that makes a rollout's next check due (``RolloutCheck``)."""
    return json.dumps({CHECK_KEY: {"dataset": dataset, "deployment_id": deployment_id}})


@register_shape
class RolloutCheck(TriggerShape):
    """A check the Azure deployer sent itself (``check_message``), now due."""

    name = "rollout_check"
    produces = RolloutCheckDue
    broken = "rollout check is malformed:"

    @classmethod
    def infer(cls, data: Json) -> bool:
        return CHECK_KEY in data

    @classmethod
    def read(cls, data: Json, context: TriggerContext) -> list[RolloutCheckDue]:
        return [RolloutCheckDue.model_validate(data[CHECK_KEY])]


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
    return loads(stripped)
