"""drift-check: one ``{"dataset": ...}`` request (a schedule's, or a person's) in; one check.

The one place the function's work is done: its AWS (``aws_lambda``) and Azure
(``azure_function``) entry points only take the message body out of their trigger.
Built once per cold start; a non-UAE region stops the function here.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from shared.services.drift import DriftService, due_drift_checks
from shared.settings import Settings
from shared.triggers import DriftRequest, RouteTable, timer_drift_requests
from shared.wiring import build_drift_service, build_ports

logging.getLogger().setLevel(logging.INFO)

SETTINGS = Settings.from_env()
PORTS = build_ports(SETTINGS)
SERVICE = build_drift_service(SETTINGS, PORTS)
# The run's scheduled time: every delivery of one run's message is the same check.
ROUTES = RouteTable[DriftService]("drift-check").on(
    DriftRequest,
    lambda svc, request: svc.check(
        request.dataset, requested_by=request.requested_by, scheduled_at=request.period
    ),
)


def handle(body: str | bytes) -> None:
    ROUTES.run(body, SERVICE)


def due_requests(now: datetime | None = None) -> list[str]:
    """The drift queue's messages for every dataset whose check is due now, each at most
    once per schedule period (what a timer sends; on AWS EventBridge Scheduler keeps one
    schedule per dataset instead)."""
    now = now or datetime.now(UTC)
    minute = SETTINGS.local_minute_seconds
    due = due_drift_checks(PORTS.lineage, SETTINGS.specs_dir, now, minute_seconds=minute)
    return [
        r.model_dump_json()
        for r in timer_drift_requests(PORTS.lineage, due, now, SETTINGS.specs_dir, minute)
    ]
