"""A record of the AWS API calls each function makes, for checking them against its IAM role.

When ``DHOW_AWS_CALL_LOG`` names a file, every client ``aws_client`` builds appends one
JSON line per call to it: the function whose code made it, the service, the operation,
the parameters that name its resource, and the HTTP status of the answer. The
integration tests set it and then evaluate each recorded call against that function's
generated policy (tests/integration/test_aws_iam_measured.py). Unset, clients are left
alone: nothing in the cloud records anything.

Which function is calling comes from ``calling_function``, a context variable the local
runner sets around each invocation (and around the polling that Lambda's event-source
mapping does with the function's own role), or else from the function that was being
loaded when the client was built: s3transfer runs ``upload_file``'s requests in worker
threads, which do not inherit the context.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import FrameType
from typing import Any

CALL_LOG_ENV = "DHOW_AWS_CALL_LOG"

calling_function: ContextVar[str | None] = ContextVar("calling_function", default=None)

# Parameters that name what a call acts on; the rest (bodies, metadata) is not recorded.
_NAMING_PARAMS = frozenset(
    {
        "Bucket",
        "Key",
        "Prefix",
        "CopySource",
        "QueueUrl",
        "TableName",
        "EventBusName",
        "TrainingJobName",
        "ProcessingJobName",
        "ModelPackageGroupName",
        "ModelPackageName",
        "ModelPackageArn",
        "ModelName",
        "EndpointName",
        "EndpointConfigName",
        "ResourceArn",
        "RoleArn",
        "ExecutionRoleArn",
        "FunctionName",
        "Qualifier",
        "Name",
        "applicationName",
        "deploymentGroupName",
        "deploymentConfigName",
        "deploymentId",
        "TopicArn",
        "Namespace",
        "ServiceCode",
    }
)
# Frames of the SDK, of the AWS adapters and of the ports' shared methods (``exists`` is
# ``head`` on every store), skipped to find whose code made a call.
_PLUMBING = (
    "botocore.",
    "boto3.",
    "s3transfer.",
    "urllib3.",
    "shared.adapters.aws",
    "shared.ports",
)
_lock = threading.Lock()


def _origin() -> str | None:
    """The module whose code made the call: the first frame outside the SDK and the AWS
    adapters (``dhow_local.training``, the local stand-in for SageMaker, is not skipped:
    its calls are those a managed service makes in the cloud, not the function)."""
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if not module.startswith(_PLUMBING):
            return module
        frame = frame.f_back
    return None


@contextmanager
def calls_of(function: str) -> Iterator[None]:
    """Attribute the AWS calls made inside the block to ``function``."""
    token = calling_function.set(function)
    try:
        yield
    finally:
        calling_function.reset(token)


def _naming(params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in params.items():
        if k in _NAMING_PARAMS and isinstance(v, str | dict):
            out[k] = v
    if "Entries" in params:  # PutEvents: each entry names its bus
        out["EventBusNames"] = sorted(
            {str(e.get("EventBusName", "default")) for e in params["Entries"]}
        )
    if "Tags" in params or "tags" in params:  # creating with tags needs the tagging action too
        out["Tagged"] = True
    for arn_key in ("RoleArn", "ExecutionRoleArn"):
        nested = params.get("PrimaryContainer") or {}
        if arn_key not in out and isinstance(nested, dict) and arn_key in nested:
            out[arn_key] = nested[arn_key]
    return out


def instrument(client: Any) -> Any:
    """Hook ``client`` so that its calls are appended to the call log (when one is set)."""
    path = os.environ.get(CALL_LOG_ENV)
    if not path:
        return client
    built_for = calling_function.get()
    service = client.meta.service_model.service_name

    def keep_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        # provide-client-params carries the caller's own parameters; after-call does not.
        context["dhow_params"] = _naming(params)
        context["dhow_origin"] = _origin()

    def record(
        http_response: Any, parsed: dict[str, Any], model: Any, context: dict[str, Any], **_: Any
    ) -> None:
        function = calling_function.get() or built_for
        if function is None:  # the platform's own calls (provisioning, the scheduler)
            return
        line = {
            "function": function,
            "service": service,
            "operation": model.name,
            "params": context.get("dhow_params", {}),
            "origin": context.get("dhow_origin"),
            "status": getattr(http_response, "status_code", None),
            "error": parsed.get("Error", {}).get("Code"),
        }
        with _lock, open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")

    client.meta.events.register("provide-client-params", keep_params)
    client.meta.events.register("after-call", record)
    return client
