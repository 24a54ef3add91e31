"""The typed events the trigger shapes read, the same whichever cloud sent them.

The pipeline's own events are ``shared.events``; a validation job's and a deployment's
end are the ports' (``ValidationJobEnded``, ``DeploymentStateChange``). These are the
platform's others: an object stored, a training job ended, a rollout check due.
"""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

from shared.events import ObjectRef


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


class RolloutCheckDue(BaseModel):
    """A stepped rollout's next check is due: the message the Azure deployer sends its
    own deploy queue, visible after the step's wait (``shared.adapters.azure_serving``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: str
    deployment_id: str
