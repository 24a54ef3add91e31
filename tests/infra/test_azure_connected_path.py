"""The Azure stack as one connected path, read from the mocked program and from the
Functions app the real azure-functions library indexes.

An upload to the raw container must reach the ingest trigger's queue on the account the
trigger's connection names, and so through every Event Grid subscription of the
topology to the serve route and the drift timer. Azurite and the local runner accept a
queue on any account; Azure delivers to one account and the host listens on another, so
each hop is checked here by name: a broken one fails with the hop it breaks.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any
from urllib.parse import urlparse

import pytest

from infra.azure import roles
from infra.azure.functions import QUEUE_CONNECTION
from infra.azure.names import ml_workspace_name
from infra.config import StackConfig
from shared import constants as c
from shared.cloud_facts import value
from shared.clouds import kit_for
from shared.settings import Settings
from shared.stack_contract import StackContractError, settings_for, shared_environment
from shared.topology import Topology
from tests.infra.harness import Program, Recorded

SYSTEM_SUB = "azure-native:eventgrid:SystemTopicEventSubscription"
TOPIC_SUB = "azure-native:eventgrid:EventSubscription"


@dataclass(frozen=True)
class Binding:
    function: str
    type: str
    queue: str | None
    connection: str | None
    route: str | None


@pytest.fixture(scope="module")
def bindings() -> Iterator[list[Binding]]:
    """functions/function_app.py's bindings as the Functions host indexes them (the
    azure-functions library's own indexer), for stage uae-prod."""
    mp = pytest.MonkeyPatch()
    mp.setenv(c.STAGE, "uae-prod")
    import functions.function_app as module

    yield _bindings(importlib.reload(module))
    mp.undo()


def _bindings(app: ModuleType) -> list[Binding]:
    out = []
    for fn in app.app.get_functions():
        for b in json.loads(fn.get_function_json())["bindings"]:
            out.append(
                Binding(
                    fn.get_function_name(),
                    b["type"],
                    b.get("queueName"),
                    b.get("connection"),
                    b.get("route"),
                )
            )
    return out


def _last(resource_id: str) -> str:
    return resource_id.rstrip("/").rsplit("/", 1)[-1]


class Stack:
    """What the mocked program asked Azure for, by what the path needs."""

    def __init__(self, program: Program) -> None:
        (app,) = program.of_type("azure-native:web:WebApp")
        self.settings: dict[str, Any] = {
            s["name"]: s["value"] for s in app.inputs["siteConfig"]["appSettings"]
        }
        self.queues: set[tuple[str, str]] = {
            (q.inputs["accountName"], q.inputs["queueName"])
            for q in program.of_type("azure-native:storage:Queue")
        }
        self.containers: dict[str, str] = {
            b.inputs["containerName"]: b.inputs["accountName"]
            for b in program.of_type("azure-native:storage:BlobContainer")
        }
        self.system_topics = program.of_type("azure-native:eventgrid:SystemTopic")
        self.subscriptions: dict[str, Recorded] = {
            s.inputs["eventSubscriptionName"]: s
            for s in [*program.of_type(SYSTEM_SUB), *program.of_type(TOPIC_SUB)]
        }
        self.assignments = program.of_type("azure-native:authorization:RoleAssignment")

    def connection_account(self, connection: str | None) -> str:
        """The storage account a binding's identity-based connection names."""
        rule = value("azure.functions.queue_identity_connection")
        name = f"{connection}{rule['service_uri_suffix']}"
        uri = urlparse(str(self.settings.get(name) or ""))
        host = uri.hostname or ""
        if uri.scheme != "https" or not host.endswith(rule["uri_host_suffix"]):
            return f"<no queue service in app setting {name}>"
        return host.split(".", 1)[0]

    def roles_of(self, principal: str, scope_last: str) -> set[str]:
        """The roles ``principal`` holds on the resource whose id ends in ``scope_last``."""
        return {
            a.inputs["roleDefinitionId"][-36:]
            for a in self.assignments
            if a.inputs["principalId"] == principal and _last(a.inputs["scope"]) == scope_last
        }


