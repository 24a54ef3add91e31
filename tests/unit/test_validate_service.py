"""The validate service with in-memory ports: curated or quarantined, never dropped."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from io import BytesIO
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from shared.errors import DhowError
from shared.events import DatasetIngested, DatasetRejected, DatasetValidated, ObjectRef
from shared.ports import ValidationJobLauncher, ValidationJobRequest, ValidationJobState
from shared.services.validate import ValidateService, validate_record_id
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore

SAMPLE = Path(__file__).resolve().parents[2] / "localstack/samples/customers.csv"
RAW, STAGING, CURATED, QUARANTINE = "raw", "staging", "curated", "quarantine"


class RecordingJobs(ValidationJobLauncher):
    def __init__(self) -> None:
        self.requests: list[ValidationJobRequest] = []

    def launch(self, request: ValidationJobRequest) -> str:
        self.requests.append(request)
        return f"job-{request.sha256[:8]}"


def setup(
    data: bytes,
    dataset: str = "customers",
    inline_max: int = 10**9,
    jobs: ValidationJobLauncher | None = None,
    curated: str = CURATED,
    quarantine: str = QUARANTINE,
) -> tuple[ValidateService, MemoryStore, MemoryBus, MemoryLineage, DatasetIngested]:
    store, bus, lineage = MemoryStore(), MemoryBus(), MemoryLineage()
    sha = f"{abs(hash(data)):064x}"[-64:]
    staged = ObjectRef(container=STAGING, key=f"datasets/{dataset}/sha256={sha}/data.csv")
    store.put_bytes(staged, data)
    event = DatasetIngested(
        dataset=dataset,
        correlation_id="u-1",
        sha256=sha,
        size_bytes=len(data),
        format="csv",
        source=ObjectRef(container=RAW, key=f"datasets/{dataset}/f.csv"),
        staged=staged,
    )
    svc = ValidateService(
        store,
        bus,
        lineage,
        curated_container=curated,
        quarantine_container=quarantine,
        inline_max_bytes=inline_max,
        chunk_rows=100,
        jobs=jobs,
    )
    return svc, store, bus, lineage, event


def test_good_data_is_curated_with_reference_and_profile() -> None:
    svc, store, bus, lineage, event = setup(SAMPLE.read_bytes())
    assert svc.handle(event).status == "validated"
    [out] = bus.events
    assert isinstance(out, DatasetValidated)
    assert out.rows == 400
    assert out.curated.container == CURATED
    assert out.curated.key.endswith("/data.parquet")
    curated = pd.read_parquet(BytesIO(store.objects[(CURATED, out.curated.key)][0]))
    assert len(curated) == 400
    assert out.reference_profile is not None
    profile_key = out.curated.key.replace("data.parquet", "profile.json")
    assert json.loads(store.objects[(CURATED, profile_key)][0])["age"]["count"] == 400
    row = lineage.get("customers", validate_record_id(event.sha256))
    assert row is not None
    assert row.status == "validated"
    # raw -> staged -> curated, with the spec version used
    assert row.attributes["source"] == event.source.uri
    assert row.attributes["staged"] == event.staged.uri
    assert row.attributes["curated"] == out.curated.uri
    assert row.attributes["spec_version"] == out.spec_version
    assert (STAGING, event.staged.key) in store.objects  # staged copy stays for training


def test_bad_data_is_moved_to_quarantine_with_a_readable_report() -> None:
    text = SAMPLE.read_text().replace("C00003,", "C00003x,", 1).replace(",gold,", ",platinum,", 1)
    svc, store, bus, lineage, event = setup(text.encode())
    outcome = svc.handle(event)
    assert outcome.status == "rejected"
    [out] = bus.events
    assert isinstance(out, DatasetRejected)
    assert out.stage == "validate"
    assert out.reason == "schema_checks_failed"
    assert out.quarantined is not None
    assert out.report is not None
    assert out.report.key == out.quarantined.key + ".report.json"
    assert store.objects[(QUARANTINE, out.quarantined.key)][0] == text.encode()
    assert (STAGING, event.staged.key) not in store.objects  # moved, not copied
    report = json.loads(store.objects[(QUARANTINE, out.report.key)][0])
    assert report["checks"][0]["check"].startswith("isin")
    assert report["failure_cases"][0]["row"] >= 1
    row = lineage.get("customers", validate_record_id(event.sha256))
    assert row is not None
    assert row.status == "rejected"
    assert row.attributes["quarantined"] == out.quarantined.uri


def test_unknown_dataset_is_quarantined_not_dropped() -> None:
    svc, store, bus, _, event = setup(b"a,b\n1,2\n", dataset="mystery")
    assert svc.handle(event).status == "rejected"
    [out] = bus.events
    assert isinstance(out, DatasetRejected)
    assert out.reason == "unknown_dataset"
    assert out.quarantined is not None
    assert store.objects[(QUARANTINE, out.quarantined.key)][0] == b"a,b\n1,2\n"


def test_redelivery_does_nothing_twice() -> None:
    svc, _, bus, lineage, event = setup(SAMPLE.read_bytes())
    svc.handle(event)
    assert svc.handle(event).status == "duplicate"
    assert len(bus.events) == 1
    assert len(lineage.rows) == 1


def _job_ended(event: DatasetIngested, job: str, status: str, reason: str | None = None) -> Any:
    from shared.ports import ValidationJobEnded

    return ValidationJobEnded.model_validate(
        {
            "job_name": job,
            "status": status,
            "staged": event.staged,
            "failure_reason": reason or None,
        }
    )


def _run_job(store: MemoryStore, event: DatasetIngested, tmp_path: Path, data: bytes) -> None:
    """The job as SageMaker runs it: the staged object under its input folder, storage only."""
    from shared.jobs.validate import run
    from shared.settings import Settings

    folder = tmp_path / "staged"
    folder.mkdir()
    (folder / event.staged.key.rsplit("/", 1)[-1]).write_bytes(data)
    # The job writes to the stage's own buckets; the test's service uses the same names.
    run(
        store,
        Settings(stage="t1"),
        dataset=event.dataset,
        sha256=event.sha256,
        staged=event.staged,
        given=folder,
    )


def test_large_file_is_handed_to_a_job_and_its_end_finishes_the_work(tmp_path: Path) -> None:
    from shared.topology import build_topology

    topo = build_topology("t1")
    jobs = RecordingJobs()
    data = SAMPLE.read_bytes()
    svc, store, bus, lineage, event = setup(
        data, inline_max=1000, jobs=jobs, curated=topo.bucket("curated").name
    )
    outcome = svc.handle(event)
    assert outcome.status == "handed_off"
    [req] = jobs.requests
    assert (req.staged, req.source, req.size_bytes) == (event.staged, event.source, len(data))
    assert bus.events == []
    assert svc.handle(event).status == "duplicate"  # a redelivery does not launch again
    assert len(jobs.requests) == 1

    _run_job(store, event, tmp_path, data)
    assert bus.events == []  # the job announces nothing; the function does, on its end
    done = svc.finish_job(_job_ended(event, str(outcome.job_name), "Completed"))
    assert done.status == "validated"
    [out] = bus.events
    assert isinstance(out, DatasetValidated)
    assert out.rows == 400
    assert out.curated.container == topo.bucket("curated").name
    assert (out.curated.container, out.curated.key) in store.objects
    row = lineage.get("customers", validate_record_id(event.sha256))
    assert row is not None
    assert (row.status, row.attributes["job_name"]) == ("validated", outcome.job_name)
    # SageMaker may send the same state change twice: the second does nothing.
    again = svc.finish_job(_job_ended(event, str(outcome.job_name), "Completed"))
    assert again.status == "duplicate"
    assert len(bus.events) == 1


def test_a_rejected_file_from_a_job_is_quarantined_and_leaves_staging(tmp_path: Path) -> None:
    from shared.topology import build_topology

    topo = build_topology("t1")
    text = SAMPLE.read_text().replace(",gold,", ",platinum,", 1).encode()
    svc, store, bus, _, event = setup(
        text,
        inline_max=1000,
        jobs=RecordingJobs(),
        quarantine=topo.bucket("quarantine").name,
    )
    job = str(svc.handle(event).job_name)
    _run_job(store, event, tmp_path, text)
    assert (STAGING, event.staged.key) in store.objects  # the job deletes nothing
    assert svc.finish_job(_job_ended(event, job, "Completed")).status == "rejected"
    [out] = bus.events
    assert isinstance(out, DatasetRejected)
    assert out.reason == "schema_checks_failed"
    assert out.quarantined is not None
    assert store.objects[(out.quarantined.container, out.quarantined.key)][0] == text
    assert (STAGING, event.staged.key) not in store.objects  # moved by the function


@pytest.mark.parametrize(
    ("status", "reason"),
    [("Failed", "validation_job_failed"), ("Stopped", "validation_job_stopped")],
)
def test_a_job_that_fails_answers_the_uploader(status: str, reason: str) -> None:
    svc, store, bus, lineage, event = setup(
        SAMPLE.read_bytes(), inline_max=1000, jobs=RecordingJobs()
    )
    job = str(svc.handle(event).job_name)
    ended = _job_ended(event, job, status, "AlgorithmError: out of memory")
    assert svc.finish_job(ended).status == "failed"
    [out] = bus.events
    assert isinstance(out, DatasetRejected)
    assert (out.stage, out.reason, out.correlation_id) == ("validate", reason, "u-1")
    assert "out of memory" in out.message or status == "Stopped"
    row = lineage.get("customers", validate_record_id(event.sha256))
    assert row is not None
    assert (row.status, row.attributes["reason"]) == ("failed", reason)  # not handed_off
    assert (STAGING, event.staged.key) in store.objects  # kept: nothing is dropped


def test_a_completed_job_without_its_result_is_a_failure() -> None:
    svc, _, bus, _, event = setup(SAMPLE.read_bytes(), inline_max=1000, jobs=RecordingJobs())
    job = str(svc.handle(event).job_name)
    assert svc.finish_job(_job_ended(event, job, "Completed")).reason == "validation_job_no_result"
    [out] = bus.events
    assert isinstance(out, DatasetRejected)


def test_another_job_of_the_same_bytes_is_not_adopted() -> None:
    svc, _, bus, lineage, event = setup(SAMPLE.read_bytes(), inline_max=1000, jobs=RecordingJobs())
    svc.handle(event)
    assert svc.finish_job(_job_ended(event, "dhow-other-validate-x", "Failed")).status == "ignored"
    assert bus.events == []
    row = lineage.get("customers", validate_record_id(event.sha256))
    assert row is not None
    assert row.status == "handed_off"


def test_the_job_itself_reaches_only_storage(tmp_path: Path) -> None:
    from shared.jobs.validate import run
    from shared.settings import Settings

    # run() is given storage and nothing else: the job has no lineage or bus to reach.
    store = MemoryStore()
    staged = ObjectRef(container=STAGING, key=f"datasets/customers/sha256={'a' * 64}/data.csv")
    local = tmp_path / "data.csv"
    local.write_bytes(SAMPLE.read_bytes())
    result = run(
        store,
        Settings(stage="t1"),
        dataset="customers",
        sha256="a" * 64,
        staged=staged,
        given=local,
    )
    assert result.ok
    written = {c for c, _ in store.objects}
    assert written == {"dhow-t1-curated", STAGING}  # outputs, and the result beside staging


def test_large_file_without_a_job_runner_fails_loudly() -> None:
    svc, _, bus, _, event = setup(SAMPLE.read_bytes(), inline_max=1000)
    with pytest.raises(DhowError) as info:
        svc.handle(event)
    assert "DHOW_VALIDATE_INLINE_MAX_BYTES" in info.value.hint
    assert bus.events == []


def test_a_job_whose_hand_off_crashed_before_it_was_recorded_is_still_announced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Launched, then the function died before writing "handed_off": the row is left
    "claimed" with no job name. The job's end must not be dropped as "not our job": it
    backs off while the claim is fresh and finishes the work once the claim is stale."""
    from datetime import UTC, datetime, timedelta

    from shared.errors import WorkInProgress
    from shared.topology import build_topology

    topo = build_topology("t1")
    data = SAMPLE.read_bytes()
    jobs = RecordingJobs()
    svc, store, bus, lineage, event = setup(
        data, inline_max=1000, jobs=jobs, curated=topo.bucket("curated").name
    )

    def crash(*_: Any) -> bool:
        raise DhowError("lineage unavailable", reason="lineage_unavailable")

    monkeypatch.setattr(lineage, "replace", crash)  # the write of "handed_off"
    with pytest.raises(DhowError):
        svc.handle(event)
    monkeypatch.undo()
    [req] = jobs.requests
    key = ("customers", validate_record_id(event.sha256))
    assert lineage.rows[key].status == "claimed"
    assert "job_name" not in lineage.rows[key].attributes

    _run_job(store, event, tmp_path, data)
    ended = _job_ended(event, f"job-{req.sha256[:8]}", "Completed")
    with pytest.raises(WorkInProgress):  # the holder may still be about to record it
        svc.finish_job(ended)
    lineage.rows[key] = lineage.rows[key].model_copy(
        update={"updated_at": datetime.now(UTC) - timedelta(hours=2)}
    )
    assert svc.finish_job(ended).status == "validated"
    [out] = bus.events
    assert isinstance(out, DatasetValidated)
    assert lineage.rows[key].status == "validated"
    # The redelivered DatasetIngested finds the work done; the job is not launched again.
    assert svc.handle(event).status == "duplicate"
    assert len(jobs.requests) == 1


