"""Exactly once under the real retry schedule: crashes at every step boundary of ingest and
validate, each followed by the redeliveries its queue really makes, at the times it makes
them (the clock the claims read is moved to each delivery's time).

A crash is an exception raised by a port (store, bus, lineage, job launcher) at the call
that follows the step boundary. On AWS a failed message comes back when its visibility
timeout runs out, counted from its receive; on Azure the queue trigger makes it visible
again ``visibilityTimeout`` after the failure (host.json). Either way it is delivered at
most ``maxReceiveCount`` / ``maxDequeueCount`` times before the DLQ / poison queue.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, cast

import pytest

from shared.cloud_facts import fact, value
from shared.errors import DhowError
from shared.events import DatasetIngested, DatasetRejected, DatasetValidated, ObjectRef
from shared.ports import (
    EventBus,
    LineageStore,
    ObjectStore,
    ValidationJobEnded,
    ValidationJobLauncher,
    ValidationJobRequest,
)
from shared.services import claims
from shared.services.validate import ValidateService, validate_record_id
from shared.settings import Settings
from shared.topology import (
    AZURE_MAX_DEQUEUE_COUNT,
    AZURE_QUEUE_RETRY_S,
    build_topology,
    claim_window_s,
)
from shared.triggers import ObjectCreated
from shared.wiring import Ports, build_ingest_service, build_validate_service
from tests.faults.ledger import Ledger
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = (ROOT / "localstack/samples/customers.csv").read_bytes()
BAD = SAMPLE.decode().replace(",gold,", ",platinum,", 1).encode()
TOPO = build_topology("t1")
Cloud = Literal["aws", "azure"]
CLOUDS: tuple[Cloud, ...] = ("aws", "azure")


class Crash(DhowError):
    """The injected crash."""

    reason = "injected_crash"


class Clock:
    """The clock the claims code reads, moved by the test to each delivery's real time."""

    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    c = Clock()
    monkeypatch.setattr(claims, "utcnow", c)
    return c


class Crashing:
    """A port whose ``method`` raises on its ``nth`` call (once), and works otherwise."""

    def __init__(self, port: object, method: str, nth: int = 1) -> None:
        self._port, self._method, self._left = port, method, nth
        self.crashed = False

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._port, name)
        if name != self._method:
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._left -= 1
            if self._left == 0:
                self.crashed = True
                raise Crash(f"crash at {self._method}")
            return attr(*args, **kwargs)

        return call


def host_json() -> dict[str, Any]:
    queues: dict[str, Any] = json.loads((ROOT / "functions/host.json").read_text())
    return dict(queues["extensions"]["queues"])


def deliver(handle: Callable[[], Any], clock: Clock, cloud: Cloud, function: str) -> list[str]:
    """Deliver one message the way ``function``'s queue does on ``cloud`` until a delivery
    succeeds or the queue gives up; returns what each delivery ended with."""
    fn = TOPO.function(function)
    assert fn.trigger_queue is not None
    queue = TOPO.queue(fn.trigger_queue)
    deliveries = queue.max_receive_count if cloud == "aws" else AZURE_MAX_DEQUEUE_COUNT
    seen: list[str] = []
    for _ in range(deliveries):
        received = clock.now
        if cloud == "aws":
            # The worst case for a takeover: the claim is written at the end of the
            # function's time, so the next receive finds it as young as it can be.
            clock.advance(fn.timeout_s - 1)
        try:
            seen.append(str(getattr(handle(), "status", "ok")))
            return seen
        except DhowError as exc:
            seen.append(exc.reason)
        if cloud == "aws":
            clock.now = received + timedelta(seconds=queue.visibility_timeout_s)
        else:
            clock.advance(AZURE_QUEUE_RETRY_S)
    seen.append("dead-lettered")
    return seen


# --- the schedule itself, as the clouds document it -------------------------------------


