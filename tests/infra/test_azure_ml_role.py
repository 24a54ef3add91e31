"""The Function App's custom role in the Azure ML workspace covers exactly what its
azure-ai-ml calls send: the launchers and the rollout run against azure-ai-ml 1.35.2 with
a recording transport that answers as ARM would (Azure ML cannot run here), and each
recorded operation is checked against the documented operation-to-action table
(fact azure.ml.workspace_operation_actions) and the role the stack defines."""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from azure.ai.ml import MLClient
from azure.core.credentials import AccessToken, AccessTokenInfo
from azure.core.pipeline.transport import RequestsTransport, RequestsTransportResponse

from infra.azure import roles
from infra.config import StackConfig
from infra.policy.rules import Res, iam_violations
from shared.adapters.azure_ml import (
    AzureMLJobConfig,
    AzureMLTrainingConfig,
    AzureMLTrainingLauncher,
    AzureMLValidationJobs,
)
from shared.adapters.azure_serving import OnlineEndpointTraffic, RolloutState
from shared.cloud_facts import fact, value
from shared.events import ObjectRef
from shared.ports import DeploymentPlan, TrainingJobRequest, ValidationJobRequest
from tests.infra.harness import SUBSCRIPTION, Program

WS = (
    "/subscriptions/sub/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/ws"
)
ARM = "https://management.azure.com"
ROLE_DEF = "azure-native:authorization:RoleDefinition"
ASSIGNMENT = "azure-native:authorization:RoleAssignment"


class _Credential:
    def get_token(self, *_: Any, **__: Any) -> AccessToken:
        return AccessToken("token", 9_999_999_999)

    def get_token_info(self, *_: Any, **__: Any) -> AccessTokenInfo:
        return AccessTokenInfo("token", 9_999_999_999)


def _answer(method: str, url: str, body: Any) -> tuple[int, Any]:
    """What ARM (and the SAS'd blob) answer: nothing exists yet, creates succeed."""
    parts = urlsplit(url)
    path = parts.path[len(WS) :] if parts.path.startswith(WS) else parts.path
    if parts.netloc.endswith(".blob.core.windows.net"):
        if method == "HEAD":
            return 404, None
        return (200 if "comp=metadata" in parts.query else 201), None
    if method == "GET" and path == "":
        return 200, {"id": WS, "name": "ws", "location": "uaenorth", "properties": {}}
    if method == "GET" and re.fullmatch(r"/(jobs|codes/[^/]+/versions)/[^/]+", path):
        return 404, {"error": {"code": "NotFound", "message": "none"}}
    if method == "GET" and re.fullmatch(r"/codes/[^/]+/versions|/onlineEndpoints/[^/]+/\w+", path):
        return 200, {"value": []}
    if method == "POST" and re.fullmatch(r"/jobs/[^/]+/cancel", path):
        return 202, None  # accepted; the sweep does not poll the cancellation
    if method == "POST" and path.endswith("/startPendingUpload"):
        blob = "https://acct.blob.core.windows.net/c/LocalUpload/x"
        return 200, {
            "blobReferenceForConsumption": {
                "blobUri": blob,
                "credential": {"credentialType": "SAS", "sasUri": f"{blob}?sig=s"},
            },
            "pendingUploadId": "p",
            "pendingUploadType": "TemporaryBlobReference",
        }
    if method == "GET" and re.fullmatch(r"/onlineEndpoints/[^/]+", path):
        return 200, {
            "id": parts.path,
            "name": path.rsplit("/", 1)[1],
            "location": "uaenorth",
            "kind": "Managed",
            "identity": {"type": "SystemAssigned"},
            "properties": {"authMode": "AADToken", "provisioningState": "Succeeded"},
        }
    if method == "GET" and re.fullmatch(r"/onlineEndpoints/.+/operationsStatus/[^/]+", path):
        return 200, {"status": "Succeeded"}
    if method == "GET" and path in _CREATED:
        return 200, _CREATED[path]
    if method == "PUT":
        sent = json.loads(body)
        name = path.rsplit("/", 1)[1]
        if "/deployments/" in path:
            # ARM fills in the default scale settings the SDK reads back.
            sent.setdefault("properties", {}).setdefault("scaleSettings", {"scaleType": "Default"})
        resource = {"id": parts.path, "name": name, **sent}
        resource.setdefault("properties", {})["provisioningState"] = "Succeeded"
        _CREATED[path] = resource
        if path.startswith("/onlineEndpoints/"):
            # A long-running create: 201 Created, still Creating, with the status resource
            # to poll (the Online Endpoints / Deployments "Create Or Update" REST pages).
            return 201, {
                **resource,
                "properties": {**resource["properties"], "provisioningState": "Creating"},
            }
        return 200, resource
    return 404, {"error": {"code": "NotFound", "message": f"unrouted {method} {path}"}}


