"""Lambda entry point of train-launch: an SQS batch of ``DatasetValidated`` events (and of
``DriftDetected`` ones whose policy is retrain) in, partial batch failures out."""

from __future__ import annotations

import logging
from typing import Any

from shared.batch import BatchResponse, process_sqs_batch
from shared.errors import EventParseError
from shared.events import DatasetValidated, DriftDetected
from shared.settings import Settings
from shared.triggers import SqsMessage, parse_bus_event
from shared.wiring import build_train_launch_service

logging.getLogger().setLevel(logging.INFO)

# Built once per cold start. A non-UAE region stops the function here.
SETTINGS = Settings.from_env()
SERVICE = build_train_launch_service(SETTINGS)


def _handle(message: SqsMessage) -> None:
    event = parse_bus_event(message.body)
    if isinstance(event, DatasetValidated):
        SERVICE.handle(event)
    elif isinstance(event, DriftDetected) and event.action == "retrain":
        SERVICE.on_drift(event)
    else:
        raise EventParseError(
            f"train-launch takes DatasetValidated or a retrain's DriftDetected, and was sent "
            f"{event.event_type}",
            hint="check the event rules that feed its queue",
        )


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, _handle)
