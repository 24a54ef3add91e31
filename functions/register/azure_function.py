"""Azure Functions entry point of register.

One Azure ML ``RunStatusChanged`` event (Event Grid schema) of a
training run that ended.

A message that raises is retried by the Functions host and moved to
``<queue>-poison`` after ``maxDequeueCount`` deliveries (host.json); nothing is dropped.
"""

from __future__ import annotations

import azure.functions as func

from functions.register.core import handle


def main(msg: func.QueueMessage) -> None:
    handle(msg.get_body())
