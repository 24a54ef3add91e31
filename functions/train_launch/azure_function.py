"""Azure Functions entry point of train-launch.

One ``DatasetValidated`` (or retrain ``DriftDetected``) CloudEvent; the job runs on
Azure ML (locally: the local training backend).

A message that raises is retried by the Functions host and moved to
``<queue>-poison`` after ``maxDequeueCount`` deliveries (host.json); nothing is dropped.
"""

from __future__ import annotations

import azure.functions as func

from functions.train_launch.core import handle


def main(msg: func.QueueMessage) -> None:
    handle(msg.get_body())
