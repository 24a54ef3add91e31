"""validate: a ``DatasetIngested`` event in; the staged file checked against its spec.

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import logging

from shared.batch import expect_event
from shared.events import DatasetIngested
from shared.settings import Settings
from shared.wiring import build_validate_service

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
SERVICE = build_validate_service(SETTINGS)


def handle(body: str | bytes) -> None:
    SERVICE.handle(expect_event(body, DatasetIngested))
