"""Azure Functions entry point of deploy.

One ``ModelApproved`` (or rollback ``DriftDetected``) CloudEvent, or the
local router's end-of-rollout notification.

A message that raises is retried by the Functions host and moved to
``<queue>-poison`` after ``maxDequeueCount`` deliveries (host.json); nothing is dropped.
"""

from __future__ import annotations

import azure.functions as func

from functions.deploy.core import handle


def main(msg: func.QueueMessage) -> None:
    handle(msg.get_body())
