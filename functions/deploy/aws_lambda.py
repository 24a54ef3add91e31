"""Lambda entry point of deploy: an SQS batch of ``ModelApproved`` events, of the
serving platform's end-of-deployment events (CodeDeploy, SageMaker endpoints) and of
``DriftDetected`` events whose policy is rollback in, partial batch failures out."""

from __future__ import annotations

from typing import Any

from functions.deploy.core import handle
from shared.batch import BatchResponse, process_sqs_batch


def handler(event: dict[str, Any], context: object) -> BatchResponse:
    return process_sqs_batch(event, lambda message: handle(message.body))