# What ARM holds after a PUT (its GET answers), per path under the workspace.
_CREATED: dict[str, Any] = {}


def _async_headers(method: str, url: str, status: int) -> dict[str, str]:
    """ARM's answer to a long-running create: Azure-AsyncOperation names the operation's
    status, Location its result, both under the resource being created."""
    parts = urlsplit(url)
    if method != "PUT" or status != 201:
        return {}
    base = f"{ARM}{parts.path}"
    query = "api-version=2023-04-01-preview"
    return {
        "Azure-AsyncOperation": f"{base}/operationsStatus/op-1?{query}",
        "Location": f"{base}/operationResults/op-1?{query}",
        "x-ms-async-operation-timeout": "PT1H",
    }


class _Response(RequestsTransportResponse):  # type: ignore[misc]  # untyped in azure-core
    """A requests-backed response with ``json()``, as azure-ai-ml reads some answers."""

    def json(self) -> Any:
        return json.loads(self.body() or b"null")

    def iter_bytes(self, **_: Any) -> Iterator[bytes]:
        yield self.body()

    def read(self) -> bytes:
        return bytes(self.body())


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Every request azure-core sends (ARM and storage alike), answered by ``_answer``."""
    calls: list[tuple[str, str]] = []
    _CREATED.clear()

    def send(self: RequestsTransport, request: Any, **_: Any) -> _Response:
        calls.append((request.method, request.url))
        body = request.body if isinstance(request.body, str | bytes) else None
        status, payload = _answer(request.method, request.url, body)
        raw = requests.Response()
        raw.status_code = status
        raw._content = b"" if payload is None else json.dumps(payload).encode()
        raw.headers.update(
            {"Content-Type": "application/json"}
            if payload is not None
            else {"ETag": '"e"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"}
        )
        raw.headers.update(_async_headers(request.method, request.url, status))
        raw.reason = "canned"
        return _Response(request, raw)

    monkeypatch.setattr(RequestsTransport, "send", send)
    # The pollers wait azure-ai-ml's 5 s between polls; here nothing needs the wait.
    monkeypatch.setattr(RequestsTransport, "sleep", lambda self, _s: None)
    return calls


SHA = "cd34" * 16


def _code(tmp_path: Path) -> str:
    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "a.py").write_text("x = 1\n")
    return str(tmp_path / "code")


def _validation(jobs: Any, code: str) -> AzureMLValidationJobs:
    cfg = AzureMLJobConfig(
        compute="dhow-prod-cpu",
        environment="azureml:dhow-validate:1",
        staging_datastore="staging",
        stage="prod",
        code=code,
    )
    return AzureMLValidationJobs(jobs, cfg)


VALIDATION = ValidationJobRequest(
    dataset="customers",
    sha256=SHA,
    spec_version="3",
    source=ObjectRef(container="raw", key="a.csv"),
    staged=ObjectRef(container="staging", key="b.csv"),
    size_bytes=10,
    correlation_id="u-7",
)
TRAINING = TrainingJobRequest(
    dataset="customers",
    sha256=SHA,
    spec_version="3",
    curated=ObjectRef(container="curated", key="c.csv"),
    target="y",
    task="classification",
    instance_types=("Standard_NC4as_T4_v3",),
    trainer_version="1",
    correlation_id="u-7",
)
PLAN = DeploymentPlan(
    dataset="customers",
    model_version=2,
    previous_version=1,
    artifact="x",
    artifact_sha256="ab" * 32,
    image="",
    strategy="canary",
    step_percent=10,
    interval_minutes=5,
    error_rate_threshold=0.05,
    p99_latency_ms=2000,
    min_requests=20,
)


def _operation(method: str, url: str) -> str:
    """``<METHOD> <path under the workspace>`` with names as the table's placeholders."""
    path = urlsplit(url).path[len(WS) :]
    names = iter(("{name}", "{version}"))
    out = []
    for i, seg in enumerate(path.strip("/").split("/") if path else []):
        if i % 2 == 0 or seg in ("providers", "Microsoft.Insights", "metrics"):
            out.append(seg)
        elif out and out[-1] == "deployments":
            out.append("{deployment}")
        elif out and out[-1] in ("operationsStatus", "operationResults"):
            out.append("{operation}")
        else:
            out.append(next(names, "{version}"))
    return f"{method} /{'/'.join(out)}"


