"""Partial batch failures: only failing messages are retried, nothing is dropped."""

from __future__ import annotations

from shared.batch import process_sqs_batch
from shared.errors import DhowError
from shared.triggers import SqsMessage
from tests.helpers import load_event


def test_only_failed_messages_are_reported() -> None:
    event = load_event("sqs_batch_s3.json")
    second = event["Records"][1]["messageId"]

    def handle(m: SqsMessage) -> None:
        if m.message_id == second:
            raise DhowError("nope", reason="test")

    assert process_sqs_batch(event, handle) == {"batchItemFailures": [{"itemIdentifier": second}]}


def test_unexpected_exceptions_keep_the_message_too() -> None:
    event = load_event("sqs_batch_s3.json")

    def handle(m: SqsMessage) -> None:
        raise RuntimeError("bug")

    failures = process_sqs_batch(event, handle)["batchItemFailures"]
    assert len(failures) == 2


def test_clean_batch_reports_no_failures() -> None:
    assert process_sqs_batch(load_event("sqs_batch_s3.json"), lambda m: None) == {
        "batchItemFailures": []
    }


def test_pipeline_event_batches_refuse_the_wrong_event_type() -> None:
    import json

    from shared.batch import expect_event
    from shared.events import DatasetIngested
    from tests.helpers import sample_rejected

    wrong = sample_rejected()
    body = json.dumps(
        {
            "source": "dhow.pipeline",
            "detail-type": wrong.event_type,
            "detail": json.loads(wrong.model_dump_json()),
        }
    )
    event = {"Records": [{"messageId": "m1", "body": body, "eventSource": "aws:sqs"}]}
    handled: list[object] = []
    out = process_sqs_batch(event, lambda m: handled.append(expect_event(m.body, DatasetIngested)))
    assert out == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    assert handled == []
