"""Lambda entry point of validate: an SQS batch of DatasetIngested events in,
partial batch failures out."""

from __future__ import annotations

from typing import Any

from functions.validate.core import handle
from shared.batch import BatchResponse, process_sqs_batch


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, lambda message: handle(message.body))