# --- a job whose end event never came: the sweep asks the platform -----------------------


class PlatformJobs(RecordingJobs):
    """A launcher whose platform answers for its jobs, as DescribeProcessingJob does."""

    def __init__(self, max_runtime_s: int = 3600) -> None:
        super().__init__()
        self.states: dict[str, ValidationJobState] = {}
        self.stopped: list[str] = []
        self._max = max_runtime_s

    def launch(self, request: ValidationJobRequest) -> str:
        # Named per attempt as the adapters name them (validation_attempt_suffix).
        from shared.ports import validation_attempt_suffix

        return super().launch(request) + validation_attempt_suffix(request.attempt)

    @property
    def max_runtime_s(self) -> int:
        return self._max

    def state(self, job_name: str) -> ValidationJobState:
        return self.states.get(job_name, ValidationJobState(job_name=job_name, status="Missing"))

    def stop(self, job_name: str) -> None:
        self.stopped.append(job_name)
        self.states[job_name] = ValidationJobState(job_name=job_name, status="Stopping")


def _handed_off(
    tmp_path: Path | None = None,
) -> tuple[ValidateService, MemoryStore, MemoryBus, MemoryLineage, DatasetIngested, PlatformJobs]:
    from shared.topology import build_topology

    jobs = PlatformJobs()
    svc, store, bus, lineage, event = setup(
        SAMPLE.read_bytes(),
        inline_max=1000,
        jobs=jobs,
        curated=build_topology("t1").bucket("curated").name,
    )
    assert svc.handle(event).status == "handed_off"
    return svc, store, bus, lineage, event, jobs


