"""Edge parsers on real payloads from tests/events/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shared.errors import EventParseError
from shared.triggers import (
    azure_queue_body,
    parse_bus_event,
    parse_object_created,
    sqs_messages,
)
from tests.helpers import load_event, sample_rejected


def test_eventbridge_object_created() -> None:
    [obj] = parse_object_created(load_event("eventbridge_s3_object_created.json"))
    assert (obj.container, obj.key) == ("dhow-local-raw", "datasets/customers/customers 2026.csv")
    assert obj.size == 18774
    assert obj.uploader == "123456789012"
    assert obj.source_event == "eventbridge_s3"


def test_s3_notification_keys_are_url_decoded() -> None:
    [obj] = parse_object_created(load_event("s3_notification.json"))
    assert obj.key == "datasets/customers/customers 2026(v2).csv"
    assert obj.etag == "b1946ac92492d2347c6235b4d2611184"


def test_s3_test_event_yields_nothing_to_do() -> None:
    assert parse_object_created(load_event("s3_test_event.json")) == []


def test_sqs_batch_wraps_both_s3_shapes() -> None:
    messages = sqs_messages(load_event("sqs_batch_s3.json"))
    assert [m.receive_count for m in messages] == [1, 2]
    keys = [parse_object_created(m.body)[0].key for m in messages]
    assert keys == [
        "datasets/customers/customers 2026.csv",
        "datasets/customers/customers 2026(v2).csv",
    ]


def test_event_grid_blob_created() -> None:
    [obj] = parse_object_created(load_event("eventgrid_blob_created.json"))
    assert (obj.container, obj.key) == ("dhow-prod-raw", "datasets/customers/customers.csv")
    assert obj.size == 18774


def test_cloudevents_blob_created_decodes_the_url() -> None:
    [obj] = parse_object_created(load_event("cloudevent_blob_created.json"))
    assert obj.key == "datasets/customers/2026 Q3.csv"


def test_azurite_path_style_url() -> None:
    event = load_event("eventgrid_blob_created.json")[0]
    event["data"]["url"] = "http://127.0.0.1:10000/devstoreaccount1/dhow-local-raw/datasets/a/b.csv"
    [obj] = parse_object_created(event)
    assert (obj.container, obj.key) == ("dhow-local-raw", "datasets/a/b.csv")


def test_azure_queue_message_in_base64() -> None:
    body = azure_queue_body(load_event("azure_queue_message.b64"))
    [obj] = parse_object_created(body)
    assert obj.key == "datasets/customers/customers.csv"


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        "[1, 2]",
        json.dumps({"Records": [{"eventSource": "aws:sns"}]}),
        json.dumps({"source": "aws.s3", "detail-type": "Object Created", "detail": {}}),
    ],
)
def test_unknown_or_broken_payloads_raise_a_parse_error(payload: str) -> None:
    with pytest.raises(EventParseError):
        parse_object_created(payload)


def test_non_sqs_event_is_not_a_batch() -> None:
    with pytest.raises(EventParseError) as info:
        sqs_messages(load_event("s3_notification.json"))
    assert "SQS" in info.value.message


def test_queue_garbage_is_refused() -> None:
    with pytest.raises(EventParseError):
        azure_queue_body("%%% not base64 %%%")


def test_pipeline_event_from_eventbridge_and_queue_envelopes() -> None:
    event = sample_rejected()
    detail = json.loads(event.model_dump_json())
    via_bus = {"source": "dhow.pipeline", "detail-type": "DatasetRejected", "detail": detail}
    via_queue = {"source": "dhow.pipeline", "type": "DatasetRejected", "data": detail}
    assert parse_bus_event(json.dumps(via_bus)) == event
    assert parse_bus_event(via_queue) == event
    with pytest.raises(EventParseError):
        parse_bus_event({"source": "aws.s3", "detail-type": "x", "detail": {}})


def test_sagemaker_training_state_change() -> None:
    from shared.triggers import parse_training_state_change

    ended = parse_training_state_change(load_event("sagemaker_training_state_change.json"))
    assert ended.job_name == "dhow-prod--customers-9f869f86-1a2b3c4d5e6f"
    assert (ended.status, ended.instance_type) == ("Completed", "ml.g5.xlarge")
    assert ended.artifact is not None
    assert ended.artifact.endswith("/output/model.tar.gz")
    assert ended.hyperparameters["dhow_dataset"] == "customers"
    with pytest.raises(EventParseError):
        parse_training_state_change(load_event("eventbridge_s3_object_created.json"))


def test_sagemakers_processing_job_end_names_the_staged_object() -> None:
    from shared.triggers import is_validation_job_state_change, parse_validation_job_ended

    sample = load_event("sagemaker_processing_job_state_change.json")
    assert is_validation_job_state_change(json.dumps(sample))
    ended = parse_validation_job_ended(json.dumps(sample))
    assert ended.job_name == sample["detail"]["ProcessingJobName"]
    assert (ended.status, ended.failure_reason) == ("Failed", sample["detail"]["FailureReason"])
    assert ended.staged.container == "dhow-prod-staging"
    assert ended.staged.key.startswith("datasets/customers/sha256=")
    # A DatasetIngested on the same queue is not one.
    assert not is_validation_job_state_change(sample_rejected().model_dump_json())


def test_azure_mls_validation_run_end_is_the_same_typed_event_as_sagemakers() -> None:
    from shared.triggers import is_validation_job_state_change, parse_validation_job_ended

    sample = load_event("azureml_validation_run_status_changed.json")
    assert is_validation_job_state_change(json.dumps(sample))
    ended = parse_validation_job_ended(json.dumps(sample))
    assert ended.job_name == sample["data"]["runId"]
    assert (ended.status, ended.failure_reason) == ("Completed", None)
    assert ended.staged.container == "dhow-prod-staging"
    assert ended.staged.key == (
        f"datasets/customers/sha256={sample['data']['runTags']['dhow:sha256']}/data.csv"
    )
    # Azure ML's "Canceled" is SageMaker's "Stopped" for finish_job.
    canceled = json.loads(json.dumps(sample))
    canceled["data"]["runStatus"] = "Canceled"
    stopped = parse_validation_job_ended(json.dumps([canceled]))  # an array of one, as delivered
    assert stopped.status == "Stopped"
    assert stopped.failure_reason == "Azure ML run ended Canceled"


def test_a_training_runs_end_is_not_a_validation_jobs_end() -> None:
    from shared.triggers import is_validation_job_state_change, parse_validation_job_ended

    training = load_event("azureml_run_status_changed.json")
    assert not is_validation_job_state_change(json.dumps(training))
    with pytest.raises(EventParseError):
        parse_validation_job_ended(training)


def test_a_validation_run_without_its_staged_tag_is_refused() -> None:
    from shared.triggers import parse_validation_job_ended

    sample = load_event("azureml_validation_run_status_changed.json")
    del sample["data"]["runTags"]["dhow:staged"]
    with pytest.raises(EventParseError, match="dhow:staged"):
        parse_validation_job_ended(sample)
    sample = load_event("azureml_validation_run_status_changed.json")
    sample["data"]["runStatus"] = "Running"
    with pytest.raises(EventParseError, match="not an end state"):
        parse_validation_job_ended(sample)


def test_a_handed_off_validation_on_azure_finishes_when_its_run_ends(tmp_path: Path) -> None:
    """The job Azure ML is sent, and the RunStatusChanged it raises at its end (the run's
    id, experiment and tags are the job's name, experiment and tags): validate finishes
    the work and the lineage row leaves ``handed_off``."""
    from shared.adapters.azure_ml import AzureMLJobConfig, AzureMLValidationJobs
    from shared.events import DatasetValidated
    from shared.services.validate import validate_record_id
    from shared.topology import build_topology
    from shared.triggers import parse_validation_job_ended
    from tests.unit.test_azureml_job_request import RecordingJobs
    from tests.unit.test_validate_service import SAMPLE, _run_job, setup

    jobs = RecordingJobs()
    launcher = AzureMLValidationJobs(
        jobs,
        AzureMLJobConfig(
            compute="cpu-cluster",
            environment="azureml:dhow-validate:1",
            staging_datastore="dhow_staging",
            stage="t1",
            code=str(tmp_path),
        ),
    )
    data = SAMPLE.read_bytes()
    svc, store, bus, lineage, event = setup(
        data, inline_max=1000, jobs=launcher, curated=build_topology("t1").bucket("curated").name
    )
    assert svc.handle(event).status == "handed_off"
    [sent] = jobs.sent
    _run_job(store, event, tmp_path, data)
    props = sent["properties"]
    run_ended = load_event("azureml_validation_run_status_changed.json")
    run_ended["data"] |= {
        "runId": sent["name"],
        "experimentName": props["experimentName"],
        "runTags": props["tags"],
    }
    done = svc.finish_job(parse_validation_job_ended(json.dumps(run_ended)))
    assert done.status == "validated"
    [out] = bus.events
    assert isinstance(out, DatasetValidated)
    row = lineage.get("customers", validate_record_id(event.sha256))
    assert row is not None
    assert row.status == "validated"


def test_one_timer_tick_a_period_claims_a_drift_check_even_when_two_race() -> None:
    from datetime import UTC, datetime, timedelta

    from shared.cloud_facts import value
    from shared.triggers import claim_drift_period, schedule_period
    from tests.helpers import MemoryLineage

    # Nothing on the queue's side drops a second message (fact named): the claim must.
    assert value("azure.storage.queue_no_duplicate_detection")["duplicate_detection"] is False
    lineage = MemoryLineage()
    noon = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    hour = 3600.0
    assert schedule_period(noon + timedelta(minutes=59), hour) == noon
    assert schedule_period(noon + timedelta(minutes=60), hour) == noon + timedelta(hours=1)
    # Two timers on the same tick (two instances of the app), then the rest of the hour.
    claims = [claim_drift_period(lineage, "customers", noon) for _ in range(2)]
    claims += [
        claim_drift_period(lineage, "customers", schedule_period(noon + timedelta(minutes=m), hour))
        for m in range(1, 60)
    ]
    assert claims.count(True) == 1
    assert claim_drift_period(lineage, "customers", noon + timedelta(hours=1))
    # A late tick of an earlier period never sends it again; other datasets claim their own.
    assert not claim_drift_period(lineage, "customers", noon)
    assert claim_drift_period(lineage, "other", noon)
