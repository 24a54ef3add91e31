"""Edge parsers on real payloads from tests/events/."""

from __future__ import annotations

import json

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
    assert ended.job_name == "dhow-prod-customers-9f869f86-1a2b3c4d5e6f"
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
