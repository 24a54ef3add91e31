"""A record of the Azure Storage data-plane calls each function makes, for checking them
against the role assignments the stack gives the Function App's identity.

When ``DHOW_AZURE_CALL_LOG`` names a file, every storage client ``azure_clients`` builds
appends one JSON line per HTTP response to it: the function whose code made the call, the
storage service, the REST operation the request is (named as the Azure Storage REST
reference names it, so that shared/cloud_facts/azure-rbac.yaml can say which data action
it needs), the container, blob, queue or table it acts on, and the status. Unset, clients
are left alone: nothing in the cloud records anything.

The seam is azure-core's ``raw_response_hook`` keyword, which the Blob and Queue clients
(``StorageResponseHook``) and the Tables client (``CustomHookPolicy``) all honour. The
``per_call_policies`` keyword would be the natural seam, but these three SDKs build their
own policy lists and ignore it (azure/storage/blob/_shared/base_client.py
``_create_pipeline``, azure/data/tables/_base_client.py ``_configure_policies``).

Which function is calling comes from the same context variable the AWS record uses
(``shared.adapters.aws_calls.calling_function``, set by ``calls_of`` in the local
runners), or else from the function that was being loaded when the client was built.
"""

from __future__ import annotations

import json
import os
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any, Literal
from urllib.parse import parse_qs, unquote, urlparse

from shared.adapters.aws_calls import calling_function
from shared.constants import STAGE

CALL_LOG_ENV = "DHOW_AZURE_CALL_LOG"

Service = Literal["blob", "queue", "table"]

# Frames of the SDK and of the Azure adapters, skipped to find whose code made a call.
_PLUMBING = (
    "azure.",
    "requests.",
    "urllib3.",
    "http.",
    "shared.adapters.azure",
)
# The local stand-in for Event Grid (dhow_local.event_grid): its queue sends are what
# Event Grid does in the cloud after the function published one event to the pipeline
# topic, so they are the function's (origin) as played by the grid, matched by qualname.
_EVENT_GRID_PLAYERS = ("LocalEventGrid.", "LocalEventGridBus.")
_lock = threading.Lock()


def _caller() -> tuple[str | None, str | None]:
    """(the module whose code made the call, ``event-grid`` when the local Event Grid
    stand-in is the one sending)."""
    frame: FrameType | None = sys._getframe(1)
    origin: str | None = None
    played: str | None = None
    while frame is not None:
        module = str(frame.f_globals.get("__name__", ""))
        if frame.f_code.co_qualname.startswith(_EVENT_GRID_PLAYERS):
            played = "event-grid"
        elif origin is None and not module.startswith(_PLUMBING):
            origin = module
        frame = frame.f_back
    return origin, played


def _segments(url: str) -> tuple[list[str], dict[str, str]]:
    parts = urlparse(url)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    # Azurite (and any emulator) serves accounts path-style: /<account>/<resource>.
    if not (parts.hostname or "").endswith(".core.windows.net") and segments:
        segments = segments[1:]
    query = {k.lower(): v[0] for k, v in parse_qs(parts.query).items()}
    return segments, query


def _blob_operation(
    method: str, segments: list[str], query: dict[str, str], headers: dict[str, str]
) -> str:
    comp, restype = query.get("comp", ""), query.get("restype", "")
    if not segments:
        return "List Containers" if comp == "list" else "Get Blob Service Properties"
    if len(segments) == 1 or restype == "container":
        if method == "PUT":
            return "Set Container Metadata" if comp == "metadata" else "Create Container"
        if method == "DELETE":
            return "Delete Container"
        if comp == "list":
            return "List Blobs"
        return "Get Container Metadata" if comp == "metadata" else "Get Container Properties"
    if method == "PUT":
        by_comp = {
            "block": "Put Block",
            "blocklist": "Put Block List",
            "metadata": "Set Blob Metadata",
            "properties": "Set Blob Properties",
            "copy": "Abort Copy Blob",
            "tags": "Set Blob Tags",
            "lease": "Lease Blob",
            "tier": "Set Blob Tier",
        }
        if comp:
            return by_comp.get(comp, f"PUT comp={comp}")
        if "x-ms-copy-source" in headers:
            sync = headers.get("x-ms-requires-sync", "").lower() == "true"
            return "Copy Blob From URL" if sync else "Copy Blob"
        return "Put Blob"
    if method == "DELETE":
        return "Delete Blob"
    by_comp = {
        "blocklist": "Get Block List",
        "metadata": "Get Blob Metadata",
        "tags": "Get Blob Tags",
    }
    if comp:
        return by_comp.get(comp, f"GET comp={comp}")
    return "Get Blob Properties" if method == "HEAD" else "Get Blob"