def _later(minutes: float) -> datetime:
    return datetime.now(UTC) + timedelta(minutes=minutes)


def test_a_completed_job_whose_end_was_lost_is_announced_by_the_sweep(tmp_path: Path) -> None:
    svc, store, bus, lineage, event, jobs = _handed_off()
    [job] = [f"job-{r.sha256[:8]}" for r in jobs.requests]
    _run_job(store, event, tmp_path, SAMPLE.read_bytes())
    jobs.states[job] = ValidationJobState(job_name=job, status="Completed")
    assert svc.sweep("customers", now=_later(5)) == []  # its end event may still come
    [outcome] = svc.sweep("customers", now=_later(20))
    assert outcome.status == "validated"
    [out] = bus.events
    assert isinstance(out, DatasetValidated)
    assert (out.rows, out.correlation_id) == (400, "u-1")
    row = lineage.get("customers", validate_record_id(event.sha256))
    assert row is not None
    assert row.status == "validated"
    # The end event arrives after all, and the next tick runs: neither announces again.
    assert svc.finish_job(_job_ended(event, job, "Completed")).status == "duplicate"
    assert svc.sweep("customers", now=_later(40)) == []
    assert len(bus.events) == 1
    assert jobs.stopped == []


@pytest.mark.parametrize(
    ("status", "reason"),
    [("Failed", "validation_job_failed"), ("Stopped", "validation_job_stopped")],
)
def test_a_failed_job_whose_end_was_lost_is_answered_with_its_failure_reason(
    status: str, reason: str
) -> None:
    svc, store, bus, lineage, event, jobs = _handed_off()
    [job] = [f"job-{r.sha256[:8]}" for r in jobs.requests]
    jobs.states[job] = ValidationJobState.model_validate(
        {"job_name": job, "status": status, "failure_reason": "ClientError: no space left"}
    )
    [outcome] = svc.sweep("customers", now=_later(20))
    assert (outcome.status, outcome.reason) == ("failed", reason)
    [out] = bus.events
    assert isinstance(out, DatasetRejected)
    assert (out.reason, out.correlation_id) == (reason, "u-1")
    assert "no space left" in out.message
    row = lineage.get("customers", validate_record_id(event.sha256))
    assert row is not None
    assert (row.status, row.attributes["reason"]) == ("failed", reason)
    assert (STAGING, event.staged.key) in store.objects  # kept for the retry


