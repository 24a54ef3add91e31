"""Lambda entry point of train-launch: an SQS batch of ``DatasetValidated`` events (and of
``DriftDetected`` ones whose policy is retrain) in, partial batch failures out."""

from __future__ import annotations

from typing import Any

from functions.train_launch.core import handle
from shared.batch import BatchResponse, process_sqs_batch


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, lambda message: handle(message.body))