def _record_every_call(tmp_path: Path, recorded: list[tuple[str, str]]) -> list[str]:
    ml = MLClient(_Credential(), "sub", "rg", "ws")
    code = _code(tmp_path)
    validation = _validation(ml.jobs, code)
    job = validation.launch(VALIDATION)
    # The sweep of validations whose end event never came: read the job, stop it.
    validation.state(job)
    validation.stop(job)
    training = AzureMLTrainingConfig(
        compute="dhow-prod-gpu",
        environment="azureml:dhow-train:1",
        curated_datastore="curated",
        models_datastore="models",
        models_container="models",
        name_prefix="dhow-prod",
        code=code,
    )
    AzureMLTrainingLauncher(ml.jobs, training).launch(TRAINING)
    traffic = OnlineEndpointTraffic(
        ml,
        stage="prod",
        environment="azureml:dhow-serve:1",
        instance_type="Standard_DS3_v2",
        code_dir=code,
        scoring_script="a.py",
        environment_variables={},
    )
    traffic.prepare(PLAN)
    # prepare only starts the deployment; azure-core's poller polls it on its own thread
    # (as it would in the Function's worker), and the rollout checks read its state.
    for thread in threading.enumerate():
        if thread.name.startswith("LROPoller("):
            thread.join(timeout=10)
    assert traffic.provisioning("customers", PLAN.model_version) == "Succeeded"
    traffic.set("customers", {1: 90, 2: 10}, RolloutState())
    sas = value("azure.ml.code_upload_sas")["sas_query_key"]
    ops = []
    for method, url in recorded:
        parts = urlsplit(url)
        if parts.netloc.endswith(".blob.core.windows.net"):
            # fact("azure.ml.code_upload_sas"): authorized by the SAS, not by a role.
            assert sas in parse_qs(parts.query), url
            continue
        assert url.startswith(ARM + WS), url
        ops.append(_operation(method, url))
    # The deployer's metrics read (AzureMonitorEndpointMetrics.request) goes to ARM too.
    ops.append("GET /onlineEndpoints/{name}/providers/Microsoft.Insights/metrics")
    return ops


def test_the_workspace_role_covers_every_operation_the_adapters_send(
    tmp_path: Path, recorded: list[tuple[str, str]]
) -> None:
    table = value("azure.ml.workspace_operation_actions")
    ops = _record_every_call(tmp_path, recorded)
    assert {"PUT /jobs/{name}", "PUT /onlineEndpoints/{name}/deployments/{deployment}"} <= set(ops)
    unknown = sorted({op for op in ops if op not in table})
    assert unknown == [], "add them, with their action, to azure.ml.workspace_operation_actions"
    granted = set(roles.workspace_role_actions())
    assert sorted({table[op] for op in ops} - granted) == []


def test_every_action_of_the_role_is_an_operation_microsoft_documents() -> None:
    # ARM refuses the whole role (400 InvalidActionOrNotAction) for one unknown action.
    documented = value("azure.rbac.documented_operations")
    known = {op for ops in documented.values() for op in ops}
    actions = roles.workspace_role_actions()
    assert [a for a in actions if a not in known] == []
    assert {a.split("/", 1)[0] for a in actions} <= set(documented)


