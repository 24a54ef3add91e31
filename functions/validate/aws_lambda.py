"""Lambda entry point of validate: an SQS batch of DatasetIngested events in,
partial batch failures out."""

from __future__ import annotations

import logging
from typing import Any

from shared.batch import BatchResponse, process_pipeline_events
from shared.events import DatasetIngested
from shared.settings import Settings
from shared.wiring import build_validate_service

logging.getLogger().setLevel(logging.INFO)

# Built once per cold start. A non-UAE region stops the function here.
SETTINGS = Settings.from_env()
SERVICE = build_validate_service(SETTINGS)


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_pipeline_events(event, DatasetIngested, SERVICE.handle)
