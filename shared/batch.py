"""Partial-batch processing for SQS-triggered functions.

Each message is handled on its own; the ids of the ones that failed are
returned as ``batchItemFailures``, so SQS retries only those, and a message
that keeps failing reaches the dead-letter queue by the queue's redrive policy.
Nothing is dropped: an unparseable message fails too and so ends in the DLQ.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any, TypedDict

from shared.errors import DhowError, EventParseError
from shared.events import PipelineEvent
from shared.triggers import SqsMessage, parse_bus_event, sqs_messages

log = logging.getLogger(__name__)


class ItemFailure(TypedDict):
    itemIdentifier: str


class BatchResponse(TypedDict):
    batchItemFailures: list[ItemFailure]


def process_sqs_batch(
    event: Mapping[str, Any], handle: Callable[[SqsMessage], None]
) -> BatchResponse:
    """Run ``handle`` on every message; report the failed ones for retry."""
    failures: list[ItemFailure] = []
    for message in sqs_messages(event):
        try:
            handle(message)
        except DhowError as exc:
            log.warning(
                "message failed: %s",
                exc,
                extra={"message_id": message.message_id, "reason": exc.reason},
            )
            failures.append({"itemIdentifier": message.message_id})
        except Exception:
            # Unknown failures are bugs; keep the traceback, keep the message.
            log.exception("message failed", extra={"message_id": message.message_id})
            failures.append({"itemIdentifier": message.message_id})
    return {"batchItemFailures": failures}


def expect_event[E: PipelineEvent](body: str | bytes, expected: type[E]) -> E:
    """The pipeline event in ``body``, which must be of type ``expected``: any other
    (a mis-wired rule) fails its message, so it ends in the DLQ (poison queue)."""
    parsed = parse_bus_event(body)
    if not isinstance(parsed, expected):
        raise EventParseError(
            f"this function takes {expected.event_type}, and was sent {parsed.event_type}",
            hint="check the event rule that feeds its queue",
        )
    return parsed