def _hops(topo: Topology, stack: Stack, bindings: list[Binding]) -> Iterator[tuple[str, str]]:
    """Every hop of the path, as (name, what is wrong) for each broken one."""
    triggers = {b.queue: b for b in bindings if b.type == "queueTrigger"}
    # Rules whose source Azure has: the raw container's BlobCreated, the workspace's run
    # events and the pipeline topic. The serving rules run on the local platform only.
    for rule in topo.rules:
        if rule.bus == "default" and rule.logical not in (
            "raw_object_created",
            "training_job_ended",
        ):
            continue
        sub = stack.subscriptions.get(rule.name)
        if sub is None:
            yield rule.logical, "no Event Grid subscription"
            continue
        dest = sub.inputs["deliveryWithResourceIdentity"]["destination"]
        account, queue = _last(dest["resourceId"]), dest["queueName"]
        if queue != topo.queue(rule.target_queue).name:
            yield rule.logical, f"delivers to {queue}, not {rule.target_queue}"
        if (account, queue) not in stack.queues:
            yield rule.logical, f"no queue {queue} on {account}"
        trigger = triggers.get(queue)
        if trigger is not None and stack.connection_account(trigger.connection) != account:
            yield (
                f"{rule.logical} -> {trigger.function}",
                f"delivered on {account}, the trigger listens on "
                f"{stack.connection_account(trigger.connection)}",
            )
        if trigger is None and account != stack.settings[c.AZURE_STORAGE_ACCOUNT]:
            yield rule.logical, f"no trigger, and {account} is not the app's data account"
        dead = sub.inputs.get("deadLetterWithResourceIdentity")
        if not dead:
            yield rule.logical, "no dead-letter destination"
    # The raw container's events come from the account that holds it.
    raw = topo.bucket("raw").name
    (storage,) = [
        t
        for t in stack.system_topics
        if t.inputs["topicType"] == "Microsoft.Storage.StorageAccounts"
    ]
    if _last(storage.inputs["source"]) != stack.containers[raw]:
        yield (
            "upload",
            f"BlobCreated comes from {_last(storage.inputs['source'])}, {raw} is elsewhere",
        )
    sub = stack.subscriptions[topo.rule("raw_object_created").name]
    prefix = f"/blobServices/default/containers/{raw}/blobs/"
    if not sub.inputs["filter"]["subjectBeginsWith"].startswith(prefix):
        yield "upload", "the BlobCreated filter is not on the raw container"
    # Every queue function of the topology has a trigger; serve has its route.
    for fn in topo.functions:
        if fn.trigger_queue is not None and topo.queue(fn.trigger_queue).name not in triggers:
            yield fn.logical, "no queue trigger"
    if not [b for b in bindings if b.type == "httpTrigger" and b.route]:
        yield "serve", "no HTTP route"
    # The drift timer sends where the drift trigger listens.
    drift = topo.queue(topo.schedule("drift_check").target_queue).name
    (out,) = [b for b in bindings if b.type == "queue" and b.queue == drift]
    if stack.connection_account(out.connection) != stack.connection_account(
        triggers[drift].connection
    ):
        yield "drift timer", "the timer's output and the drift trigger are on different accounts"


def test_every_hop_from_upload_to_serve_and_the_drift_timer_connects(
    azure_program: Program, azure_cfg: StackConfig, bindings: list[Binding]
) -> None:
    broken = dict(_hops(azure_cfg.topology, Stack(azure_program), bindings))
    assert not broken, broken


def test_a_trigger_on_the_host_account_breaks_the_hop_it_names(
    azure_program: Program, azure_cfg: StackConfig, bindings: list[Binding]
) -> None:
    """The check itself can fail: the triggers of before (AzureWebJobsStorage, the host
    account) break every queue hop, each by name."""
    stack = Stack(azure_program)
    host = stack.settings["AzureWebJobsStorage__accountName"]
    stack.settings["AzureWebJobsStorage__queueServiceUri"] = (
        f"https://{host}.queue.core.windows.net"
    )
    bindings = [
        Binding(b.function, b.type, b.queue, "AzureWebJobsStorage", b.route)
        if b.type == "queueTrigger"
        else b
        for b in bindings
    ]
    broken = dict(_hops(azure_cfg.topology, stack, bindings))
    assert "raw_object_created -> dhow-uae-prod-ingest" in broken
    assert "dataset_ingested -> dhow-uae-prod-validate" in broken
    assert "training_job_ended -> dhow-uae-prod-register" in broken
    assert "drift timer" in broken


