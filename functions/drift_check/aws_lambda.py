"""Lambda entry point of drift-check: one scheduled ``{"dataset": ...}`` message (from
EventBridge Scheduler through the drift queue) in, one check, partial batch failures out.

A container-image function: evidently, for the HTML report, does not fit a zip."""

from __future__ import annotations

import logging
from typing import Any

from shared.batch import BatchResponse, process_sqs_batch
from shared.settings import Settings
from shared.triggers import SqsMessage, parse_drift_request
from shared.wiring import build_drift_service

logging.getLogger().setLevel(logging.INFO)

# Built once per cold start. A non-UAE region stops the function here.
SETTINGS = Settings.from_env()
SERVICE = build_drift_service(SETTINGS)


def _handle(message: SqsMessage) -> None:
    request = parse_drift_request(message.body)
    SERVICE.check(request.dataset, requested_by=request.requested_by)


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, _handle)
