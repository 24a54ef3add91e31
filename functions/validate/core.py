"""validate: a ``DatasetIngested`` event in, the staged file checked against its spec; or a
managed validation job's end (SageMaker's "Processing Job State Change") in, its result
announced.

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import logging

from shared.batch import expect_event
from shared.events import DatasetIngested
from shared.settings import Settings
from shared.triggers import is_validation_job_state_change, parse_validation_job_ended
from shared.wiring import build_validate_service

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
SERVICE = build_validate_service(SETTINGS)


def handle(body: str | bytes) -> None:
    if is_validation_job_state_change(body):
        SERVICE.finish_job(parse_validation_job_ended(body))
    else:
        SERVICE.handle(expect_event(body, DatasetIngested))