def test_the_queue_connection_is_the_data_account_by_identity(azure_program: Program) -> None:
    stack = Stack(azure_program)
    assert stack.connection_account(QUEUE_CONNECTION) == stack.settings[c.AZURE_STORAGE_ACCOUNT]
    # System-assigned identity (the default): no credential or client id to name.
    (app,) = azure_program.of_type("azure-native:web:WebApp")
    assert app.inputs["identity"] == {"type": "SystemAssigned"}
    for key in value("azure.functions.queue_identity_connection")["user_assigned"]:
        assert f"{QUEUE_CONNECTION}{key}" not in stack.settings
    # No secret anywhere in the connection.
    assert not [k for k in stack.settings if k.startswith(QUEUE_CONNECTION) and "Key" in k]


def test_the_app_holds_the_documented_roles_on_every_queue_it_binds(
    azure_program: Program, bindings: list[Binding]
) -> None:
    stack = Stack(azure_program)
    documented = value("azure.functions.queue_binding_roles")
    poison = value("azure.functions.poison_queue_suffix")
    for b in bindings:
        if b.type == "queueTrigger":
            assert b.queue
            held = stack.roles_of("app-principal", b.queue)
            assert set(documented["trigger"]) <= held, b.function
            # The host moves a failed message to <queue>-poison by sending it there.
            assert held & set(documented["output_any_of"]) or set(
                documented["output_any_of"]
            ) & stack.roles_of("app-principal", b.queue + poison), b.function
            assert (stack.settings[c.AZURE_STORAGE_ACCOUNT], b.queue + poison) in stack.queues
        if b.type == "queue":
            assert b.queue
            assert stack.roles_of("app-principal", b.queue) & set(documented["output_any_of"])


def test_each_topic_identity_may_send_where_it_delivers_and_write_its_dead_letters(
    azure_program: Program,
) -> None:
    stack = Stack(azure_program)
    rules = value("azure.eventgrid.identity_destination_roles")
    principal_of = {
        SYSTEM_SUB: {
            s.inputs["systemTopicName"]: f"{t.name}-principal"
            for s in azure_program.of_type(SYSTEM_SUB)
            for t in stack.system_topics
            if t.inputs["systemTopicName"] == s.inputs["systemTopicName"]
        },
    }
    for name, sub in stack.subscriptions.items():
        if sub.typ == SYSTEM_SUB:
            principal = principal_of[SYSTEM_SUB][sub.inputs["systemTopicName"]]
        else:
            principal = "pipeline-principal"
        dest = sub.inputs["deliveryWithResourceIdentity"]["destination"]
        assert rules["StorageQueue"] in stack.roles_of(principal, dest["queueName"]), name
        dead = sub.inputs["deadLetterWithResourceIdentity"]
        assert dead["identity"] == {"type": "SystemAssigned"}, name
        container = dead["deadLetterDestination"]["blobContainerName"]
        assert rules["StorageBlob"] in stack.roles_of(principal, container), name
        retry = value("azure.eventgrid.dead_letter_on_every_subscription")
        assert sub.inputs["retryPolicy"] == {
            "maxDeliveryAttempts": retry["max_delivery_attempts"],
            "eventTimeToLiveInMinutes": retry["event_time_to_live_in_minutes"],
        }, name


def test_the_host_sends_telemetry_with_its_identity(azure_program: Program) -> None:
    rule = value("azure.monitor.appinsights_entra_ingestion")
    (insights,) = azure_program.of_type("azure-native:applicationinsights:Component")
    assert insights.inputs["disableLocalAuth"] is True
    stack = Stack(azure_program)
    assert stack.settings[rule["setting"]] == rule["system_assigned"]
    assert stack.settings["APPLICATIONINSIGHTS_CONNECTION_STRING"]
    assert rule["role"] in stack.roles_of("app-principal", insights.inputs["resourceName"])


# What the stack's app settings carry beyond Dhow's own: read by the Functions host.
_HOST_SETTINGS = (
    "AzureWebJobsStorage__",
    f"{QUEUE_CONNECTION}__",
    "APPLICATIONINSIGHTS_",
)
# What a function on Azure needs set, else it fails at cold start (shared/wiring.py):
# the data account and topic, and the Azure ML hand-off and training. The contract must
# declare at least these; it is what the stack writes from.
_NEEDED_ON_AZURE = {
    c.CLOUD,
    c.STAGE,
    c.AZURE_LOCATION,
    c.AZURE_STORAGE_ACCOUNT,
    c.AZURE_EVENTGRID_ENDPOINT,
    c.AZUREML_SUBSCRIPTION_ID,
    c.AZUREML_RESOURCE_GROUP,
    c.AZUREML_WORKSPACE,
    c.AZUREML_COMPUTE,
    c.AZUREML_ENVIRONMENT,
    c.AZUREML_STAGING_DATASTORE,
    c.AZUREML_GPU_COMPUTE,
    c.AZUREML_TRAIN_ENVIRONMENT,
    c.AZUREML_CURATED_DATASTORE,
    c.AZUREML_MODELS_DATASTORE,
}
_WORKSPACE = (c.AZUREML_SUBSCRIPTION_ID, c.AZUREML_RESOURCE_GROUP, c.AZUREML_WORKSPACE)


