"""Lambda entry point of validate: an SQS batch of DatasetIngested events in,
partial batch failures out."""

from __future__ import annotations

import logging
from typing import Any

from shared.batch import BatchResponse, process_sqs_batch
from shared.errors import EventParseError
from shared.events import DatasetIngested
from shared.settings import Settings
from shared.triggers import SqsMessage, parse_bus_event
from shared.wiring import build_validate_service

logging.getLogger().setLevel(logging.INFO)

# Built once per cold start. A non-UAE region stops the function here.
SETTINGS = Settings.from_env()
SERVICE = build_validate_service(SETTINGS)


def _handle(message: SqsMessage) -> None:
    event = parse_bus_event(message.body)
    if not isinstance(event, DatasetIngested):
        raise EventParseError(f"validate was sent {event.event_type}, not DatasetIngested")
    SERVICE.handle(event)


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, _handle)
