"""The Azure serving side under Pulumi's mocks (issue 15, defect 8): the online endpoint
each dataset's rollout drives, its identity's roles, the app's roles for the rollout, and
the settings the deployer is built from, matched against what the deployer sends."""

from __future__ import annotations

from typing import Any

import pytest

from infra.azure import roles, serving
from infra.config import StackConfig
from shared.adapters.azure_serving import (
    AzureMonitorEndpointMetrics,
    OnlineEndpointTraffic,
    QueueCheckTimer,
    SteppedRolloutDeployer,
    endpoint_name,
)
from shared.cloud_facts import value
from shared.settings import Settings
from shared.wiring import Ports, build_deployer
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore
from tests.infra.harness import Program

ENDPOINT = "azure-native:machinelearningservices:OnlineEndpoint"
ASSIGNMENT = "azure-native:authorization:RoleAssignment"


def app_settings(program: Program) -> dict[str, str]:
    (app,) = program.of_type("azure-native:web:WebApp")
    return {s["name"]: s["value"] for s in app.inputs["siteConfig"]["appSettings"]}


def role(a: Any) -> str:
    return str(a.inputs["roleDefinitionId"]).rsplit("/", 1)[-1]


def test_one_endpoint_per_spec_with_entra_auth_reachable_as_the_workspace_allows(
    azure_program: Program, azure_cfg: StackConfig
) -> None:
    access = value("azure.serving.endpoint_public_network_access")
    endpoints = {e.inputs["endpointName"]: e for e in azure_program.of_type(ENDPOINT)}
    assert set(endpoints) == {endpoint_name(azure_cfg.stage, s.name) for s in azure_cfg.specs}
    (workspace,) = azure_program.of_type("azure-native:machinelearningservices:Workspace")
    # No private endpoint for the workspace exists, so "Disabled" would leave no way in.
    assert not azure_program.of_type("azure-native:network:PrivateEndpoint")
    for e in endpoints.values():
        assert e.inputs["location"] == azure_cfg.location
        assert e.inputs["workspaceName"] == workspace.inputs["workspaceName"]
        assert e.inputs["kind"] == "Managed"
        assert e.inputs["identity"] == {"type": "SystemAssigned"}
        assert e.inputs["properties"]["authMode"] == access["auth_mode"] == "AADToken"
        assert e.inputs["properties"]["publicNetworkAccess"] == "Enabled"
    assert set(azure_program.outputs["serve_urls"]) == {s.name for s in azure_cfg.specs}


def test_the_endpoints_identity_reads_models_and_the_registry_and_writes_captures(
    azure_program: Program, azure_cfg: StackConfig
) -> None:
    topo = azure_cfg.topology
    for spec in azure_cfg.specs:
        mine = [
            a
            for a in azure_program.of_type(ASSIGNMENT)
            if a.inputs["principalId"] == f"endpoint-{spec.name}-principal"
        ]
        granted = {(role(a), a.inputs["scope"].rsplit("/", 1)[-1]) for a in mine}
        assert granted == {
            (serving.BLOB_READER, topo.bucket("models").name),
            (serving.BLOB_CONTRIBUTOR, topo.bucket("capture").name),
            (serving.TABLE_READER, "dhowuaeprodlineage"),
        }
    documented = value("azure.rbac.builtin_role_data_actions")
    for r in (serving.BLOB_READER, serving.BLOB_CONTRIBUTOR, serving.TABLE_READER):
        assert r in documented


def test_the_app_may_read_each_endpoints_metrics_and_send_its_checks(
    azure_program: Program, azure_cfg: StackConfig
) -> None:
    app = [
        a for a in azure_program.of_type(ASSIGNMENT) if a.inputs["principalId"] == "app-principal"
    ]
    # The metrics are read under the app's custom workspace role (the endpoints are the
    # workspace's children; tests/infra/test_azure_ml_role.py), not Monitoring Reader.
    assert "Microsoft.Insights/Metrics/Read" in roles.workspace_role_actions()
    assert not [a for a in app if role(a) == "43d0d8ad-25c7-4714-9337-8ba259a9fe05"]
    deploy = azure_cfg.topology.queue("deploy").name
    senders = {a.inputs["scope"].rsplit("/", 1)[-1] for a in app if role(a) == serving.QUEUE_SENDER}
    # Put Message is messages/add/action, which only the Sender (or Contributor) grants.
    documented = value("azure.rbac.builtin_role_data_actions")[serving.QUEUE_SENDER]
    assert documented["dataActions"] == [
        "Microsoft.Storage/storageAccounts/queueServices/queues/messages/add/action"
    ]
    assert deploy in senders


