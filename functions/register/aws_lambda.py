"""Lambda entry point of register: an SQS batch of SageMaker training job state changes in,
partial batch failures out."""

from __future__ import annotations

from typing import Any

from functions.register.core import handle
from shared.batch import BatchResponse, process_sqs_batch


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, lambda message: handle(message.body))