def test_a_job_running_past_its_stopping_condition_is_stopped_and_answered() -> None:
    from shared.services.validate import JOB_START_MARGIN

    svc, _, bus, _, event, jobs = _handed_off()
    [job] = [f"job-{r.sha256[:8]}" for r in jobs.requests]
    jobs.states[job] = ValidationJobState(job_name=job, status="InProgress")
    within = timedelta(seconds=jobs.max_runtime_s) + JOB_START_MARGIN
    assert svc.sweep("customers", now=_later(within.total_seconds() / 60 - 1)) == []
    assert (jobs.stopped, bus.events) == ([], [])  # running within its bound: left alone
    [outcome] = svc.sweep("customers", now=_later(within.total_seconds() / 60 + 1))
    assert (outcome.status, outcome.reason) == ("failed", "validation_job_stopped")
    assert jobs.stopped == [job]
    [out] = bus.events
    assert isinstance(out, DatasetRejected)
    assert "stopping condition of 3600 s" in out.message
    # Its Stopped end event comes later: already answered.
    assert svc.finish_job(_job_ended(event, job, "Stopped")).status == "duplicate"
    assert len(bus.events) == 1


def test_a_job_the_platform_does_not_know_is_answered_not_waited_for() -> None:
    svc, _, bus, _, _, jobs = _handed_off()
    jobs.states.clear()  # e.g. the hand-off recorded a job the platform never created
    [outcome] = svc.sweep("customers", now=_later(20))
    assert (outcome.status, outcome.reason) == ("failed", "validation_job_failed")
    [out] = bus.events
    assert isinstance(out, DatasetRejected)
    assert "has no job named" in out.message