def test_the_deployer_built_from_the_apps_settings_drives_the_stacks_endpoints(
    azure_program: Program, azure_cfg: StackConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {k: v for k, v in app_settings(azure_program).items() if k.startswith("DHOW_")}
    settings = Settings.from_env(env)
    assert settings.azureml_serving_instance_type == azure_cfg.azure_serving_instance_type
    ports = Ports(MemoryStore(), MemoryBus(), MemoryLineage())
    import shared.adapters.azure as azure_adapters

    class Queue:
        def send_message(self, *_a: Any, **_k: Any) -> None: ...

    class Clients:
        def queue(self, _name: str) -> Queue:
            return Queue()

    monkeypatch.setattr(azure_adapters, "azure_clients", lambda _s: Clients())
    deployer = build_deployer(settings, ports)
    assert isinstance(deployer, SteppedRolloutDeployer)
    traffic = deployer._traffic
    assert isinstance(traffic, OnlineEndpointTraffic)
    assert isinstance(deployer._metrics, AzureMonitorEndpointMetrics)
    assert isinstance(deployer._timer, QueueCheckTimer)
    from shared.ports import DeploymentPlan

    plan = DeploymentPlan(
        dataset=azure_cfg.specs[0].name,
        model_version=3,
        previous_version=2,
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
    entity = traffic.deployment_entity(plan)
    endpoints = {e.inputs["endpointName"] for e in azure_program.of_type(ENDPOINT)}
    assert entity.endpoint_name in endpoints
    assert entity.instance_type == azure_cfg.azure_serving_instance_type
    (serve_env,) = [
        e
        for e in azure_program.of_type("azure-native:machinelearningservices:EnvironmentVersion")
        if e.inputs["name"] == "dhow-serve"
    ]
    assert entity.environment == f"azureml:dhow-serve:{serve_env.inputs['version']}"
    # The scoring script builds its ports from these: the stack's data account, pinned.
    assert (
        entity.environment_variables["DHOW_AZURE_STORAGE_ACCOUNT"]
        == env["DHOW_AZURE_STORAGE_ACCOUNT"]
    )
    assert entity.environment_variables["DHOW_AZURE_LOCATION"] == azure_cfg.location
    assert entity.environment_variables["DHOW_SERVE_MODEL_VERSION"] == "3"


def test_the_serve_environment_runs_the_scoring_scripts_server(azure_program: Program) -> None:
    contract = value("azure.serving.scoring_script_contract")
    (serve_env,) = [
        e
        for e in azure_program.of_type("azure-native:machinelearningservices:EnvironmentVersion")
        if e.inputs["name"] == "dhow-serve"
    ]
    conda = serve_env.inputs["properties"]["condaFile"]
    assert f"- {contract['server_package']}" in conda
    assert "scikit-learn==" in conda
    # The server pins pydantic to ~=2.12.0: the environment's pin must be in that range.
    (pydantic,) = [line for line in conda.splitlines() if "- pydantic==" in line]
    assert pydantic.strip().startswith("- pydantic==2.12.")


def test_a_later_pulumi_up_never_puts_an_endpoint_so_the_live_traffic_split_stays(
    azure_cfg: StackConfig,
) -> None:
    """The deploy function owns each endpoint's ``traffic`` (fact
    azure.serving.endpoint_traffic). The stack sets none, so an update that PUT the
    endpoint from Pulumi's inputs (a changed description or tag) would reset the live
    split mid-rollout. Pulumi's ignore_changes sends the old value from the state, which
    has no traffic either, so every input an update could send is frozen after create."""
    import pulumi

    from infra.azure import stack
    from tests.infra.harness import run

    assert value("azure.serving.endpoint_traffic")["sum"] == 100
    ignored: dict[str, set[str]] = {}

    def record(args: pulumi.ResourceTransformationArgs) -> None:
        if args.type_ == ENDPOINT:
            ignored[args.name] = set(args.opts.ignore_changes or [])

    def build(cfg: StackConfig) -> dict[str, Any]:
        pulumi.runtime.register_stack_transformation(record)
        return stack.build(cfg)

    program = run(azure_cfg, build)
    endpoints = program.of_type(ENDPOINT)
    assert endpoints
    assert set(ignored) == {e.name for e in endpoints}
    for e in endpoints:
        assert "traffic" not in e.inputs["properties"]
        assert "mirrorTraffic" not in e.inputs["properties"]
        # Everything but what names the endpoint and where it lives: those replace it.
        updatable = set(e.inputs) - {
            "endpointName",
            "workspaceName",
            "resourceGroupName",
            "location",
            "kind",
        }
        assert updatable
        assert updatable <= ignored[e.name], (e.name, updatable - ignored[e.name])
