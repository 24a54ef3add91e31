"""Managed validation jobs whose end event never comes back (issue 16, item 2).

A file over the inline limit is handed to a SageMaker Processing job (an Azure ML job),
and the row waits ``handed_off`` for the job's end event. When that event is lost (a
rule disabled, delivery given up, a job stuck running), nothing else used to look: the
row stayed ``handed_off``, which counts as done, and the uploader never heard. The
``validate_sweep`` schedule (an Azure timer) now sends validate a sweep request per
dataset; validate asks the platform for the job's state and settles the row.

Each test drives validate's own entry point (``functions.validate.core.handle``) with
the bodies its queue receives: the sweep request as the schedule sends it and the late
end event as SageMaker sends it (tests/events). SageMaker is reached through the real
adapter and botocore's Stubber, so every DescribeProcessingJob and StopProcessingJob
request and answer is checked against botocore's service model; Azure ML through the
real adapter with the SDK's own job entity.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar, Literal

import pytest
from botocore.stub import Stubber

from shared.adapters.aws import ProcessingJobConfig, SageMakerValidationJobs, aws_client
from shared.cloud_facts import fact, value
from shared.events import DatasetIngested, DatasetRejected, DatasetValidated, ObjectRef
from shared.ports import ValidationJobLauncher
from shared.services import claims
from shared.services.validate import (
    JOB_START_MARGIN,
    LOST_END_GRACE,
    ValidateService,
    validate_record_id,
)
from shared.settings import Settings
from shared.topology import build_topology
from tests.faults.ledger import Ledger
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore, load_event

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = (ROOT / "localstack/samples/customers.csv").read_bytes()
TOPO = build_topology("t1")
MAX_RUNTIME_S = 3600
Cloud = Literal["aws", "azure"]


class Clock:
    """The clock claims and the sweep read, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(claims, "utcnow", c)
    return c


# --- the platforms, as the adapters reach them ---------------------------------------------


class SageMakerPlatform:
    """SageMakerValidationJobs on a botocore client whose answers are stubbed: each
    request is checked against botocore's SageMaker model as it is made."""

    def __init__(self) -> None:
        self.client = aws_client("sagemaker", Settings())
        self.stub = Stubber(self.client)
        self.stub.activate()
        self.jobs = SageMakerValidationJobs(
            self.client,
            ProcessingJobConfig(
                image_uri="123456789012.dkr.ecr.me-central-1.amazonaws.com/dhow-jobs:1",
                role_arn="arn:aws:iam::123456789012:role/dhow-t1-processing",
                name_prefix="dhow-t1",
                max_runtime_s=MAX_RUNTIME_S,
            ),
        )
        self.stops = 0

    def launched(self) -> None:
        self.stub.add_response("create_processing_job", {"ProcessingJobArn": "arn:x"})

    def now_is(self, job: str, status: str, reason: str | None = None) -> None:
        answer: dict[str, Any] = {
            "ProcessingJobName": job,
            "ProcessingJobArn": f"arn:aws:sagemaker:me-central-1:123456789012:processing-job/{job}",
            "ProcessingJobStatus": status,
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceCount": 1,
                    "InstanceType": "ml.m5.4xlarge",
                    "VolumeSizeInGB": 100,
                }
            },
            "AppSpecification": {"ImageUri": "x"},
            "CreationTime": datetime(2026, 11, 22, tzinfo=UTC),
        }
        if reason:
            answer["FailureReason"] = reason
        self.stub.add_response("describe_processing_job", answer, {"ProcessingJobName": job})

    def will_stop(self, job: str) -> None:
        self.stub.add_response("stop_processing_job", {}, {"ProcessingJobName": job})
        self.stops += 1

    def done(self) -> None:
        self.stub.assert_no_pending_responses()
        self.stub.deactivate()


