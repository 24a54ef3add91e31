"""Azure Functions entry points of drift-check.

- ``on_timer``: each minute, a ``{"dataset": ...}`` request to the drift queue for every
  dataset whose ``drift.schedule`` is due, so each check has its own retries.
- ``main``: one request from the drift queue, one check. A message that raises is
  retried by the Functions host and moved to ``<queue>-poison`` after
  ``maxDequeueCount`` deliveries (host.json); nothing is dropped.
"""

from __future__ import annotations

import azure.functions as func

from functions.drift_check.core import due_requests, handle


def on_timer(timer: func.TimerRequest, requests: func.Out[list[str]]) -> None:
    requests.set(due_requests())


def main(msg: func.QueueMessage) -> None:
    handle(msg.get_body())
