"""The one declarative description of what a Dhow stack is made of.

The local platform creates these resources in LocalStack and Azurite; the Pulumi
program builds the cloud stacks from the same objects. Names are derived from
the stage, so ``local`` and ``acme-prod`` never collide.

Permissions are written per function as neutral verbs on a resource of this
topology (``read`` the raw bucket, ``consume`` the ingest queue, ``launch``
training jobs): each cloud's stack translates them, infra/aws/iam.py into IAM
actions, infra/azure/roles.py into role assignments. Nothing here names a cloud's
action or role.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from shared import constants as c
from shared.constants import EVENT_SOURCE
from shared.identifiers import family_prefix, stage_name

if TYPE_CHECKING:
    from shared.specs import DatasetSpec

# "jobs" are the cloud services' own resources named by the stage's prefix (training
# jobs, model packages, serve functions, ...); "role" is a role the stack creates and a
# function hands to a managed job (iam:PassRole).
ResourceKind = Literal["bucket", "queue", "table", "bus", "jobs", "topic", "role"]
# What a function does to a resource: read (an object, a row, a job's state), read_version
# (an object's named version), list (ask whether a key is there: a miss is then "not
# found", not "denied"), write, delete, consume (receive and delete a queue's messages),
# publish (events on a bus, messages on a topic), pass (hand a role to a managed job),
# launch (start a managed job or rollout), create (a registry entry), update, stop, measure
# (put metrics). Each stack holds the one table that translates a (kind, verb).
Verb = Literal[
    "read",
    "read_version",
    "list",
    "write",
    "delete",
    "consume",
    "publish",
    "pass",
    "launch",
    "create",
    "update",
    "stop",
    "measure",
]
# Who emits the events a rule routes: object storage (an upload), the pipeline's own
# bus, the managed training or validation job's end, the serving rollout's platform.
RuleSource = Literal["storage", "pipeline", "training_job", "validation_job", "serving"]


@dataclass(frozen=True)
class Bucket:
    """An S3 bucket or a Blob container."""

    logical: str
    name: str
    # S3 sends its object-created events to EventBridge (Event Grid on Azure).
    emits_object_events: bool = False


@dataclass(frozen=True)
class Queue:
    """An SQS queue (Storage queue) with its dead-letter (poison) queue."""

    logical: str
    name: str
    dlq_name: str
    max_receive_count: int = 3
    # AWS asks for at least six times the consumer's timeout, so a message is
    # not handed to a second consumer while the first is still working on it.
    visibility_timeout_s: int = 360
    retention_s: int = 4 * 24 * 3600
    dlq_retention_s: int = 14 * 24 * 3600


@dataclass(frozen=True)
class Table:
    """A DynamoDB table (Azure Table) keyed by partition ``pk`` and sort ``sk``."""

    logical: str
    name: str


@dataclass(frozen=True)
class EventRule:
    """Routes events matching ``pattern`` from a bus to a queue.

    ``bus`` is ``default`` for AWS service events (S3) or the pipeline bus's
    logical name. On Azure the storage rule becomes an Event Grid subscription.
    """

    logical: str
    name: str
    bus: str
    pattern: dict[str, object]
    target_queue: str
    # What emits the events: each stack subscribes by it (Azure: Event Grid on storage,
    # the pipeline topic, the ML workspace's run events; no rollout events).
    source: RuleSource = "pipeline"


_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_MINUTES = {"minute": 1, "hour": 60, "day": 24 * 60}


def rate_minutes(expression: str) -> int | None:
    """Minutes between runs of a ``rate(...)`` expression; None for any other kind."""
    m = _RATE.match(expression.strip())
    if m is None:
        return None
    return int(m.group(1)) * _MINUTES[m.group(2).rstrip("s")]


@dataclass(frozen=True)
class Schedule:
    """A recurring message to a function's queue (EventBridge Scheduler; an Azure timer
    trigger), one per dataset spec: ``<name>-<dataset>``, at the expression the spec's
    ``expression_from`` setting names (``drift.schedule``), with ``{"dataset": ...}``
    as the message body."""

    logical: str
    name: str
    expression_from: str
    target_queue: str

    def name_for(self, dataset: str) -> str:
        return f"{self.name}-{dataset}"

    def expression_for(self, spec: DatasetSpec) -> str:
        """The spec's own schedule expression (``expression_from``, e.g. ``drift.schedule``)."""
        section, _, key = self.expression_from.partition(".")
        return str(getattr(getattr(spec, section), key))


