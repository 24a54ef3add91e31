"""Azure Functions entry point of validate.

One ``DatasetIngested`` CloudEvent from the pipeline topic's queue.

A message that raises is retried by the Functions host and moved to
``<queue>-poison`` after ``maxDequeueCount`` deliveries (host.json); nothing is dropped.
"""

from __future__ import annotations

import azure.functions as func

from functions.validate.core import handle


def main(msg: func.QueueMessage) -> None:
    handle(msg.get_body())
