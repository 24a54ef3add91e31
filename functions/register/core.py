"""register: a training job's end (SageMaker's state change, Azure ML's RunStatusChanged)
in; the model gated against the champion and registered.

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import logging

from shared.settings import Settings
from shared.triggers import parse_training_state_change
from shared.wiring import build_register_service

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
SERVICE = build_register_service(SETTINGS)


def handle(body: str | bytes) -> None:
    SERVICE.handle(parse_training_state_change(body))
