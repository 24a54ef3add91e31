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
