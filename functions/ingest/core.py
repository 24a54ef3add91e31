"""ingest: a storage object-created notification (S3 via EventBridge, or Event Grid's
BlobCreated) in; each object checked, staged and announced.

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import logging

from shared.services.ingest import IngestService
from shared.settings import Settings
from shared.triggers import ObjectCreated, RouteTable
from shared.wiring import build_ingest_service

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
SERVICE = build_ingest_service(SETTINGS)
ROUTES = RouteTable[IngestService]("ingest").on(ObjectCreated, lambda svc, obj: svc.handle(obj))


def handle(body: str | bytes) -> None:
    ROUTES.run(body, SERVICE)
