"""The validate service with in-memory ports: curated or quarantined, never dropped."""

from __future__ import annotations

import json
from io import BytesIO
from pathlib import Path

import pandas as pd
import pytest

from shared.errors import DhowError
from shared.events import DatasetIngested, DatasetRejected, DatasetValidated, ObjectRef
from shared.ports import ValidationJobLauncher, ValidationJobRequest
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
        curated_container=CURATED,
        quarantine_container=QUARANTINE,
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


def test_large_file_is_handed_to_a_managed_job_that_finishes_the_work(tmp_path: Path) -> None:
    jobs = RecordingJobs()
    svc, _store, bus, lineage, event = setup(SAMPLE.read_bytes(), inline_max=1000, jobs=jobs)
    outcome = svc.handle(event)
    assert outcome.status == "handed_off"
    assert outcome.job_name
    [req] = jobs.requests
    assert (req.staged, req.source, req.size_bytes) == (
        event.staged,
        event.source,
        event.size_bytes,
    )
    assert bus.events == []
    assert svc.handle(event).status == "duplicate"  # a redelivery does not launch again
    assert len(jobs.requests) == 1
    # Inside the job: the same service, on the copy SageMaker put on local disk.
    local = tmp_path / "input.csv"
    local.write_bytes(SAMPLE.read_bytes())
    assert svc.handle(event, local_copy=local).status == "validated"
    row = lineage.get("customers", validate_record_id(event.sha256))
    assert row is not None
    assert row.status == "validated"
    assert row.attributes["job_name"]


def test_large_file_without_a_job_runner_fails_loudly() -> None:
    svc, _, bus, _, event = setup(SAMPLE.read_bytes(), inline_max=1000)
    with pytest.raises(DhowError) as info:
        svc.handle(event)
    assert "DHOW_VALIDATE_INLINE_MAX_BYTES" in info.value.hint
    assert bus.events == []
