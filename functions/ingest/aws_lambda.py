"""Lambda entry point of ingest: an SQS batch of S3 "Object Created" events in,
partial batch failures out."""

from __future__ import annotations

import logging
from typing import Any

from shared.batch import BatchResponse, process_sqs_batch
from shared.settings import Settings
from shared.triggers import SqsMessage, parse_object_created
from shared.wiring import build_ingest_service

logging.getLogger().setLevel(logging.INFO)

# Built once per cold start. A non-UAE region stops the function here.
SETTINGS = Settings.from_env()
SERVICE = build_ingest_service(SETTINGS)


def _handle(message: SqsMessage) -> None:
    for obj in parse_object_created(message.body):
        SERVICE.handle(obj)


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, _handle)
