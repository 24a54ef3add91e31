"""Reading what the alerts topic delivered: `dhow local alerts`, on any cloud's inbox."""

from __future__ import annotations

import time
from collections.abc import Callable

from shared.ports import AlertInbox, DeliveredAlert


def drain_alerts(
    inbox: AlertInbox, wait_s: float, clock: Callable[[], float] = time.monotonic
) -> list[DeliveredAlert]:
    """Every alert waiting in ``inbox``, oldest first, each removed once read (so shown
    once). Waits up to ``wait_s`` for a first one; once some came, reads until the inbox
    answers empty."""
    alerts: list[DeliveredAlert] = []
    deadline = clock() + wait_s
    while True:
        got = inbox.receive(wait_s=1)
        for alert in got:
            alerts.append(alert)
            inbox.ack(alert)
        if not got and (alerts or clock() >= deadline):
            return alerts