def test_the_schedule_the_windows_are_derived_from_is_the_deployed_one() -> None:
    # Azure: host.json is what the host reads; the topology's constants must say the same.
    queues = host_json()
    assert queues["maxDequeueCount"] == AZURE_MAX_DEQUEUE_COUNT
    h, m, s = (int(x) for x in queues["visibilityTimeout"].split(":"))
    assert h * 3600 + m * 60 + s == AZURE_QUEUE_RETRY_S
    retry = value("azure.functions.queue_retry_schedule")
    assert set(retry["host_json"]) == {"visibilityTimeout", "maxDequeueCount"}
    assert retry["measured_from"] == "failure"
    # AWS: the redrive counts receives, and visibility runs from the receive.
    sqs = value("aws.sqs.redelivery_after_visibility_timeout")
    assert sqs == {"measured_from": "receive", "dlq_after_receives": "maxReceiveCount"}
    assert value("aws.sqs.visibility_timeout_starts_at_receive") == sqs["measured_from"]
    assert fact("aws.sqs.redelivery_after_visibility_timeout").source.startswith(
        "https://docs.aws.amazon.com/lambda/"
    )


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize("function", ["ingest", "validate", "register", "deploy"])
def test_every_window_is_stale_by_the_next_delivery(function: str, cloud: Cloud) -> None:
    fn = TOPO.function(function)
    assert fn.trigger_queue is not None
    queue = TOPO.queue(fn.trigger_queue)
    window = claim_window_s(TOPO, function, cloud)
    if cloud == "aws":
        # Received at 0 and claimed at most at the function's timeout; back at visibility.
        assert value("aws.sqs.redelivery_after_visibility_timeout")["measured_from"] == "receive"
        youngest_at_next = queue.visibility_timeout_s - fn.timeout_s
    else:
        assert value("azure.functions.queue_retry_schedule")["measured_from"] == "failure"
        youngest_at_next = AZURE_QUEUE_RETRY_S
    assert window < youngest_at_next
    # Room for renewals (every third of the window) and for clock skew.
    assert window <= youngest_at_next * 2 // 3


# --- ingest -------------------------------------------------------------------------------

RAW = TOPO.bucket("raw").name


def ingest_setup() -> tuple[MemoryStore, MemoryBus, MemoryLineage, ObjectCreated]:
    store, bus, lineage = MemoryStore(), MemoryBus(), MemoryLineage()
    key = "datasets/customers/upload.csv"
    store.put_bytes(ObjectRef(container=RAW, key=key), SAMPLE)
    obj = ObjectCreated(container=RAW, key=key, size=len(SAMPLE), source_event="test")
    return store, bus, lineage, obj


INGEST_CRASHES = [
    # (boundary, port, method, nth call)
    ("at-claim", "lineage", "put_if_absent", 1),
    ("after-claim", "store", "exists", 1),
    ("during-copy", "store", "copy", 1),
    ("after-copy", "bus", "publish", 1),
    ("after-publish", "lineage", "replace", 1),
]


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize(("boundary", "port", "method", "nth"), INGEST_CRASHES)
def test_ingest_crash_at_each_boundary_completes_once(
    boundary: str, port: str, method: str, nth: int, cloud: Cloud, clock: Clock, ledger: Ledger
) -> None:
    store, bus, lineage, obj = ingest_setup()
    ports: dict[str, object] = {"store": store, "bus": bus, "lineage": lineage}
    crashing = Crashing(ports[port], method, nth)
    ports[port] = crashing
    svc = build_ingest_service(
        Settings(cloud=cloud, stage="t1"),
        Ports(
            store=cast(ObjectStore, ports["store"]),
            bus=cast(EventBus, ports["bus"]),
            lineage=cast(LineageStore, ports["lineage"]),
        ),
    )
    seen = deliver(lambda: svc.handle(obj), clock, cloud, "ingest")

    rows = [r for r in lineage.rows.values() if r.kind == "ingest"]
    ingested = [e for e in bus.events if e.event_type == "DatasetIngested"]
    ledger.fault(f"ingest:{boundary}:{cloud}", f"crash: {port}.{method} raises")
    ledger.action(
        f"ingest {cloud} {boundary}: DatasetIngested (distinct event ids)",
        len({e.event_id for e in ingested}),
    )
    ledger.action(f"ingest {cloud} {boundary}: staged copy", store.copies)
    ledger.delivered(
        f"ingest {cloud} {boundary}: one upload, {len(seen)} deliveries",
        1,
        sum(r.status == "ingested" for r in rows),
    )
    assert crashing.crashed
    assert seen[-1] == "ingested", seen
    assert [r.status for r in rows] == ["ingested"]
    assert store.copies == 1
    assert len({e.event_id for e in ingested}) == 1
    if boundary == "after-publish":
        # The event went out before the crash, and nothing can tell a redelivery so: it is
        # sent again with the same event id, which validate absorbs (its claim is done).
        assert len(ingested) == 2
        downstream = MemoryBus()
        validate = build_validate_service(
            Settings(cloud=cloud, stage="t1"), Ports(store, downstream, MemoryLineage())
        )
        statuses = [validate.handle(cast(DatasetIngested, e)).status for e in ingested]
        ledger.action(
            f"ingest {cloud} {boundary}: validation of the re-sent version",
            len([e for e in downstream.events if isinstance(e, DatasetValidated)]),
        )
        assert statuses == ["validated", "duplicate"]
    else:
        assert len(ingested) == 1


# --- validate -----------------------------------------------------------------------------