def test_the_long_running_creates_are_polled_under_the_role(
    tmp_path: Path, recorded: list[tuple[str, str]]
) -> None:
    # ARM answers the endpoint's and the deployment's PUT with 201 and a status to poll.
    ops = set(_record_every_call(tmp_path, recorded))
    assert {
        "GET /onlineEndpoints/{name}/operationsStatus/{operation}",
        "GET /onlineEndpoints/{name}/deployments/{deployment}/operationsStatus/{operation}",
    } <= ops
    granted = set(roles.workspace_role_actions())
    table = value("azure.ml.workspace_operation_actions")
    assert {
        table["GET /onlineEndpoints/{name}/operationsStatus/{operation}"],
        table["GET /onlineEndpoints/{name}/deployments/{deployment}/operationsStatus/{operation}"],
    } <= granted


def test_the_workspace_role_grants_nothing_no_call_needs(
    tmp_path: Path, recorded: list[tuple[str, str]]
) -> None:
    table = value("azure.ml.workspace_operation_actions")
    needed = {table[op] for op in _record_every_call(tmp_path, recorded)}
    actions = roles.workspace_role_actions()
    assert sorted(set(actions) - needed) == []
    # fact("azure.rbac.custom_role_definition"): no wildcard, so nothing future is granted.
    assert [a for a in actions if "*" in a] == []


def test_the_validation_launcher_submits_its_job_through_the_sdk(
    tmp_path: Path, recorded: list[tuple[str, str]]
) -> None:
    ml = MLClient(_Credential(), "sub", "rg", "ws")
    _validation(ml.jobs, _code(tmp_path)).launch(VALIDATION)
    assert ("PUT", "jobs") in {(m, urlsplit(u).path.split("/")[-2]) for m, u in recorded}


def _app_roles(program: Program) -> tuple[Any, list[Any]]:
    (definition,) = program.of_type(ROLE_DEF)
    app = [a for a in program.of_type(ASSIGNMENT) if a.inputs["principalId"] == "app-principal"]
    return definition, app


def test_the_stack_defines_the_role_at_the_workspace_and_assigns_it_there(
    azure_program: Program, azure_cfg: StackConfig
) -> None:
    definition, app = _app_roles(azure_program)
    (workspace,) = azure_program.of_type("azure-native:machinelearningservices:Workspace")
    guid = roles.workspace_role_guid(SUBSCRIPTION, azure_cfg.stage)
    assert definition.inputs["roleDefinitionId"] == guid
    assert re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", guid)
    # Assignable at the workspace only, and defined there.
    assert definition.inputs["assignableScopes"] == [definition.inputs["scope"]]
    assert definition.inputs["scope"].endswith(f"/{workspace.inputs['workspaceName']}")
    assert definition.inputs["scope"].startswith(f"/subscriptions/{SUBSCRIPTION}/")
    assert definition.inputs["permissions"] == [{"actions": roles.workspace_role_actions()}]
    assert definition.inputs["roleType"] == "CustomRole"
    used = [a for a in app if a.inputs["roleDefinitionId"].endswith(guid)]
    assert len(used) == 1
    (assignment,) = used
    assert assignment.inputs["roleDefinitionId"] == (
        f"/subscriptions/{SUBSCRIPTION}/providers/Microsoft.Authorization/roleDefinitions/{guid}"
    )
    assert assignment.inputs["scope"] == definition.inputs["scope"]
    # The built-in roles it replaces are gone from the app's identity.
    replaced = {"f6c7c914-8db3-469d-8ca1-694a8f32e121", "43d0d8ad-25c7-4714-9337-8ba259a9fe05"}
    assert not [a for a in app if a.inputs["roleDefinitionId"].rsplit("/", 1)[-1] in replaced]


def test_the_role_is_a_distinct_guid_per_stage_and_subscription() -> None:
    guids = {
        roles.workspace_role_guid(sub, stage)
        for sub in (SUBSCRIPTION, "11111111-1111-1111-1111-111111111111")
        for stage in ("prod", "dev")
    }
    assert len(guids) == 4
    assert fact("azure.rbac.custom_role_definition").value["name"] == "guid"


def test_the_policy_pack_passes_the_role_and_refuses_it_with_a_wildcard(
    azure_program: Program,
) -> None:
    definition, _ = _app_roles(azure_program)
    props = dict(definition.inputs)
    assert iam_violations(Res(ROLE_DEF, definition.name, props)) == []
    broad = {**props, "permissions": [{"actions": ["Microsoft.MachineLearningServices/*"]}]}
    assert iam_violations(Res(ROLE_DEF, definition.name, broad))
