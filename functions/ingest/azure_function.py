"""Azure Functions entry point of ingest.

One Storage queue message holding Event Grid's ``BlobCreated``
(Event Grid schema), as the stack's storage subscription delivers it.

A message that raises is retried by the Functions host and moved to
``<queue>-poison`` after ``maxDequeueCount`` deliveries (host.json); nothing is dropped.
"""

from __future__ import annotations

import azure.functions as func

from functions.ingest.core import handle


def main(msg: func.QueueMessage) -> None:
    handle(msg.get_body())
