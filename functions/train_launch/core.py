"""train-launch: ``DatasetValidated`` (or a retrain policy's ``DriftDetected``) in; one
training job launched.

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import logging

from shared.errors import EventParseError
from shared.events import DatasetValidated, DriftDetected
from shared.settings import Settings
from shared.triggers import parse_bus_event
from shared.wiring import build_train_launch_service

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
SERVICE = build_train_launch_service(SETTINGS)


def handle(body: str | bytes) -> None:
    event = parse_bus_event(body)
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
