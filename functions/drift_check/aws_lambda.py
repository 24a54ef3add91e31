"""Lambda entry point of drift-check: one scheduled ``{"dataset": ...}`` message (from
EventBridge Scheduler through the drift queue) in, one check, partial batch failures out.

A container-image function: evidently, for the HTML report, does not fit a zip."""

from __future__ import annotations

from typing import Any

from functions.drift_check.core import handle
from shared.batch import BatchResponse, process_sqs_batch


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, lambda message: handle(message.body))