class AzureMLPlatform:
    """AzureMLValidationJobs on an ``MLClient.jobs`` whose ``get`` answers the SDK's own
    Job entity, built from the REST body ARM would return, in the status the test sets."""

    def __init__(self) -> None:
        from azure.ai.ml._restclient.arm_ml_service.models import JobBase
        from azure.ai.ml.entities import Job
        from azure.ai.ml.entities._job.to_rest_functions import to_rest_job_object
        from azure.core.exceptions import ResourceNotFoundError

        from shared.adapters.azure_ml import AzureMLJobConfig, AzureMLValidationJobs

        platform = self

        class Jobs:
            def get(self, name: str) -> Any:
                if name not in platform.bodies:
                    raise ResourceNotFoundError(f"job {name} not found")
                return Job._from_rest_object(JobBase(platform.bodies[name]))

            def create_or_update(self, job: Any) -> Any:
                body = to_rest_job_object(job).as_dict()
                body["id"] = f"/subscriptions/s/resourceGroups/g/providers/x/jobs/{job.name}"
                body["properties"]["status"] = "Queued"
                platform.bodies[job.name] = body
                return job

            def begin_cancel(self, name: str, **kwargs: Any) -> Any:
                platform.cancels.append((name, kwargs))

        self.bodies: dict[str, dict[str, Any]] = {}
        self.cancels: list[tuple[str, dict[str, Any]]] = []
        self.jobs = AzureMLValidationJobs(
            Jobs(),
            AzureMLJobConfig(
                compute="dhow-t1-cpu",
                environment="azureml:dhow-validate:1",
                staging_datastore="staging",
                stage="t1",
                code="/tmp/dhow-azureml-code-x",
                max_runtime_s=MAX_RUNTIME_S,
            ),
        )
        self.stops = 0

    def launched(self) -> None:
        pass

    _STATUS: ClassVar[dict[str, str]] = {
        "Completed": "Completed",
        "Failed": "Failed",
        "InProgress": "Running",
    }

    def now_is(self, job: str, status: str, reason: str | None = None) -> None:
        self.bodies[job]["properties"]["status"] = self._STATUS[status]

    def will_stop(self, job: str) -> None:
        self.stops += 1

    def done(self) -> None:
        assert len(self.cancels) == self.stops
        assert all(kwargs == {"polling": False} for _, kwargs in self.cancels)


Platform = SageMakerPlatform | AzureMLPlatform


@pytest.fixture(params=["aws", "azure"])
def cloud(request: pytest.FixtureRequest) -> Cloud:
    c: Cloud = request.param
    return c


@pytest.fixture
def platform(cloud: Cloud) -> Iterator[Platform]:
    p: Platform = SageMakerPlatform() if cloud == "aws" else AzureMLPlatform()
    yield p
    p.done()


# --- validate's entry point, with the service on in-memory storage -------------------------


