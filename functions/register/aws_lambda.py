"""Lambda entry point of register: an SQS batch of SageMaker training job state changes in,
partial batch failures out."""

from __future__ import annotations

import logging
from typing import Any

from shared.batch import BatchResponse, process_sqs_batch
from shared.settings import Settings
from shared.triggers import SqsMessage, parse_training_state_change
from shared.wiring import build_register_service

logging.getLogger().setLevel(logging.INFO)

# Built once per cold start. A non-UAE region stops the function here.
SETTINGS = Settings.from_env()
SERVICE = build_register_service(SETTINGS)


def _handle(message: SqsMessage) -> None:
    SERVICE.handle(parse_training_state_change(message.body))


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, _handle)
