"""Lambda entry point of deploy: an SQS batch of ``ModelApproved`` events, of the
serving platform's end-of-deployment events (CodeDeploy, SageMaker endpoints) and of
``DriftDetected`` events whose policy is rollback in, partial batch failures out."""

from __future__ import annotations

import json
import logging
from typing import Any

from shared.batch import BatchResponse, process_sqs_batch
from shared.errors import EventParseError
from shared.events import DriftDetected, ModelApproved
from shared.settings import Settings
from shared.triggers import (
    SqsMessage,
    is_deployment_state_change,
    parse_bus_event,
    parse_deployment_state_change,
)
from shared.wiring import build_deploy_service, serve_prefix

logging.getLogger().setLevel(logging.INFO)

# Built once per cold start. A non-UAE region stops the function here.
SETTINGS = Settings.from_env()
SERVICE = build_deploy_service(SETTINGS)
PREFIX = serve_prefix(SETTINGS)


def _handle(message: SqsMessage) -> None:
    data = json.loads(message.body)
    if is_deployment_state_change(data):
        change = parse_deployment_state_change(data, PREFIX)
        if change is not None:  # START, UPDATING, ...: not an end
            SERVICE.on_state_change(change)
        return
    event = parse_bus_event(data)
    if isinstance(event, DriftDetected) and event.action == "rollback":
        SERVICE.on_drift(event)
        return
    if not isinstance(event, ModelApproved):
        raise EventParseError(
            f"deploy takes ModelApproved or a rollback's DriftDetected, and was sent "
            f"{event.event_type}",
            hint="check the event rules that feed its queue",
        )
    SERVICE.on_model_approved(event)


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, _handle)
