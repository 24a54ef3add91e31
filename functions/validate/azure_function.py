"""Azure Functions entry points of validate.

- ``main``: one ``DatasetIngested`` CloudEvent, validation job end or sweep request from
  the validate queue.
- ``on_timer``: each hour, a sweep request per dataset to the validate queue, so each
  dataset's sweep has its own retries (``functions.validate.core.sweep_requests``).

A message that raises is retried by the Functions host and moved to
``<queue>-poison`` after ``maxDequeueCount`` deliveries (host.json); nothing is dropped.
"""

from __future__ import annotations

import azure.functions as func

from functions.validate.core import handle, sweep_requests


def main(msg: func.QueueMessage) -> None:
    handle(msg.get_body())


def on_timer(timer: func.TimerRequest, requests: func.Out[list[str]]) -> None:
    requests.set(sweep_requests())