class World:
    def __init__(self, jobs: ValidationJobLauncher, cloud: Cloud, core: ModuleType) -> None:
        self.store, self.bus, self.lineage = MemoryStore(), MemoryBus(), MemoryLineage()
        self.cloud = cloud
        self.core = core
        sha = "ab12" * 16
        staged = ObjectRef(
            container=TOPO.bucket("staging").name,
            key=f"datasets/customers/sha256={sha}/data.csv",
        )
        self.store.put_bytes(staged, SAMPLE)
        self.event = DatasetIngested(
            dataset="customers",
            correlation_id="u-9",
            sha256=sha,
            size_bytes=len(SAMPLE),
            format="csv",
            source=ObjectRef(container=TOPO.bucket("raw").name, key="datasets/customers/x.csv"),
            staged=staged,
        )
        self.service = ValidateService(
            self.store,
            self.bus,
            self.lineage,
            curated_container=TOPO.bucket("curated").name,
            quarantine_container=TOPO.bucket("quarantine").name,
            inline_max_bytes=1000,  # the sample is handed to the managed job
            jobs=jobs,
        )
        self.sweeps_sent = 0

    def hand_off(self) -> str:
        outcome = self.service.handle(self.event)
        assert outcome.status == "handed_off"
        return str(outcome.job_name)

    def run_job(self, tmp_path: Path) -> None:
        """The job as the platform runs it: it validates and leaves its result, storage only."""
        from shared.jobs.validate import run

        folder = tmp_path / "staged"
        folder.mkdir()
        (folder / "data.csv").write_bytes(SAMPLE)
        run(
            self.store,
            Settings(stage="t1"),
            dataset="customers",
            sha256=self.event.sha256,
            staged=self.event.staged,
            given=folder,
        )

    def sweep_bodies(self, at: datetime) -> list[str]:
        """What reaches the validate queue on a sweep tick: on AWS the validate_sweep
        schedule's input with the run's time written in (as infra/aws/monitoring.py sets it
        for every schedule), on Azure what the sweep timer sends."""
        if self.cloud == "aws":
            placeholder = value("aws.scheduler.scheduled_time_attribute")
            sent = json.dumps({"dataset": "customers", "period": placeholder})
            return [sent.replace(placeholder, at.strftime("%Y-%m-%dT%H:%M:%SZ"))]
        return [b for b in self.core.sweep_requests() if json.loads(b)["dataset"] == "customers"]

    def tick(self, at: datetime) -> None:
        for body in self.sweep_bodies(at):
            self.sweeps_sent += 1
            self.core.handle(body)

    def late_end(self, job: str, status: str, reason: str | None = None) -> None:
        """The job's end event arriving after all, as the platform sends it."""
        if self.cloud == "aws":
            ended = copy.deepcopy(load_event("sagemaker_processing_job_state_change.json"))
            d = ended["detail"]
            d["ProcessingJobName"] = job
            d["ProcessingJobStatus"] = status
            d["FailureReason"] = reason or ""
            d["ProcessingInputs"][0]["S3Input"]["S3Uri"] = (
                f"s3://{self.event.staged.container}/{self.event.staged.key}"
            )
        else:
            ended = copy.deepcopy(load_event("azureml_validation_run_status_changed.json"))
            ended["data"]["runId"] = job
            ended["data"]["runStatus"] = "Canceled" if status == "Stopped" else status
            ended["data"]["runTags"]["dhow:staged"] = self.event.staged.uri
        self.core.handle(json.dumps(ended))

    def announced(self) -> tuple[list[DatasetValidated], list[DatasetRejected]]:
        ok = [e for e in self.bus.events if isinstance(e, DatasetValidated)]
        no = [e for e in self.bus.events if isinstance(e, DatasetRejected)]
        return ok, no

    def row_status(self) -> str | None:
        row = self.lineage.get("customers", validate_record_id(self.event.sha256))
        return row.status if row else None


