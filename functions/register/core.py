"""register: a training job's end (SageMaker's state change, Azure ML's RunStatusChanged)
in; the model gated against the champion and registered.

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import logging

from shared.services.register import RegisterService
from shared.settings import Settings
from shared.triggers import RouteTable, TrainingJobEnded
from shared.wiring import build_register_service

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
SERVICE = build_register_service(SETTINGS)
ROUTES = RouteTable[RegisterService]("register").on(
    TrainingJobEnded, lambda svc, ended: svc.handle(ended)
)


def handle(body: str | bytes) -> None:
    ROUTES.run(body, SERVICE)
