"""Lambda entry point of ingest: an SQS batch of S3 "Object Created" events in,
partial batch failures out."""

from __future__ import annotations

from typing import Any

from functions.ingest.core import handle
from shared.batch import BatchResponse, process_sqs_batch


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, lambda message: handle(message.body))