@pytest.fixture
def world(
    platform: Platform, cloud: Cloud, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> World:
    import functions.validate.core as core

    w = World(platform.jobs, cloud, core)
    monkeypatch.setattr(core, "SERVICE", w.service)
    return w


def _ticks(world: World, clock: Clock, every: timedelta, until: timedelta) -> int:
    """Sweep ticks every ``every`` for ``until``; returns how many were sent."""
    start, sent = clock.now, 0
    while clock.now - start < until:
        clock.advance(every)
        world.tick(clock.now)
        sent += 1
    return sent


# --- the scenarios ---------------------------------------------------------------------------


def test_a_completed_job_whose_end_event_was_lost_is_announced_once(
    world: World, platform: Platform, clock: Clock, ledger: Ledger, tmp_path: Path
) -> None:
    platform.launched()
    job = world.hand_off()
    world.run_job(tmp_path)
    ledger.fault(f"validate:{world.cloud}:job-end-event", "lost: never delivered")
    # Within the grace the sweep leaves the row to the end event (no platform read).
    clock.advance(LOST_END_GRACE / 2)
    world.tick(clock.now)
    assert world.row_status() == "handed_off"
    clock.advance(LOST_END_GRACE)
    platform.now_is(job, "Completed")
    world.tick(clock.now)
    # The end event was only late: it arrives, and the next tick finds nothing to do.
    world.late_end(job, "Completed")
    clock.advance(timedelta(hours=1))
    world.tick(clock.now)

    validated, rejected = world.announced()
    ledger.action(
        f"validate {world.cloud} lost end of a Completed job: DatasetValidated", len(validated)
    )
    ledger.delivered(
        f"validate {world.cloud}: the dataset handed to a job whose end was lost",
        1,
        int(world.row_status() == "validated"),
    )
    assert len(validated) == 1
    assert rejected == []
    assert (validated[0].rows, validated[0].correlation_id) == (400, "u-9")
    assert world.row_status() == "validated"


def test_a_failed_job_whose_end_event_was_lost_is_answered_with_its_reason(
    world: World, platform: Platform, clock: Clock, ledger: Ledger
) -> None:
    platform.launched()
    job = world.hand_off()
    ledger.fault(f"validate:{world.cloud}:job", "fails on the platform")
    ledger.fault(f"validate:{world.cloud}:job-end-event", "lost: never delivered")
    clock.advance(LOST_END_GRACE + timedelta(minutes=1))
    platform.now_is(job, "Failed", "AlgorithmError: MemoryError")
    world.tick(clock.now)
    world.late_end(job, "Failed", "AlgorithmError: MemoryError")

    validated, rejected = world.announced()
    ledger.action(
        f"validate {world.cloud} lost end of a Failed job: DatasetRejected", len(rejected)
    )
    ledger.delivered(
        f"validate {world.cloud}: the dataset whose failed job's end was lost",
        1,
        int(world.row_status() == "failed"),
    )
    assert validated == []
    [out] = rejected
    assert (out.reason, out.correlation_id) == ("validation_job_failed", "u-9")
    if world.cloud == "aws":  # SageMaker's FailureReason reaches the uploader
        assert "MemoryError" in out.message
    else:  # Azure ML's job entity carries its status; the reason names it
        assert "Failed" in out.message
    assert world.row_status() == "failed"
    assert (world.event.staged.container, world.event.staged.key) in world.store.objects


def test_a_job_stuck_running_is_stopped_at_its_bound_and_answered_once(
    world: World, platform: Platform, clock: Clock, ledger: Ledger
) -> None:
    fact("aws.sagemaker.processing_job_status")  # MaxRuntimeInSeconds stops a job itself
    fact("azure.ml.job_timeout")  # as limits.timeout does on Azure ML
    platform.launched()
    job = world.hand_off()
    ledger.fault(f"validate:{world.cloud}:job", "stuck InProgress past its stopping condition")
    bound = timedelta(seconds=MAX_RUNTIME_S) + JOB_START_MARGIN
    # Hourly ticks while the job runs within its bound: each reads it, none stops it.
    within = int((bound - LOST_END_GRACE) / timedelta(hours=1))
    clock.advance(LOST_END_GRACE)
    for _ in range(within):
        platform.now_is(job, "InProgress")
        clock.advance(timedelta(hours=1))
        world.tick(clock.now)
    assert world.announced() == ([], [])
    clock.advance(bound)  # well past it now
    platform.now_is(job, "InProgress")
    platform.will_stop(job)
    world.tick(clock.now)
    world.late_end(job, "Stopped")  # its end, once the platform has stopped it
    clock.advance(timedelta(hours=1))
    world.tick(clock.now)

    validated, rejected = world.announced()
    stopped = len(platform.cancels) if isinstance(platform, AzureMLPlatform) else platform.stops
    ledger.action(f"validate {world.cloud} stuck job: stopped", stopped)
    ledger.action(f"validate {world.cloud} stuck job: DatasetRejected", len(rejected))
    ledger.delivered(
        f"validate {world.cloud}: the dataset whose job was stuck",
        1,
        int(world.row_status() == "failed"),
    )
    assert stopped == 1
    assert validated == []
    [out] = rejected
    assert out.reason == "validation_job_stopped"
    assert f"stopping condition of {MAX_RUNTIME_S} s" in out.message


def test_sweep_requests_are_never_lost_to_an_unreadable_dataset(
    world: World, platform: Platform, clock: Clock, ledger: Ledger
) -> None:
    """A sweep for a dataset with nothing handed off, or none known at all, is a quiet
    no-op, not an error that would send every tick's message to the DLQ."""
    bodies: list[Callable[[], None]] = [
        lambda: world.tick(clock.now),
        lambda: world.core.handle(json.dumps({"dataset": "no-such-dataset"})),
    ]
    failures = 0
    for send in bodies:
        try:
            send()
        except Exception:  # counted: a failure would be a message on its way to the DLQ
            failures += 1
    ledger.delivered(
        f"validate {world.cloud}: sweep requests with nothing to sweep", 2, 2 - failures
    )
    assert failures == 0
    assert world.announced() == ([], [])


def test_the_same_bytes_uploaded_again_after_a_failed_job_are_validated_by_a_new_job(
    platform: Platform, cloud: Cloud, clock: Clock, ledger: Ledger, tmp_path: Path
) -> None:
    """ "Upload the file again to retry" is what the failure says; it used to be untrue:
    ingest saw the same bytes as a duplicate, and the job name (derived from the request)
    found the failed job again. Now the new upload is announced with an id of its own and
    validate starts attempt 2, a job of its own, while a redelivery of the first upload's
    event stays a duplicate."""
    from shared.triggers import ObjectCreated
    from shared.wiring import Ports, build_ingest_service

    store, bus, lineage = MemoryStore(), MemoryBus(), MemoryLineage()
    ingest = build_ingest_service(
        Settings(cloud=cloud, stage="t1"), Ports(store=store, bus=bus, lineage=lineage)
    )
    validate = ValidateService(
        store,
        bus,
        lineage,
        curated_container=TOPO.bucket("curated").name,
        quarantine_container=TOPO.bucket("quarantine").name,
        inline_max_bytes=1000,
        jobs=platform.jobs,
    )
    raw = ObjectRef(container=TOPO.bucket("raw").name, key="datasets/customers/big.csv")

    def upload() -> ObjectCreated:
        store.put_bytes(raw, SAMPLE)
        return ObjectCreated(container=raw.container, key=raw.key, source_event="test")

    def ingested() -> list[DatasetIngested]:
        return [e for e in bus.events if isinstance(e, DatasetIngested)]

    first = upload()
    assert ingest.handle(first).status == "ingested"
    platform.launched()
    [event] = ingested()
    job1 = str(validate.handle(event).job_name)
    ledger.fault(f"validate:{cloud}:job attempt 1", "fails on the platform")
    validate.finish_job(_ended(event, job1, "Failed", "InternalServerError: try again"))
    # The first upload's event is delivered again: still a duplicate, nothing relaunched.
    assert ingest.handle(first).status == "duplicate"
    assert len(ingested()) == 1

    again = upload()  # the uploader does what the answer said
    assert ingest.handle(again).status == "ingested"
    retry = ingested()[-1]
    assert retry.event_id != event.event_id
    platform.launched()
    outcome = validate.handle(retry)
    job2 = str(outcome.job_name)
    assert validate.handle(retry).status == "duplicate"  # redelivered: no third job
    _run_managed_job(store, retry, tmp_path)
    validate.finish_job(_ended(retry, job2, "Completed", None))

    rejected = [e for e in bus.events if isinstance(e, DatasetRejected)]
    validated = [e for e in bus.events if isinstance(e, DatasetValidated)]
    ledger.action(
        f"validate {cloud} retry after a failed job: jobs launched", len({job1, job2}) - 1
    )
    ledger.action(f"validate {cloud} retry after a failed job: DatasetValidated", len(validated))
    ledger.delivered(
        f"validate {cloud}: two uploads of bytes whose first job failed",
        2,
        len(rejected) + len(validated),
    )
    assert (outcome.status, job2) == ("handed_off", job1 + "-r2")
    assert [e.reason for e in rejected] == ["validation_job_failed"]
    assert len(validated) == 1
    assert validated[0].rows == 400


def _ended(event: DatasetIngested, job: str, status: str, reason: str | None) -> Any:
    from shared.ports import ValidationJobEnded

    return ValidationJobEnded.model_validate(
        {"job_name": job, "status": status, "staged": event.staged, "failure_reason": reason}
    )


def _run_managed_job(store: MemoryStore, event: DatasetIngested, tmp_path: Path) -> None:
    """The managed job running on the platform: it validates and leaves its result."""
    from shared.jobs.validate import run

    folder = tmp_path / "staged-retry"
    folder.mkdir()
    (folder / "data.csv").write_bytes(SAMPLE)
    run(
        store,
        Settings(stage="t1"),
        dataset=event.dataset,
        sha256=event.sha256,
        staged=event.staged,
        given=folder,
    )


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_bytes_rejected_for_their_data_are_not_announced_again_when_uploaded_again(
    cloud: Cloud, ledger: Ledger
) -> None:
    from shared.triggers import ObjectCreated
    from shared.wiring import Ports, build_ingest_service

    store, bus, lineage = MemoryStore(), MemoryBus(), MemoryLineage()
    ingest = build_ingest_service(
        Settings(cloud=cloud, stage="t1"), Ports(store=store, bus=bus, lineage=lineage)
    )
    validate = ValidateService(
        store,
        bus,
        lineage,
        curated_container=TOPO.bucket("curated").name,
        quarantine_container=TOPO.bucket("quarantine").name,
    )
    raw = ObjectRef(container=TOPO.bucket("raw").name, key="datasets/customers/bad.csv")
    bad = SAMPLE.decode().replace(",gold,", ",platinum,", 1).encode()
    answers = []
    for _ in range(2):
        store.put_bytes(raw, bad)
        answers.append(
            ingest.handle(ObjectCreated(container=raw.container, key=raw.key, source_event="t"))
        )
        for e in [e for e in bus.events if isinstance(e, DatasetIngested)][len(answers) - 1 :]:
            validate.handle(e)
    ingested = [e for e in bus.events if isinstance(e, DatasetIngested)]
    rejected = [e for e in bus.events if isinstance(e, DatasetRejected)]
    ledger.action(f"validate {cloud} bad data uploaded twice: DatasetRejected", len(rejected))
    assert [a.status for a in answers] == ["ingested", "duplicate"]
    assert len(ingested) == 1
    assert [e.reason for e in rejected] == ["schema_checks_failed"]


HOSTILE_SWEEPS = [
    # A name that is no dataset name, aimed at the store's query (Table storage's OData).
    {"dataset": "x' or PartitionKey ne '"},
    {"dataset": "../customers"},
    {"dataset": "c" * 5000},
    {"dataset": "customers", "job_name": "dhow-t1-validate-other"},  # extra: not a sweep
]


@pytest.mark.parametrize("body", HOSTILE_SWEEPS, ids=lambda b: str(b)[:40])
def test_a_hostile_sweep_request_is_refused_before_any_store_is_read(
    body: dict[str, Any], ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The validate queue admits only the stack's senders, but a sweep request is read as
    data all the same: a name that is not a dataset's never reaches a lineage query."""
    import functions.validate.core as core
    from shared.errors import DhowError

    class Untouchable:
        def sweep(self, dataset: str) -> list[Any]:
            raise AssertionError(f"swept {dataset!r}")

        def handle(self, event: Any) -> Any:
            raise AssertionError("read as a DatasetIngested")

        def finish_job(self, ended: Any) -> Any:
            raise AssertionError("read as a job's end")

    monkeypatch.setattr(core, "SERVICE", Untouchable())
    with pytest.raises(DhowError) as info:
        core.handle(json.dumps(body))
    ledger.answer(f"validate sweep request {json.dumps(body)[:60]}", info.value.reason)
    # Refused as unparseable: the message fails its delivery and ends in the DLQ.
    assert info.value.reason == "event_unparseable"


def test_pipeline_events_on_the_validate_queue_are_never_read_as_sweeps() -> None:
    from shared.triggers import is_validation_sweep_request

    for name in (
        "sagemaker_processing_job_state_change.json",
        "azureml_validation_run_status_changed.json",
    ):
        assert not is_validation_sweep_request(json.dumps(load_event(name)))
    envelope = {
        "version": "0",
        "detail-type": "DatasetIngested",
        "source": "dhow",
        "detail": {"dataset": "customers"},
    }
    assert not is_validation_sweep_request(json.dumps(envelope))
    assert is_validation_sweep_request('{"dataset": "customers"}')
