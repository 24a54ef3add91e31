"""Ports: one abstract interface per external capability.

Services depend on these only. Each cloud has one adapter per port in
``shared.adapters``; the SDK client is injected, never created inside.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.errors import DhowError, ObjectMissing
from shared.events import ObjectRef, PipelineEvent

# The row type of LineageStore, re-exported: its kinds live in shared.lineage.
from shared.lineage import LineageRecord as LineageRecord
from shared.reasons import Reason


class ObjectInfo(BaseModel):
    """What storage knows about an object without reading it."""

    model_config = ConfigDict(frozen=True)

    size: int
    etag: str
    metadata: dict[str, str] = Field(default_factory=dict)
    # The whole object's SHA-256 (hex), when storage checked one at upload and can vouch
    # for it; None when it has none, or only a checksum of part checksums (S3 multipart).
    sha256: str | None = None
    # The version HEAD described, where the bucket keeps versions (S3 with versioning on).
    version_id: str | None = None


class ObjectChanged(DhowError):
    """The object was overwritten between two reads that had to see the same bytes."""

    reason = Reason.OBJECT_CHANGED


class ObjectPin(BaseModel):
    """Which bytes of a key a read must see, so that separate reads of one key (HEAD, a
    sniff, a hash, a copy) cannot each see a different upload.

    ``version_id`` names one immutable version (S3 with versioning on): every read gets
    that version's bytes, whatever was written since. Without one, ``etag`` (unquoted)
    makes each read conditional (If-Match): a read of other bytes fails with
    ``ObjectChanged`` instead of returning them.
    """

    model_config = ConfigDict(frozen=True)

    version_id: str | None = None
    etag: str | None = None


class ObjectStore(abc.ABC):
    """Buckets (S3) or containers (Blob storage).

    The reads and the copy take an optional ``pin`` (see ``ObjectPin``): a pinned read
    returns the pinned version's bytes or raises ``ObjectChanged``, never other bytes.
    """

    @abc.abstractmethod
    def head(self, ref: ObjectRef, *, pin: ObjectPin | None = None) -> ObjectInfo:
        """Size, etag and user metadata; raises ``ObjectMissing`` if absent."""

    @abc.abstractmethod
    def read_prefix(self, ref: ObjectRef, length: int, *, pin: ObjectPin | None = None) -> bytes:
        """The first ``length`` bytes (fewer if the object is shorter)."""

    @abc.abstractmethod
    def iter_chunks(
        self, ref: ObjectRef, chunk_size: int = 1024 * 1024, *, pin: ObjectPin | None = None
    ) -> Iterator[bytes]:
        """Stream the object in chunks, so memory stays bounded whatever its size."""

    @abc.abstractmethod
    def put_bytes(
        self,
        ref: ObjectRef,
        data: bytes,
        metadata: Mapping[str, str] | None = None,
        *,
        content_type: str | None = None,
        content_disposition: str | None = None,
    ) -> None:
        """Write a whole object; ``content_type`` and ``content_disposition`` are stored as
        its headers, which the storage sends with it when it is read (a report is served
        as what it is, and downloaded rather than opened: shared.drift_report)."""

    @abc.abstractmethod
    def copy(
        self,
        source: ObjectRef,
        target: ObjectRef,
        metadata: Mapping[str, str] | None = None,
        *,
        source_pin: ObjectPin | None = None,
    ) -> None:
        """Server-side copy; the bytes never pass through the function. With
        ``source_pin``, the pinned version is copied, or ``ObjectChanged`` is raised."""

    @abc.abstractmethod
    def upload_file(
        self,
        ref: ObjectRef,
        path: Path,
        metadata: Mapping[str, str] | None = None,
        *,
        on_sent: Callable[[int], None] | None = None,
    ) -> None:
        """Stream a local file up (multipart where the service needs it);
        ``on_sent(bytes_sent_so_far)`` is called as it goes, for progress."""

    @abc.abstractmethod
    def delete(self, ref: ObjectRef) -> None:
        """Remove an object; no error if it is already gone."""

    @abc.abstractmethod
    def list_keys(self, container: str, prefix: str) -> Iterator[str]:
        """Keys under ``prefix``, in lexical order (so date-partitioned keys come oldest
        first), page by page: memory stays bounded however many there are."""

    def download(self, ref: ObjectRef, path: Path) -> int:
        """Stream the object to a local file; returns its size."""
        size = 0
        with path.open("wb") as f:
            for chunk in self.iter_chunks(ref):
                f.write(chunk)
                size += len(chunk)
        return size

    def exists(self, ref: ObjectRef) -> bool:
        try:
            self.head(ref)
        except ObjectMissing:
            return False
        return True


class EventBus(abc.ABC):
    """Where the pipeline's own events are published."""

    @abc.abstractmethod
    def publish(self, event: PipelineEvent) -> None:
        """Publish one event; raises if the bus did not accept it."""