class _Reads(Mapping[str, str]):
    """An environment that records every name ``Settings.from_env`` asks for."""

    def __init__(self, env: dict[str, str]) -> None:
        self.env, self.asked = env, set[str]()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.env[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.asked.add(key)
        return self.env.get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self.env)

    def __len__(self) -> int:
        return len(self.env)


def test_settings_build_from_exactly_the_stacks_app_settings(
    azure_program: Program, azure_cfg: StackConfig
) -> None:
    """The stack-runtime contract on Azure: every Dhow setting the app gets is one the
    runtime reads, and every one a function needs there is set."""
    stack = Stack(azure_program)
    own = {k: str(v) for k, v in stack.settings.items() if not k.startswith(_HOST_SETTINGS)}
    env = _Reads(own)
    settings = Settings.from_env(env)
    extra = sorted(set(own) - env.asked)
    assert not extra, f"app settings no function reads: {extra}"
    missing = sorted(_NEEDED_ON_AZURE - {k for k, v in own.items() if v})
    assert not missing, f"settings a function on Azure needs, unset by the stack: {missing}"
    # The app's settings are exactly the union of its functions' contract rows, and each
    # function's own rows arrive, non-empty, as the Settings field it reads.
    functions = {f.logical for f in azure_cfg.topology.functions}
    declared = {s.env for f in functions for s in settings_for("azure", f)}
    assert declared >= _NEEDED_ON_AZURE
    assert sorted(set(own) ^ declared) == [], "app settings and the contract differ"
    for f in sorted(functions):
        for s in settings_for("azure", f):
            assert own[s.env] != "", f"{f}: {s.env} is set empty, which reads as unset"
            got = getattr(settings, s.field)
            if s.env in _WORKSPACE:
                assert got[_WORKSPACE.index(s.env)] == own[s.env], f"{f}: {s.env}"
            else:
                assert str(got) == own[s.env], f"{f}: {s.env}"
    assert settings.cloud == "azure"
    assert kit_for(settings).training_backend == "azureml"
    assert settings.azureml_workspace == (
        own[c.AZUREML_SUBSCRIPTION_ID],
        "dhow-uae-prod-rg",
        ml_workspace_name("uae-prod", own[c.AZUREML_SUBSCRIPTION_ID]),
    )
    # The datastores and environments the settings name are resources of the stack.
    datastores = {
        r.inputs["name"]
        for r in azure_program.of_type("azure-native:machinelearningservices:Datastore")
    }
    assert {
        settings.azureml_staging_datastore,
        settings.azureml_curated_datastore,
        settings.azureml_models_datastore,
    } <= datastores
    versions = {
        f"azureml:{r.inputs['name']}:{r.inputs['version']}"
        for r in azure_program.of_type("azure-native:machinelearningservices:EnvironmentVersion")
    }
    assert {settings.azureml_environment, settings.azureml_train_environment} <= versions


def test_grants_cover_the_bindings_and_nothing_broader(azure_cfg: StackConfig) -> None:
    grants = roles.function_app_grants(azure_cfg.topology)
    assert not [g for g in grants if g.role == roles.QUEUE_CONTRIBUTOR]


def test_an_app_setting_outside_the_azure_contract_stops_the_program() -> None:
    """The Function App's one set of settings goes through the same refusals as each
    Lambda's environment: an unread setting, or a read one the stack omits."""
    functions = ("ingest", "validate", "train_launch")
    offered = {s.env: "x" for f in functions for s in settings_for("azure", f)}
    assert set(shared_environment("azure", functions, offered)) == set(offered)
    with pytest.raises(StackContractError) as info:
        shared_environment("azure", functions, {**offered, c.KMS_KEY_ID: "x"})
    assert c.KMS_KEY_ID in str(info.value)  # an AWS-only setting is unread on Azure
    del offered[c.AZUREML_GPU_COMPUTE]
    with pytest.raises(StackContractError) as info:
        shared_environment("azure", functions, offered)
    assert c.AZUREML_GPU_COMPUTE in str(info.value)
    assert "train_launch" in str(info.value)