@dataclass(frozen=True)
class Topic:
    """An SNS topic (an Azure Monitor action group) that people subscribe to."""

    logical: str
    name: str


@dataclass(frozen=True)
class Permission:
    """What a function may do (``verbs``) to one resource of the topology."""

    verbs: tuple[Verb, ...]
    resource: str  # logical name
    kind: ResourceKind


@dataclass(frozen=True)
class Function:
    """A function with its entry point per cloud, its trigger queue and its permissions.

    A function without a trigger queue is called over HTTP (the serve function: one
    per dataset spec behind an API Gateway HTTP API with IAM auth, on AWS
    ``dhow-<stage>--serve-<dataset>``: codedeploy.serve_function_name of the stage's
    ``family_head``, which IAM and the deployment rules match by prefix).
    """

    logical: str
    name: str
    # The entry point per cloud, declared: the Lambda handler and the Azure Functions
    # ``main`` that functions/function_app.py binds.
    aws_handler: str
    azure_handler: str
    trigger_queue: str | None
    permissions: tuple[Permission, ...]
    memory_mb: int = 512
    timeout_s: int = 60
    batch_size: int = 10
    reserved_concurrency: int | None = None
    # Lambda's /tmp (512 MB unless set): a function that puts files on disk says how much.
    ephemeral_storage_mb: int = 512
    # "zip" fits Lambda's 250 MB; "image" is a container image (up to 10 GB), for
    # functions whose libraries do not fit (the drift check's evidently).
    package: Literal["zip", "image"] = "zip"
    # The pipeline event types (shared/events.py, the bus's detail-type) its service
    # publishes: its PutEvents is allowed for exactly these, so drift-check cannot send a
    # ModelApproved (tests/infra/test_iam_events.py derives them from the services' code).
    publishes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Topology:
    stage: str
    buckets: tuple[Bucket, ...]
    queues: tuple[Queue, ...]
    tables: tuple[Table, ...]
    bus_name: str
    rules: tuple[EventRule, ...]
    schedules: tuple[Schedule, ...]
    functions: tuple[Function, ...]
    topics: tuple[Topic, ...] = ()
    extra: dict[str, str] = field(default_factory=dict)

    def bucket(self, logical: str) -> Bucket:
        return _find(self.buckets, logical)

    def queue(self, logical: str) -> Queue:
        return _find(self.queues, logical)

    def table(self, logical: str) -> Table:
        return _find(self.tables, logical)

    def function(self, logical: str) -> Function:
        return _find(self.functions, logical)

    def topic(self, logical: str) -> Topic:
        return _find(self.topics, logical)

    def schedule(self, logical: str) -> Schedule:
        return _find(self.schedules, logical)

    def rule(self, logical: str) -> EventRule:
        return _find(self.rules, logical)


def _find[T: (Bucket, Queue, Table, Function, Topic, Schedule, EventRule)](
    items: tuple[T, ...], logical: str
) -> T:
    for item in items:
        if item.logical == logical:
            return item
    raise KeyError(f"no {logical!r} in the topology")


# The raw bucket's prefix under which uploads start the pipeline.
DATASETS_PREFIX = "datasets/"

# Validate puts on /tmp the staged file (up to the inline limit) and the curated Parquet
# written beside it, which for typed data of text origin is at most as large again; the
# headroom holds the reference sample, the profile and pyarrow's spill.
VALIDATE_TMP_HEADROOM_MB = 1024
# The slowest rate at which ingest may stream an upload to hash it (a single GET from
# Lambda in the region streams several times faster): what its timeout is sized for.
INGEST_MIN_STREAM_BYTES_PER_S = 10 * 1024**2