class FinishedEntryImmutable(DhowError):
    """A finished lineage row, an entry of the audit trail, was asked to change."""

    reason = Reason.LINEAGE_ENTRY_FINISHED


class LineagePage(BaseModel):
    """One page of a scan across every dataset's rows."""

    model_config = ConfigDict(frozen=True)

    records: list[LineageRecord]
    # Where the next page starts (opaque to the caller); None after the last page.
    next_cursor: str | None = None


class LineageStore(abc.ABC):
    """Lineage and metadata rows (DynamoDB, Table storage)."""

    @abc.abstractmethod
    def put_if_absent(self, record: LineageRecord) -> bool:
        """Create the row; False (and no write) if one with the same key exists."""

    @abc.abstractmethod
    def get(self, dataset: str, record_id: str) -> LineageRecord | None:
        """The row, or None."""

    @abc.abstractmethod
    def replace(self, record: LineageRecord, expected_revision: int) -> bool:
        """Overwrite the row if its stored revision is still ``expected_revision``.

        The stored row gets ``expected_revision + 1``. False if someone else won (the
        stored revision is another one, or there is no row). A row that is stored finished
        (``is_finished`` of its kind and status) at ``expected_revision`` is never written
        over: ``FinishedEntryImmutable``, and nothing is written. The kind of a row never
        changes either (the same error). Each store checks both in its conditional write,
        so no path between a read and the write can change a finished row.
        """

    @abc.abstractmethod
    def list(self, dataset: str) -> list[LineageRecord]:
        """Every row of a dataset, oldest first."""

    @abc.abstractmethod
    def scan(self, cursor: str | None = None, page_size: int = 500) -> LineagePage:
        """One page of at most ``page_size`` rows of every dataset, in the store's own
        order, from ``cursor`` (None: the first page). For the audit trail across datasets;
        the caller bounds how many pages it reads."""


class TappedEvent(BaseModel):
    """A pipeline event read from the event tap, with the handle to acknowledge it."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    event: PipelineEvent
    handle: str


class EventTap(abc.ABC):
    """A queue that receives a copy of every pipeline event (for watchers and audit)."""

    @abc.abstractmethod
    def receive(self, wait_s: int = 1) -> list[TappedEvent]:
        """Up to a batch of events; unparseable messages are skipped and left for the DLQ."""

    @abc.abstractmethod
    def ack(self, tapped: TappedEvent) -> None:
        """Remove an event this watcher consumed."""

    @abc.abstractmethod
    def release(self, tapped: TappedEvent) -> None:
        """Hand an event that belongs to someone else back to the queue at once."""


class ValidationJobRequest(BaseModel):
    """A validation too large for a function, handed to a managed job running the same code."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    sha256: str
    spec_version: str
    source: ObjectRef
    staged: ObjectRef
    size_bytes: int
    correlation_id: str
    # 1 for the first job of these bytes; a retry after a job that failed for a platform
    # reason is a new attempt, and a new job name (the old name would find the old job).
    attempt: int = 1


_ATTEMPT = re.compile(r"-r([0-9]+)$")


def validation_attempt_suffix(attempt: int) -> str:
    """What a retry's job name ends with (``-r2``, ...), nothing for the first attempt.
    The names' own ends are hex digests, so ``-r<n>`` is never read into one."""
    return f"-r{attempt}" if attempt > 1 else ""


def validation_attempt_of(job_name: str) -> int:
    """The attempt a validation job's name says it is (``validation_attempt_suffix``)."""
    m = _ATTEMPT.search(job_name)
    return int(m.group(1)) if m else 1


