"""The local schedule player: plays EventBridge Scheduler against LocalStack.

LocalStack stores schedules (its Scheduler is moto's) but never fires them. This
reads the stage's schedules back from LocalStack's Scheduler API and, when one is
due, sends its target's ``Input`` to its target SQS queue, as Scheduler's SQS
target does. ``rate(...)`` expressions are played, with a minute lasting
``DHOW_LOCAL_MINUTE_SECONDS`` (so ``rate(1 hour)`` is 5 minutes when that is 5);
the first run is one period after the player first sees a schedule (or sees its
expression change), as for a schedule created then. ``cron(...)`` and ``at(...)``
expressions are left alone (and said so once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.adapters.aws import aws_client
from shared.settings import Settings
from shared.topology import rate_minutes

log = logging.getLogger(__name__)


@dataclass
class SchedulePlayer:
    settings: Settings
    prefix: str  # the stage's schedules: dhow-<stage>-
    clock: Callable[[], float] = time.monotonic
    next_due: dict[str, tuple[str, float]] = field(default_factory=dict)  # name -> (expr, t)
    fired: dict[str, int] = field(default_factory=dict)
    _skipped: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._scheduler = aws_client("scheduler", self.settings)
        self._sqs = aws_client("sqs", self.settings)

    def tick(self) -> list[str]:
        """Send every due schedule's message; returns the names of those sent."""
        sent: list[str] = []
        now = self.clock()
        listed = self._scheduler.list_schedules(NamePrefix=self.prefix).get("Schedules", [])
        for summary in listed:
            name = summary["Name"]
            s = self._scheduler.get_schedule(Name=name)
            if s.get("State") != "ENABLED":
                continue
            minutes = rate_minutes(s["ScheduleExpression"])
            if minutes is None:
                if name not in self._skipped:
                    log.warning("%s: %s is not played locally", name, s["ScheduleExpression"])
                    self._skipped.add(name)
                continue
            period = minutes * self.settings.local_minute_seconds
            expression, due = self.next_due.get(name, ("", 0.0))
            if expression != s["ScheduleExpression"]:  # new, or updated: starts afresh
                due = now + period
                self.next_due[name] = (s["ScheduleExpression"], due)
            if now < due:
                continue
            target = s["Target"]
            queue = target["Arn"].rsplit(":", 1)[1]
            url = self._sqs.get_queue_url(QueueName=queue)["QueueUrl"]
            self._sqs.send_message(QueueUrl=url, MessageBody=target.get("Input", "{}"))
            self.next_due[name] = (s["ScheduleExpression"], due + period)
            self.fired[name] = self.fired.get(name, 0) + 1
            sent.append(name)
            log.info("schedule %s sent to %s", name, queue)
        return sent