def _queue_operation(method: str, segments: list[str], query: dict[str, str]) -> str:
    comp = query.get("comp", "")
    if not segments:
        return "List Queues" if comp == "list" else "Get Queue Service Properties"
    if len(segments) == 1:
        if comp == "metadata":
            return "Set Queue Metadata" if method == "PUT" else "Get Queue Metadata"
        if comp == "acl":
            return "Set Queue ACL" if method == "PUT" else "Get Queue ACL"
        return {"PUT": "Create Queue", "DELETE": "Delete Queue"}.get(method, "Get Queue Metadata")
    if len(segments) == 2:  # <queue>/messages
        if method == "POST":
            return "Put Message"
        if method == "DELETE":
            return "Clear Messages"
        return "Peek Messages" if query.get("peekonly", "").lower() == "true" else "Get Messages"
    return "Update Message" if method == "PUT" else "Delete Message"


def _table_operation(method: str, first: str, headers: dict[str, str]) -> str:
    if first == "Tables":
        return "Create Table" if method == "POST" else "Query Tables"
    if first.startswith("Tables("):
        return "Delete Table"
    if first == "$batch":
        return "Performing Entity Group Transactions"
    conditional = "if-match" in headers
    if method == "POST":
        return "Insert Entity"
    if method == "PUT":
        return "Update Entity" if conditional else "Insert Or Replace Entity"
    if method in ("PATCH", "MERGE"):
        return "Merge Entity" if conditional else "Insert Or Merge Entity"
    if method == "DELETE":
        return "Delete Entity"
    return "Query Entities"


def _table_name(first: str) -> str:
    if first.startswith("Tables('"):
        return first[len("Tables('") :].split("'", 1)[0]
    return first.split("(", 1)[0]


def describe(service: Service, method: str, url: str, headers: dict[str, str]) -> dict[str, Any]:
    """The REST operation one request is, and the resource it acts on."""
    method = method.upper()
    lowered = {k.lower(): v for k, v in headers.items()}
    segments, query = _segments(url)
    out: dict[str, Any] = {"method": method}
    for key in ("comp", "restype"):
        if key in query:
            out[key] = query[key]
    if service == "blob":
        out["operation"] = _blob_operation(method, segments, query, lowered)
        if segments:
            out["container"] = segments[0]
        if len(segments) > 1:
            out["blob"] = "/".join(segments[1:])
        if "x-ms-copy-source" in lowered:
            source, _ = _segments(lowered["x-ms-copy-source"])
            out["copy_source_container"] = source[0] if source else ""
    elif service == "queue":
        out["operation"] = _queue_operation(method, segments, query)
        if segments:
            out["queue"] = segments[0]
    else:
        first = segments[0] if segments else ""
        out["operation"] = _table_operation(method, first, lowered)
        name = _table_name(first)
        if name and name not in ("Tables", "$batch"):
            out["table"] = name
    return out


def _recorder(service: Service, path: str) -> Callable[[Any], None]:
    built_for = calling_function.get()
    # The stage names the resources; the check maps them to the topology's logical names.
    stage = os.environ.get(STAGE, "local")

    def record(response: Any) -> None:
        function = calling_function.get() or built_for
        if function is None:  # the platform's own calls (provisioning, the blob watcher)
            return
        request = response.http_request
        origin, played = _caller()
        line = {
            "function": function,
            "stage": stage,
            "service": service,
            **describe(service, request.method, request.url, dict(request.headers)),
            "status": response.http_response.status_code,
            "origin": origin,
            "played": played,
        }
        with _lock, open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line, sort_keys=True) + "\n")

    return record


def recording(service: Service) -> dict[str, Any]:
    """The client keywords that record ``service``'s calls (none when no log is set)."""
    path = os.environ.get(CALL_LOG_ENV)
    if not path:
        return {}
    return {"raw_response_hook": _recorder(service, path)}