class ValidationJobEnded(BaseModel):
    """A managed validation job reached an end state (SageMaker's own state-change event)."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    status: Literal["Completed", "Failed", "Stopped"]
    staged: ObjectRef  # the job's input: the staged object it validated
    failure_reason: str | None = None


class ValidationJobState(BaseModel):
    """A managed validation job as its platform reports it when asked (DescribeProcessingJob,
    Azure ML's job), not as an end event says: for a job whose end event never came."""

    model_config = ConfigDict(frozen=True)

    job_name: str
    # "Missing": the platform has no job of that name (never created, or expired).
    status: Literal["InProgress", "Stopping", "Completed", "Failed", "Stopped", "Missing"]
    failure_reason: str | None = None


class ValidationJobLauncher(abc.ABC):
    """Managed batch jobs (SageMaker Processing, Azure ML) running `shared.jobs.validate`."""

    @abc.abstractmethod
    def launch(self, request: ValidationJobRequest) -> str:
        """Start the job (idempotently: the name derives from the request); returns its name."""

    @property
    def max_runtime_s(self) -> int | None:
        """The job's own stopping condition, as ``launch`` sets it (the platform stops the
        job after this long); None where the launcher sets none."""
        return None

    def state(self, job_name: str) -> ValidationJobState | None:
        """The platform's word on a job, to settle one whose end event was lost; None
        where the launcher has no such read."""
        return None

    def stop(self, job_name: str) -> None:  # noqa: B027 - optional, as state() is
        """Ask the platform to stop a job (its end then comes as Stopped); a job that has
        already ended is left as it is."""


class TrainingJobRequest(BaseModel):
    """Train one validated dataset version on the spec's instance types, in order of preference."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    sha256: str
    spec_version: str
    trainer_version: str
    curated: ObjectRef
    target: str
    task: str
    instance_types: tuple[str, ...]
    hyperparameters: dict[str, str] = Field(default_factory=dict)
    use_spot: bool = False
    max_runtime_s: int = 3600
    correlation_id: str
    # Empty for the pipeline's own launch (one job per version); a manual retrain or a
    # drift policy sets one, so it gets a job of its own.
    run_tag: str = ""
    # Bring your own: a module run instead of shared.trainer (same SM_* contract), or
    # a whole training image (SageMaker) whose own entrypoint runs.
    entrypoint: str | None = None
    image: str | None = None
    # Every curated version the run learns from (the spec's training.learn_from), oldest
    # first, and their sha256s; empty: ``curated`` alone, as before learn_from existed.
    inputs: tuple[ObjectRef, ...] = ()
    data_sha256s: tuple[str, ...] = ()

    @property
    def training_inputs(self) -> tuple[ObjectRef, ...]:
        return self.inputs or (self.curated,)

    @property
    def job_hyperparameters(self) -> dict[str, str]:
        """What every backend hands the trainer (SageMaker's HyperParameters, Azure ML's
        run tag, the local job's SM_HPS): the request's, with the target and the task."""
        return {**self.hyperparameters, "target": self.target, "task": self.task}


class LaunchedTraining(BaseModel):
    model_config = ConfigDict(frozen=True)

    job_name: str
    instance_type: str | None  # None when an earlier delivery had launched it
    created: bool
    skipped: tuple[str, ...] = ()  # instance types passed over, with the reason


class TrainingLauncher(abc.ABC):
    """Managed training (SageMaker, Azure ML) or the local backend."""

    @abc.abstractmethod
    def launch(self, request: TrainingJobRequest) -> LaunchedTraining:
        """Start the job once: a second identical request finds it and starts nothing."""


ApprovalStatus = Literal["Approved", "Rejected", "PendingManualApproval"]


class ModelVersion(BaseModel):
    """One registered model version with its metrics and the lineage back to its bytes."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    version: int
    status: ApprovalStatus
    artifact: str  # where model.tar.gz lives
    image: str
    metrics: dict[str, float] = Field(default_factory=dict)
    lineage: dict[str, str] = Field(default_factory=dict)
    status_reason: str | None = None
    created_at: datetime


class ModelRegistry(abc.ABC):
    """Model versions per dataset (SageMaker Model Registry; Azure ML models)."""

    @abc.abstractmethod
    def register(
        self,
        dataset: str,
        *,
        artifact: str,
        image: str,
        metrics: Mapping[str, float],
        lineage: Mapping[str, str],
        status: ApprovalStatus,
        reason: str | None = None,
    ) -> ModelVersion:
        """Add a version; its number is the registry's next one for the dataset."""

    @abc.abstractmethod
    def versions(self, dataset: str) -> list[ModelVersion]:
        """Every version, newest first."""

    @abc.abstractmethod
    def set_status(self, dataset: str, version: int, status: ApprovalStatus, reason: str) -> None:
        """Approve or reject a version (a rollback rejects the champion)."""

    def version(self, dataset: str, number: int) -> ModelVersion | None:
        """Version ``number`` of the dataset, or None if the registry has no such one."""
        return next((v for v in self.versions(dataset) if v.version == number), None)

    def champion(self, dataset: str) -> ModelVersion | None:
        """The newest approved version: what serves, and what a challenger must beat."""
        return champion_of(self.versions(dataset))


def champion_of(versions: Sequence[ModelVersion]) -> ModelVersion | None:
    """The champion among a dataset's ``versions`` (newest first, as ``versions``
    returns them): the newest approved one."""
    return next((v for v in versions if v.status == "Approved"), None)


DeploymentStrategy = Literal["canary", "linear", "all_at_once"]


class DeploymentPlan(BaseModel):
    """Shift a dataset's serving traffic to ``model_version`` under the spec's schedule."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    model_version: int
    previous_version: int | None  # what serves now; None on the first deployment
    artifact: str
    artifact_sha256: str
    image: str
    strategy: DeploymentStrategy
    step_percent: int
    interval_minutes: int
    error_rate_threshold: float
    p99_latency_ms: int
    min_requests: int
    capture_sampling: float = 1.0
    instance_type: str = "ml.g5.xlarge"
    instance_count: int = 1


class StartedDeployment(BaseModel):
    model_config = ConfigDict(frozen=True)

    deployment_id: str
    target: str  # what was deployed to: a Lambda alias, an endpoint, the local router


class DeploymentStateChange(BaseModel):
    """A deployment ended, as its platform reports it (CodeDeploy, SageMaker, the local
    router): succeeded, or failed and rolled back."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    deployment_id: str
    status: Literal["Succeeded", "RolledBack"]
    reason: str | None = None
    # A SageMaker endpoint reports which config serves, not which deployment ended: any
    # other deployment still open when it is back in service did not make it.
    supersedes_open: bool = False


class ConfirmedDeployment(BaseModel):
    """A deployment as its platform reports it when asked (CodeDeploy's GetDeployment),
    not as a queued event says: which model version it carried, and whether it ended."""

    model_config = ConfigDict(frozen=True)

    deployment_id: str
    # None: not one Dhow started (a platform's own rollback deployment, a console one).
    model_version: int | None
    status: Literal["InProgress", "Succeeded", "RolledBack"]
    reason: str | None = None


class Deployer(abc.ABC):
    """Serving traffic: a Lambda alias shifted by CodeDeploy, a SageMaker endpoint's
    blue/green update, or the local router. Each rolls back by itself on its alarms."""

    @abc.abstractmethod
    def start(self, plan: DeploymentPlan) -> StartedDeployment:
        """Begin shifting traffic; the platform finishes (or rolls back) on its own and
        reports it as a ``DeploymentStateChange``."""

    @abc.abstractmethod
    def traffic(self, dataset: str) -> dict[str, float]:
        """Which model version serves what share now (versions as strings)."""

    @abc.abstractmethod
    def rollback(self, dataset: str, to_version: int, reason: str) -> str:
        """Stop any deployment in progress and send all traffic to ``to_version`` now;
        returns an id for the record."""

    def failure_reason(self, dataset: str, deployment_id: str) -> str | None:
        """Why the platform rolled a deployment back, where it says (an alarm's name)."""
        return None

    def confirm(self, dataset: str, deployment_id: str) -> ConfirmedDeployment | None:
        """The platform's own word on a deployment, to check an end event against; None
        where the deployer has no such read (its end events are its own reads)."""
        return None

    def advance(self, dataset: str, deployment_id: str) -> DeploymentStateChange | None:
        """One check of a rollout the deployer drives itself (Azure: no platform steps
        the traffic there); its end, or None while it goes on. Platforms that step and
        judge by themselves never send one."""
        return None


class MetricPoint(BaseModel):
    """One value for a metrics backend, with the dimensions it is filed under."""

    model_config = ConfigDict(frozen=True)

    name: str
    value: float
    unit: Literal["None", "Count", "Percent"] = "None"
    dimensions: dict[str, str] = Field(default_factory=dict)


class MetricsSink(abc.ABC):
    """Custom metrics (CloudWatch; Azure Monitor)."""

    @abc.abstractmethod
    def put(self, namespace: str, points: list[MetricPoint]) -> None:
        """Record the points now; raises if the backend refused them."""


class AlertChannel(abc.ABC):
    """Where on-call hears of a problem (an SNS topic; an Azure Monitor action group)."""

    @abc.abstractmethod
    def send(self, subject: str, message: str, attributes: Mapping[str, str]) -> str:
        """Deliver one alert to every subscriber; returns the channel's message id."""


class DeliveredAlert(BaseModel):
    """One alert as a subscriber received it, with the handle to remove it."""

    model_config = ConfigDict(frozen=True)

    subject: str | None
    message: str | None
    handle: str


class AlertInbox(abc.ABC):
    """A subscriber's queue of what an ``AlertChannel`` delivered: where `dhow local
    alerts` reads what on-call would have been sent."""

    @abc.abstractmethod
    def receive(self, wait_s: int = 1) -> list[DeliveredAlert]:
        """Up to a batch of alerts; when there is none, waits up to ``wait_s`` for one."""

    @abc.abstractmethod
    def ack(self, alert: DeliveredAlert) -> None:
        """Remove an alert that was read, so that it is shown once."""