def validate_setup(
    data: bytes, cloud: Cloud = "aws", **crash: Any
) -> tuple[
    ValidateService, MemoryStore, MemoryBus, MemoryLineage, DatasetIngested, Crashing | None
]:
    store, bus, lineage = MemoryStore(), MemoryBus(), MemoryLineage()
    sha = f"{abs(hash(data)):064x}"[-64:]
    staged = ObjectRef(
        container=TOPO.bucket("staging").name, key=f"datasets/customers/sha256={sha}/data.csv"
    )
    store.put_bytes(staged, data)
    event = DatasetIngested(
        dataset="customers",
        correlation_id="u-1",
        sha256=sha,
        size_bytes=len(data),
        format="csv",
        source=ObjectRef(container=RAW, key="datasets/customers/f.csv"),
        staged=staged,
    )
    ports: dict[str, object] = {"store": store, "bus": bus, "lineage": lineage}
    crashing = None
    if crash:
        crashing = Crashing(ports[crash["port"]], crash["method"], crash["nth"])
        ports[crash["port"]] = crashing
    svc = build_validate_service(
        Settings(cloud=cloud, stage="t1"),
        Ports(
            store=cast(ObjectStore, ports["store"]),
            bus=cast(EventBus, ports["bus"]),
            lineage=cast(LineageStore, ports["lineage"]),
        ),
    )
    return svc, store, bus, lineage, event, crashing


VALIDATE_CRASHES = [
    # (data, boundary, port, method, nth call)
    (SAMPLE, "at-claim", "lineage", "put_if_absent", 1),
    (SAMPLE, "after-claim", "store", "download", 1),
    (SAMPLE, "after-curated-data", "store", "upload_file", 2),  # the reference sample
    (SAMPLE, "after-curated-copy", "store", "put_bytes", 1),  # the profile, after data.parquet
    (SAMPLE, "before-publish", "bus", "publish", 1),
    (SAMPLE, "after-publish", "lineage", "replace", 1),
    (BAD, "after-quarantine-copy", "store", "put_bytes", 1),  # the report, after the copy
    (BAD, "before-publish-rejection", "bus", "publish", 1),
    (BAD, "after-publish-rejection", "lineage", "replace", 1),
    (BAD, "after-complete-before-staged-delete", "store", "delete", 1),
]


@pytest.mark.parametrize("cloud", CLOUDS)
@pytest.mark.parametrize(("data", "boundary", "port", "method", "nth"), VALIDATE_CRASHES)
def test_validate_crash_at_each_boundary_completes_once(
    data: bytes,
    boundary: str,
    port: str,
    method: str,
    nth: int,
    cloud: Cloud,
    clock: Clock,
    ledger: Ledger,
) -> None:
    svc, store, bus, lineage, event, crashing = validate_setup(
        data, cloud, port=port, method=method, nth=nth
    )
    seen = deliver(lambda: svc.handle(event), clock, cloud, "validate")

    good = data == SAMPLE
    kind = DatasetValidated if good else DatasetRejected
    announced = [e for e in bus.events if isinstance(e, kind)]
    row = lineage.get("customers", validate_record_id(event.sha256))
    outputs = [
        k
        for (c, k) in store.objects
        if c in (TOPO.bucket("curated").name, TOPO.bucket("quarantine").name)
    ]
    ledger.fault(f"validate:{boundary}:{cloud}", f"crash: {port}.{method} raises")
    ledger.action(
        f"validate {cloud} {boundary}: {kind.__name__} (distinct event ids)",
        len({e.event_id for e in announced}),
    )
    ledger.delivered(
        f"validate {cloud} {boundary}: one DatasetIngested, {len(seen)} deliveries",
        1,
        int(row is not None and row.status in ("validated", "rejected")),
    )
    assert crashing is not None
    assert crashing.crashed
    assert seen[-1] in ("validated", "rejected", "duplicate"), seen
    assert row is not None
    assert row.status == ("validated" if good else "rejected")
    assert len({e.event_id for e in announced}) == 1
    assert len(announced) == (2 if boundary.startswith("after-publish") else 1)
    assert not [e for e in bus.events if not isinstance(e, kind)]
    # One curated (data, reference, profile) or one quarantined (file, report) set.
    assert len(outputs) == (3 if good else 2), outputs
    staged_left = (event.staged.container, event.staged.key) in store.objects
    assert staged_left == good  # a rejected file leaves staging, once it is answered


# --- a managed validation job whose hand-off crashed --------------------------------------


class Jobs(ValidationJobLauncher):
    """Idempotent, as the real launchers are: the same request names the same job."""

    def __init__(self) -> None:
        self.launched: list[str] = []

    def launch(self, request: ValidationJobRequest) -> str:
        name = f"dhow-t1-validate-customers-{request.sha256[:12]}"
        self.launched.append(name)
        return name