# --- a retry is real: the same bytes uploaded again after a platform failure ---------------


def _reuploaded(event: DatasetIngested, n: int = 2) -> DatasetIngested:
    """The DatasetIngested ingest sends for another upload of the same bytes after their
    validation job failed: same bytes and staged copy, an event id of its own."""
    return event.model_copy(
        update={"event_id": f"ingest-{event.sha256[:32]}-upload{n}", "correlation_id": f"u-{n}"}
    )


def test_the_same_bytes_uploaded_again_after_a_failed_job_start_a_new_attempt(
    tmp_path: Path,
) -> None:
    from shared.ports import validation_attempt_of

    svc, store, bus, lineage, event, jobs = _handed_off()
    first = f"job-{event.sha256[:8]}"
    svc.finish_job(_job_ended(event, first, "Failed", "InternalServerError"))
    assert svc.handle(event).status == "duplicate"  # a redelivery of the first is not a retry
    assert len(jobs.requests) == 1

    retry = _reuploaded(event)
    outcome = svc.handle(retry)
    assert outcome.status == "handed_off"
    assert [r.attempt for r in jobs.requests] == [1, 2]  # a new job, not the failed one
    assert svc.handle(retry).status == "duplicate"  # its redelivery launches nothing
    assert len(jobs.requests) == 2
    # The failed attempt stays as it was: the audit trail keeps what happened.
    failed = lineage.get("customers", validate_record_id(event.sha256))
    assert failed is not None
    assert (failed.status, failed.attributes["reason"]) == ("failed", "validation_job_failed")

    second = str(outcome.job_name)
    assert (second, validation_attempt_of(second)) == (f"{first}-r2", 2)
    _run_job(store, event, tmp_path, SAMPLE.read_bytes())
    assert svc.finish_job(_job_ended(event, second, "Completed")).status == "validated"
    # A late end of the first job changes nothing.
    assert svc.finish_job(_job_ended(event, first, "Failed")).status == "duplicate"
    rejected = [e for e in bus.events if isinstance(e, DatasetRejected)]
    validated = [e for e in bus.events if isinstance(e, DatasetValidated)]
    assert len(rejected) == 1
    assert [v.correlation_id for v in validated] == ["u-2"]  # answered to the retry's upload
    assert validated[0].event_id != rejected[0].event_id.replace("rejected", "validated")


def test_a_file_rejected_for_its_data_stays_rejected_when_uploaded_again() -> None:
    text = SAMPLE.read_text().replace(",gold,", ",platinum,", 1)
    svc, _, bus, lineage, event = setup(text.encode())
    assert svc.handle(event).status == "rejected"
    assert svc.handle(_reuploaded(event)).status == "duplicate"
    assert len(bus.events) == 1
    assert len(lineage.rows) == 1
