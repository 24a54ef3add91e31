"""train-launch: ``DatasetValidated`` (or a retrain policy's ``DriftDetected``) in; one
training job launched.

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import logging

from shared.events import DatasetValidated, DriftDetected
from shared.services.train_launch import TrainLaunchService
from shared.settings import Settings
from shared.triggers import RouteTable, drift_policy
from shared.wiring import build_train_launch_service

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
SERVICE = build_train_launch_service(SETTINGS)
ROUTES = (
    RouteTable[TrainLaunchService]("train-launch")
    .on(DatasetValidated, lambda svc, event: svc.handle(event))
    .on(DriftDetected, lambda svc, event: svc.on_drift(event), **drift_policy("retrain"))
)


def handle(body: str | bytes) -> None:
    ROUTES.run(body, SERVICE)