@pytest.mark.parametrize("cloud", CLOUDS)
def test_a_failed_job_whose_hand_off_crashed_is_answered_once(
    cloud: Cloud, clock: Clock, ledger: Ledger
) -> None:
    """The job was launched, then the function died before recording it: the row stays
    ``claimed``. The job fails and its end comes back. Before, that end was dropped as "not
    our job", and the redelivered DatasetIngested found the (failed) job again by its
    name, recorded it ``handed_off``, which counts as done: the uploader never heard."""
    store, bus, lineage = MemoryStore(), MemoryBus(), MemoryLineage()
    jobs = Jobs()
    _, _, _, _, event, _ = validate_setup(SAMPLE)
    store.put_bytes(event.staged, SAMPLE)
    crashing = Crashing(lineage, "replace", 1)  # the write of "handed_off"
    svc = ValidateService(
        store,
        bus,
        cast(LineageStore, crashing),
        curated_container=TOPO.bucket("curated").name,
        quarantine_container=TOPO.bucket("quarantine").name,
        inline_max_bytes=10,
        claim_seconds=claim_window_s(TOPO, "validate", cloud),
        jobs=jobs,
    )
    with pytest.raises(Crash):
        svc.handle(event)
    [job] = set(jobs.launched)
    ended = ValidationJobEnded(
        job_name=job, status="Failed", staged=event.staged, failure_reason="OutOfMemory"
    )
    # The job's end travels the same queue; the ingest event is redelivered beside it.
    seen_end = deliver(lambda: svc.finish_job(ended), clock, cloud, "validate")
    seen_upload = deliver(lambda: svc.handle(event), clock, cloud, "validate")

    rejected = [e for e in bus.events if isinstance(e, DatasetRejected)]
    row = lineage.get("customers", validate_record_id(event.sha256))
    ledger.fault(f"validate:after-job-launch:{cloud}", "crash: lineage.replace raises")
    ledger.fault(f"validate:job-failed:{cloud}", "managed job ends Failed")
    ledger.action(f"validate {cloud} failed job: DatasetRejected", len(rejected))
    ledger.delivered(
        f"validate {cloud} failed job: its end event, {len(seen_end)} deliveries",
        1,
        int(row is not None and row.status == "failed"),
    )
    assert seen_end[-1] == "failed", seen_end
    assert seen_upload == ["duplicate"]
    assert row is not None
    assert (row.status, row.attributes["reason"]) == ("failed", "validation_job_failed")
    [out] = rejected
    assert (out.reason, out.correlation_id) == ("validation_job_failed", "u-1")
    assert not [e for e in bus.events if isinstance(e, DatasetValidated)]


# --- a live holder keeps its claim ---------------------------------------------------------


def test_a_live_holder_renews_so_a_duplicate_backs_off_and_a_dead_one_is_taken_over(
    clock: Clock, ledger: Ledger
) -> None:
    """Azure's window is a few seconds; validating a large file takes minutes. The holder
    renews every third of the window, so a duplicate delivery (Event Grid and S3 deliver
    at least once) arriving mid-work backs off; once the holder stops, it is taken over."""
    from shared.errors import WorkInProgress
    from shared.ports import LineageRecord

    lineage = MemoryLineage()
    window = timedelta(seconds=claim_window_s(TOPO, "validate", "azure"))
    row = LineageRecord(dataset="d", record_id="validate:x", kind="validate", status="claimed")
    held = claims.claim(lineage, row, window, done_statuses={"validated"})
    duplicates = 0
    for _ in range(int(timedelta(minutes=5) / (window / 3))):
        clock.advance((window / 3).total_seconds())
        assert held.renew(lineage)
        with pytest.raises(WorkInProgress):
            claims.claim(lineage, row, window, done_statuses={"validated"})
        duplicates += 1
    claims.complete(lineage, held, "validated")
    stored = lineage.get("d", "validate:x")
    assert stored is not None
    assert stored.status == "validated"

    # The renewal thread does the same on its own while a block runs.
    other = LineageRecord(dataset="d", record_id="validate:y", kind="validate", status="claimed")
    live = claims.claim(lineage, other, window, done_statuses={"validated"})
    with claims.renewing(lineage, live, timedelta(seconds=0.03)):
        time.sleep(0.2)
    renewed = lineage.get("d", "validate:y")
    assert renewed is not None
    assert renewed.revision >= 2
    # It died (no more renewals): the next delivery, one retry later, takes over.
    clock.advance(AZURE_QUEUE_RETRY_S)
    taken = claims.claim(lineage, other, window, done_statuses={"validated"})
    ledger.action("claim: duplicates held off while the holder lived", int(duplicates > 0))
    ledger.action("claim: takeover of the dead holder", int(not taken.done))
    assert not taken.done