def validate_tmp_mb(inline_max_bytes: int) -> int:
    """The /tmp that validate needs to validate a file of ``inline_max_bytes`` inline."""
    return -(-2 * inline_max_bytes // 1024**2) + VALIDATE_TMP_HEADROOM_MB


def ingest_timeout_s(max_upload_bytes: int) -> int:
    """The timeout ingest needs to stream (and hash) the largest upload it accepts."""
    return -(-max_upload_bytes // INGEST_MIN_STREAM_BYTES_PER_S)


# Azure Functions' queue trigger retries a failed message after host.json's
# extensions.queues.visibilityTimeout and poisons it after maxDequeueCount deliveries: one
# value each for the whole app, where SQS has one per queue (test_topology reads host.json).
AZURE_QUEUE_RETRY_S = 30
AZURE_MAX_DEQUEUE_COUNT = 3


@dataclass(frozen=True)
class Redelivery:
    """How a function's queue hands back a message its function failed on."""

    # The least time from a failed delivery's last claim write to the next delivery.
    gap_s: int
    # Deliveries in all before the message goes to the DLQ (poison queue).
    deliveries: int


def _sqs_redelivery(queue: Queue, fn: Function) -> Redelivery:
    """SQS hides a received message for the queue's visibility timeout, counted from the
    receive (fact aws.sqs.redelivery_after_visibility_timeout); the function writes its
    claim at most its timeout after that, so the next delivery finds the claim at least
    visibility - timeout old."""
    return Redelivery(
        gap_s=queue.visibility_timeout_s - fn.timeout_s, deliveries=queue.max_receive_count
    )


def _azure_queue_redelivery(queue: Queue, fn: Function) -> Redelivery:
    """Azure's queue trigger makes a failed message visible again visibilityTimeout after
    the failure (fact azure.functions.queue_retry_schedule), whatever the queue's own
    settings say: the host's, set by the stack's host.json."""
    return Redelivery(gap_s=AZURE_QUEUE_RETRY_S, deliveries=AZURE_MAX_DEQUEUE_COUNT)


# Each cloud's retry schedule, keyed by cloud name: the one place it is chosen by cloud
# (the functions' claim windows and infra's queue settings both read it from here).
REDELIVERY_SCHEDULES: dict[str, Callable[[Queue, Function], Redelivery]] = {
    "aws": _sqs_redelivery,
    "azure": _azure_queue_redelivery,
}


def redelivery(topology: Topology, function: str, cloud: Literal["aws", "azure"]) -> Redelivery:
    """The retry schedule of ``function``'s trigger queue on ``cloud``
    (``REDELIVERY_SCHEDULES``)."""
    fn = topology.function(function)
    if fn.trigger_queue is None:
        raise KeyError(f"{function} has no trigger queue")
    return REDELIVERY_SCHEDULES[cloud](topology.queue(fn.trigger_queue), fn)


def claim_window_s(topology: Topology, function: str, cloud: Literal["aws", "azure"]) -> int:
    """How long ``function``'s unfinished claim holds off another delivery.

    Two thirds of the redelivery gap: a crashed holder's claim is stale by the next
    delivery, which takes it over (so the row never sits ``claimed`` while its message
    goes to the DLQ), with a third to spare for clock skew between instances. Work that
    can outlast it renews the claim every third of it (shared.services.claims.renewing).
    """
    return max(1, redelivery(topology, function, cloud).gap_s * 2 // 3)


def processing_job_prefix(stage: str) -> str:
    """Every validation job of a stage is named ``<this><dataset>-...``: its IAM scope and
    the rule that routes its end back to validate both match on it, so it starts with the
    stage's ``family_prefix`` (``dhow-acme-validate-`` was also stage acme-validate's)."""
    return f"{family_prefix(stage)}validate-"


def build_topology(stage: str) -> Topology:
    """The stack for one stage. Pure: the same stage always gives the same topology."""

    def n(*parts: str) -> str:
        return stage_name(stage, *parts)

    # The start of the names the rules below match by prefix: one stage's alone.
    fp = family_prefix(stage)
    # Every function but serve reads and appends lineage rows.
    lineage_rw = Permission(("read", "write"), "lineage", "table")
    # Training, processing and endpoint models run as the stack's job role.
    pass_role = Permission(("pass",), "sagemaker_execution", "role")
    return Topology(
        stage=stage,
        buckets=(
            Bucket("raw", n("raw"), emits_object_events=True),
            Bucket("staging", n("staging")),
            Bucket("curated", n("curated")),
            Bucket("quarantine", n("quarantine")),
            Bucket("models", n("models")),
            # What the serve functions saw and answered, for the drift check.
            Bucket("capture", n("capture")),
            # Drift checks' JSON summaries and HTML reports, for on-call to open.
            Bucket("reports", n("reports")),
        ),
        queues=(
            # Ingest may stream a 5 GiB upload: six times its 15-minute timeout.
            Queue("ingest", n("ingest"), n("ingest-dlq"), visibility_timeout_s=6 * 900),
            # Validation of up to the inline limit takes minutes, not seconds.
            Queue("validate", n("validate"), n("validate-dlq"), visibility_timeout_s=6 * 900),
            # Every pipeline event, for `dhow upload --wait` and for audit.
            Queue("train", n("train"), n("train-dlq")),
            Queue("register", n("register"), n("register-dlq"), visibility_timeout_s=6 * 300),
            # An approval that arrives during a rollout waits for it (the deployer refuses,
            # the message comes back): ten receives cover the longest canary.
            Queue(
                "deploy",
                n("deploy"),
                n("deploy-dlq"),
                max_receive_count=10,
                visibility_timeout_s=6 * 180,
            ),
            # One message per scheduled (or requested) drift check of a dataset.
            Queue("drift", n("drift"), n("drift-dlq"), visibility_timeout_s=6 * 900),
            # Watchers hand back events that are not theirs, which counts as a
            # receive; the high count keeps those from reaching the DLQ.
            Queue(
                "events",
                n("events"),
                n("events-dlq"),
                max_receive_count=100,
                visibility_timeout_s=30,
                retention_s=24 * 3600,
            ),
        ),
        tables=(Table("lineage", n("lineage")),),
        bus_name=n("pipeline"),
        rules=(
            EventRule(
                "raw_object_created",
                n("raw-object-created"),
                bus="default",
                pattern={
                    "source": ["aws.s3"],
                    "detail-type": ["Object Created"],
                    "detail": {
                        "bucket": {"name": [n("raw")]},
                        "object": {"key": [{"prefix": DATASETS_PREFIX}]},
                    },
                },
                target_queue="ingest",
                source="storage",
            ),
            EventRule(
                "dataset_ingested",
                n("dataset-ingested"),
                bus="pipeline",
                pattern={"source": [EVENT_SOURCE], "detail-type": ["DatasetIngested"]},
                target_queue="validate",
            ),
            EventRule(
                "dataset_validated",
                n("dataset-validated"),
                bus="pipeline",
                pattern={"source": [EVENT_SOURCE], "detail-type": ["DatasetValidated"]},
                target_queue="train",
            ),
            EventRule(
                "training_job_ended",
                n("training-job-ended"),
                bus="default",
                pattern={
                    "source": ["aws.sagemaker"],
                    "detail-type": [c.TRAINING_JOB_STATE_CHANGE],
                    "detail": {
                        "TrainingJobName": [{"prefix": fp}],
                        "TrainingJobStatus": ["Completed", "Failed", "Stopped"],
                    },
                },
                target_queue="register",
                source="training_job",
            ),
            # A managed validation job ended (SageMaker's own event on the default bus):
            # validate reads its result, or answers the uploader when it failed.
            EventRule(
                "validation_job_ended",
                n("validation-job-ended"),
                bus="default",
                pattern={
                    "source": ["aws.sagemaker"],
                    "detail-type": [c.PROCESSING_JOB_STATE_CHANGE],
                    "detail": {
                        "ProcessingJobName": [{"prefix": processing_job_prefix(stage)}],
                        "ProcessingJobStatus": ["Completed", "Failed", "Stopped"],
                    },
                },
                target_queue="validate",
                source="validation_job",
            ),
            EventRule(
                "model_approved",
                n("model-approved"),
                bus="pipeline",
                pattern={"source": [EVENT_SOURCE], "detail-type": ["ModelApproved"]},
                target_queue="deploy",
            ),
            EventRule(
                "serving_deployment_ended",
                n("serving-deployment-ended"),
                bus="default",
                pattern={
                    "source": ["aws.codedeploy"],
                    "detail-type": [c.CODEDEPLOY_STATE_CHANGE],
                    "detail": {
                        "deploymentGroup": [{"prefix": f"{fp}serve-"}],
                        "state": ["SUCCESS", "FAILURE", "STOP"],
                    },
                },
                target_queue="deploy",
                source="serving",
            ),
            EventRule(
                "serving_endpoint_changed",
                n("serving-endpoint-changed"),
                bus="default",
                pattern={
                    "source": ["aws.sagemaker"],
                    "detail-type": [c.ENDPOINT_STATE_CHANGE],
                    "detail": {
                        "EndpointName": [{"prefix": f"{fp}serve-"}],
                        "EndpointStatus": ["IN_SERVICE", "FAILED"],
                    },
                },
                target_queue="deploy",
                source="serving",
            ),
            # A drift policy's action is carried out by the function that owns it.
            EventRule(
                "drift_retrain",
                n("drift-retrain"),
                bus="pipeline",
                pattern={
                    "source": [EVENT_SOURCE],
                    "detail-type": ["DriftDetected"],
                    "detail": {"action": ["retrain"]},
                },
                target_queue="train",
            ),
            EventRule(
                "drift_rollback",
                n("drift-rollback"),
                bus="pipeline",
                pattern={
                    "source": [EVENT_SOURCE],
                    "detail-type": ["DriftDetected"],
                    "detail": {"action": ["rollback"]},
                },
                target_queue="deploy",
            ),
            EventRule(
                "all_pipeline_events",
                n("all-pipeline-events"),
                bus="pipeline",
                pattern={"source": [EVENT_SOURCE]},
                target_queue="events",
            ),
        ),
        schedules=(
            Schedule("drift_check", n("drift"), "drift.schedule", target_queue="drift"),
            # On the same tick, validate asks the platform about every job still handed
            # off, for the end events that never came (ValidateService.sweep).
            Schedule(
                "validate_sweep", n("validate-sweep"), "drift.schedule", target_queue="validate"
            ),
        ),
        topics=(Topic("alerts", n("alerts")),),
        functions=(
            Function(
                "ingest",
                n("ingest"),
                aws_handler="functions.ingest.aws_lambda.handler",
                azure_handler="functions.ingest.azure_function.main",
                trigger_queue="ingest",
                permissions=(
                    # An upload deleted before ingest reads it is "missing", not AccessDenied.
                    # Its reads name the event's version (on HEAD, GET and the copy's
                    # source): a read of a version, which a cloud may authorize apart.
                    Permission(("read", "read_version", "list"), "raw", "bucket"),
                    # A copy reads the source and writes the target; list, so that "not
                    # staged yet" is a 404.
                    Permission(("read", "write", "list"), "staging", "bucket"),
                    lineage_rw,
                    Permission(("publish",), "pipeline", "bus"),
                    Permission(("consume",), "ingest", "queue"),
                ),
                # Hashing is one core's work: 1,769 MB is where Lambda gives a full vCPU.
                # Sized for the largest upload it accepts (DHOW_MAX_UPLOAD_BYTES, 5 GiB)
                # when the upload carries no full-object SHA-256 to trust.
                memory_mb=1769,
                timeout_s=900,
                # One upload per call: the timeout covers streaming one object of the
                # largest size, and a timed-out call returns its whole batch to the queue.
                batch_size=1,
                publishes=("DatasetIngested", "DatasetRejected"),
            ),
            Function(
                "validate",
                n("validate"),
                aws_handler="functions.validate.aws_lambda.handler",
                azure_handler="functions.validate.azure_function.main",
                trigger_queue="validate",
                permissions=(
                    # Download, delete once quarantined, and read a managed job's result,
                    # which may not be there (ListBucket: a 404, not a 403).
                    Permission(("read", "delete", "list"), "staging", "bucket"),
                    Permission(("write",), "curated", "bucket"),
                    Permission(("write",), "quarantine", "bucket"),
                    # The spec each accepted version was validated by, pinned beside the
                    # models for the later stages (shared.specs.SpecCatalog).
                    Permission(("write",), "models", "bucket"),
                    lineage_rw,
                    Permission(("publish",), "pipeline", "bus"),
                    Permission(("consume",), "validate", "queue"),
                    # The sweep reads a job whose end event never came and stops one that
                    # runs past its bound (ValidateService.sweep).
                    Permission(("launch", "read", "stop"), "processing_jobs", "jobs"),
                    pass_role,
                ),
                # Chunks of 100k rows keep the working set near 1 GB; /tmp holds the file
                # and its curated copy up to the inline limit (DHOW_VALIDATE_INLINE_MAX_BYTES).
                memory_mb=3008,
                timeout_s=900,
                batch_size=1,
                ephemeral_storage_mb=validate_tmp_mb(c.DEFAULT_VALIDATE_INLINE_MAX_BYTES),
                publishes=("DatasetRejected", "DatasetValidated"),
            ),
            Function(
                "train_launch",
                n("train-launch"),
                aws_handler="functions.train_launch.aws_lambda.handler",
                azure_handler="functions.train_launch.azure_function.main",
                trigger_queue="train",
                permissions=(
                    Permission(("launch", "read"), "training_jobs", "jobs"),
                    # The GPU quota, read before a job is asked for.
                    Permission(("read",), "service_quotas", "jobs"),
                    pass_role,
                    # list: a spec version validate never pinned must read as missing (404),
                    # not as denied (fact aws.s3.missing_key_status_without_list_bucket).
                    Permission(("read", "list", "write"), "models", "bucket"),
                    lineage_rw,
                    Permission(("publish",), "pipeline", "bus"),
                    Permission(("consume",), "train", "queue"),
                ),
                timeout_s=60,
                batch_size=1,
                publishes=("TrainingCompleted", "TrainingLaunched"),
            ),
            Function(
                "register",
                n("register"),
                aws_handler="functions.register.aws_lambda.handler",
                azure_handler="functions.register.azure_function.main",
                trigger_queue="register",
                permissions=(
                    # list: as train-launch's, for the pinned spec of the job's version.
                    Permission(("read", "list"), "models", "bucket"),
                    Permission(("create", "read", "update"), "model_registry", "jobs"),
                    lineage_rw,
                    Permission(("publish",), "pipeline", "bus"),
                    Permission(("consume",), "register", "queue"),
                ),
                memory_mb=2048,
                timeout_s=300,
                batch_size=1,
                # pyarrow + scikit-learn + scipy + xgboost are over the 250 MB zip limit.
                package="image",
                publishes=("ModelApproved", "ModelRejected", "TrainingCompleted"),
            ),
            Function(
                "deploy",
                n("deploy"),
                aws_handler="functions.deploy.aws_lambda.handler",
                azure_handler="functions.deploy.azure_function.main",
                trigger_queue="deploy",
                permissions=(
                    # A new version of a serve function, its alias moved step by step.
                    Permission(("read", "update"), "serve_functions", "jobs"),
                    # The rollout itself: started, followed, stopped on rollback.
                    Permission(("launch", "read", "stop"), "serving_deployments", "jobs"),
                    # Points the canary's alarms at the version being deployed.
                    Permission(("read", "update"), "serve_alarms", "jobs"),
                    Permission(("launch", "read", "update"), "serving_endpoints", "jobs"),
                    pass_role,
                    Permission(("read", "update"), "model_registry", "jobs"),
                    lineage_rw,
                    Permission(("publish",), "pipeline", "bus"),
                    Permission(("consume",), "deploy", "queue"),
                ),
                timeout_s=180,
                batch_size=1,
                publishes=("DeploymentCompleted", "DeploymentRolledBack", "DeploymentStarted"),
            ),
            Function(
                "serve",
                n("serve"),
                aws_handler="functions.serve.aws_lambda.handler",
                azure_handler="functions.serve.azure_function.main",
                trigger_queue=None,
                permissions=(
                    Permission(("read",), "models", "bucket"),
                    Permission(("write",), "capture", "bucket"),
                    Permission(("read",), "model_registry", "jobs"),
                ),
                # One model in memory, pandas and XGBoost: a warm p99 well under a second.
                memory_mb=1024,
                timeout_s=30,
            ),
            Function(
                "drift_check",
                n("drift-check"),
                aws_handler="functions.drift_check.aws_lambda.handler",
                azure_handler="functions.drift_check.azure_function.main",
                trigger_queue="drift",
                permissions=(
                    Permission(("read", "list"), "capture", "bucket"),
                    Permission(("read",), "curated", "bucket"),
                    Permission(("write",), "reports", "bucket"),
                    Permission(("read",), "model_registry", "jobs"),
                    Permission(("measure",), "drift_metrics", "jobs"),
                    Permission(("publish",), "alerts", "topic"),
                    lineage_rw,
                    Permission(("publish",), "pipeline", "bus"),
                    Permission(("consume",), "drift", "queue"),
                ),
                # A day of captures (a million rows) and the reference fit in 3 GB;
                # evidently (the HTML report) is why this one is a container image.
                memory_mb=3008,
                timeout_s=900,
                batch_size=1,
                package="image",
                publishes=("DriftChecked", "DriftDetected"),
            ),
        ),
    )
