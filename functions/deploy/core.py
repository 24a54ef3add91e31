"""deploy: ``ModelApproved``, the serving platform's end-of-deployment events and a
rollback policy's ``DriftDetected`` in; a rollout started, judged or rolled back.

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import json
import logging

from shared.adapters.azure_serving import CHECK_KEY, is_rollout_check
from shared.errors import EventParseError
from shared.events import DriftDetected, ModelApproved
from shared.settings import Settings
from shared.triggers import (
    is_deployment_state_change,
    parse_bus_event,
    parse_deployment_state_change,
)
from shared.wiring import build_deploy_service, serve_prefix

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
SERVICE = build_deploy_service(SETTINGS)
PREFIX = serve_prefix(SETTINGS)


def handle(body: str | bytes) -> None:
    data = json.loads(body)
    if is_rollout_check(data):  # a check the Azure deployer sent itself, now due
        SERVICE.on_rollout_check(**data[CHECK_KEY])
        return
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
