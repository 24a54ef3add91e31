"""validate: a ``DatasetIngested`` event in, the staged file checked against its spec; or a
managed validation job's end (SageMaker's "Processing Job State Change") in, its result
announced; or the ``validate_sweep`` schedule's ``{"dataset": ...}`` in, every job of the
dataset still handed off asked about (its end event may never come).

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import logging

from shared.events import DatasetIngested
from shared.ports import ValidationJobEnded
from shared.services.validate import ValidateService
from shared.settings import Settings
from shared.specs import specs_dir
from shared.triggers import RouteTable, ValidationSweepRequest
from shared.wiring import build_validate_service

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
SERVICE = build_validate_service(SETTINGS)
ROUTES = (
    RouteTable[ValidateService]("validate")
    .on(DatasetIngested, lambda svc, event: svc.handle(event))
    .on(ValidationJobEnded, lambda svc, ended: svc.finish_job(ended))
    .on(ValidationSweepRequest, lambda svc, request: svc.sweep(request.dataset))
)


def handle(body: str | bytes) -> None:
    ROUTES.run(body, SERVICE)


def sweep_requests() -> list[str]:
    """One sweep request per dataset spec: what the Azure timer sends to the validate
    queue (on AWS, EventBridge Scheduler keeps one ``validate_sweep`` schedule per spec)."""
    names = sorted(p.stem for p in specs_dir(SETTINGS.specs_dir).glob("*.yaml"))
    return [ValidationSweepRequest(dataset=name).model_dump_json() for name in names]
