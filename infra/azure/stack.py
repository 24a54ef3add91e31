"""The Azure stack: a resource group in the pinned location and one component per concern,
built from the same topology as the AWS stack and the local platform."""

from __future__ import annotations

import hashlib
import re
import tomllib
import uuid
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_azure_native as az

from infra.azure import app_package
from infra.azure.roles import (
    BLOB_CONTRIBUTOR,
    BLOB_OWNER,
    QUEUE_CONTRIBUTOR,
    QUEUE_SENDER,
    TABLE_CONTRIBUTOR,
    WORKSPACE_ROLE,
    Grant,
    cluster_grants,
    function_app_grants,
    workspace_role_actions,
    workspace_role_guid,
    workspace_role_name,
    workspace_storage_roles,
)
from infra.azure.serving import Serving, serve_environment_ref
from infra.config import REPO_ROOT, StackConfig
from shared import constants as c
from shared.cloud_facts import value
from shared.identifiers import family_prefix
from shared.stack_contract import shared_environment
from shared.topology import Topology, processing_job_prefix
from shared.triggers import (
    AZUREML_RUN_STATUS_CHANGED,
    TRAINING_EXPERIMENT,
    VALIDATION_EXPERIMENT,
)
from shared.wiring import azure_table_name

# The Functions host's poison queue of each queue (on the trigger's own account).
POISON = value("azure.functions.poison_queue_suffix")
# The connection every queue binding of functions/function_app.py names: the data
# account's queue service, reached with the app's system-assigned identity.
QUEUE_CONNECTION = "DhowQueues"
# Where the stage's name can be shortened, a digest of the stage and the subscription
# keeps globally unique names apart: two stages that shorten alike, or one stage in two
# subscriptions (storage account and vault names are unique across Azure).
_DIGEST_CHARS = 6


def _digest(stage: str, subscription: str) -> str:
    return hashlib.sha256(f"{subscription}/{stage}".encode()).hexdigest()[:_DIGEST_CHARS]


def _short(stage: str, room: int) -> str:
    return re.sub(r"[^a-z0-9]", "", stage)[:room]


def account_name(stage: str, role: str, subscription: str) -> str:
    """``dhow<stage><digest><role>``: the role is never cut off, so the data, host and ml
    accounts of a stage always differ (azure.storage.account_name)."""
    limit = value("azure.storage.account_name")["max"]
    room = limit - len("dhow") - _DIGEST_CHARS - len(role)
    return f"dhow{_short(stage, room)}{_digest(stage, subscription)}{role}"


def vault_name(stage: str, subscription: str) -> str:
    """``dhow<stage><digest>kv``: letters and digits only, so it starts with a letter and
    has no trailing or doubled hyphen (azure.keyvault.vault_name)."""
    limit = value("azure.keyvault.vault_name")["max"]
    room = limit - len("dhow") - _DIGEST_CHARS - len("kv")
    return f"dhow{_short(stage, room)}{_digest(stage, subscription)}kv"


def ml_workspace_name(stage: str, subscription: str) -> str:
    """``dhow-<stage>-<digest>-ml``: within the workspace's 33 characters of letters,
    digits and hyphens (azure.ml.workspace_name), the digest kept whole however long the
    stage. A destroyed workspace holds its name for 14 days (soft delete), so the same
    name in another subscription or for a stage that shortens alike must differ."""
    rule = value("azure.ml.workspace_name")
    room = rule["max"] - len("dhow--") - _DIGEST_CHARS - len("-ml")
    return f"dhow-{_short(stage, room)}-{_digest(stage, subscription)}-ml"


def role_id(subscription: str, role: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"


def assignment_name(scope: str, role: str, principal: str) -> str:
    """Role assignment names are GUIDs unique in the tenant: derived from the scope (which
    holds the subscription), the role and the principal, as ARM's guid() convention, the
    same grant always gets the same one and no two grants share one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dhow/{scope}/{role}/{principal}"))


def _assign(
    logical: str,
    subscription: pulumi.Input[str],
    principal: pulumi.Input[str],
    role: str,
    scope: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> az.authorization.RoleAssignment:
    return az.authorization.RoleAssignment(
        logical,
        role_assignment_name=pulumi.Output.all(scope, principal).apply(
            lambda a: assignment_name(str(a[0]), role, str(a[1]))
        ),
        principal_id=principal,
        principal_type="ServicePrincipal",
        role_definition_id=pulumi.Output.from_input(subscription).apply(lambda s: role_id(s, role)),
        scope=scope,
        opts=opts,
    )


def _principal(identity: pulumi.Output[Any]) -> pulumi.Output[str]:
    return identity.apply(lambda i: (i or {}).get("principal_id") or "")


def _storage_account(
    name: str,
    cfg: StackConfig,
    group: az.resources.ResourceGroup,
    subscription: pulumi.Input[str],
    child: pulumi.ResourceOptions,
) -> az.storage.StorageAccount:
    return az.storage.StorageAccount(
        name,
        account_name=pulumi.Output.from_input(subscription).apply(
            lambda s: account_name(cfg.stage, name, s)
        ),
        resource_group_name=group.name,
        location=cfg.location,
        kind="StorageV2",
        sku={"name": "Standard_ZRS"},
        allow_blob_public_access=False,
        # Identities only: no account keys, no SAS signed with them.
        allow_shared_key_access=False,
        default_to_o_auth_authentication=True,
        enable_https_traffic_only=True,
        minimum_tls_version="TLS1_2",
        allow_cross_tenant_replication=False,
        encryption=az.storage.EncryptionArgs(
            key_source="Microsoft.Storage",
            require_infrastructure_encryption=True,
            services={
                "blob": {"enabled": True, "key_type": "Account"},
                "file": {"enabled": True, "key_type": "Account"},
                "queue": {"enabled": True, "key_type": "Account"},
                "table": {"enabled": True, "key_type": "Account"},
            },
        ),
        tags=cfg.tags,
        opts=child,
    )


class DataLake(pulumi.ComponentResource):
    """The data account (a container per bucket of the topology) and Key Vault."""

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        group: az.resources.ResourceGroup,
        tenant_id: pulumi.Input[str],
        subscription: pulumi.Input[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("dhow:azure:DataLake", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.account = _storage_account("data", cfg, group, subscription, child)
        self.containers = {
            b.logical: az.storage.BlobContainer(
                b.logical,
                container_name=b.name,
                account_name=self.account.name,
                resource_group_name=group.name,
                public_access="None",
                opts=child,
            )
            for b in cfg.topology.buckets
        }
        # What Event Grid cannot deliver is kept here, not dropped.
        self.dead_letters = az.storage.BlobContainer(
            "dead-letters",
            container_name=f"{cfg.prefix}-dead-letters",
            account_name=self.account.name,
            resource_group_name=group.name,
            public_access="None",
            opts=child,
        )
        self.vault = az.keyvault.Vault(
            "vault",
            vault_name=pulumi.Output.from_input(subscription).apply(
                lambda s: vault_name(cfg.stage, s)
            ),
            resource_group_name=group.name,
            location=cfg.location,
            properties=az.keyvault.VaultPropertiesArgs(
                tenant_id=tenant_id,
                sku={"family": "A", "name": "standard"},
                enable_rbac_authorization=True,
                # Purge protection keeps a deleted vault (and the workspace's secrets)
                # recoverable, and holds its name for the retention period: the
                # shortest Azure allows, so a destroyed stage can be recreated within a
                # week (or its vault recovered: README, "Azure names").
                enable_purge_protection=True,
                enable_soft_delete=True,
                soft_delete_retention_in_days=value("azure.keyvault.soft_delete_retention")[
                    "min_days"
                ],
            ),
            tags=cfg.tags,
            opts=child,
        )
        self.register_outputs({"account": self.account.name})


class Lineage(pulumi.ComponentResource):
    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        group: az.resources.ResourceGroup,
        account: az.storage.StorageAccount,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("dhow:azure:Lineage", name, None, opts)
        self.tables = {
            t.logical: az.storage.Table(
                t.logical,
                table_name=azure_table_name(t.name),
                account_name=account.name,
                resource_group_name=group.name,
                opts=pulumi.ResourceOptions(parent=self),
            )
            for t in cfg.topology.tables
        }
        self.register_outputs({})


def _queue_destination(account: az.storage.StorageAccount, queue: str) -> dict[str, Any]:
    return {
        "identity": {"type": "SystemAssigned"},
        "destination": {
            "endpoint_type": "StorageQueue",
            "resource_id": account.id,
            "queue_name": queue,
        },
    }


class EventWiring(pulumi.ComponentResource):
    """Storage queues (each with its poison queue), the storage account's Event Grid
    system topic (BlobCreated under ``datasets/`` in the raw container to the ingest
    queue) and the pipeline's own Event Grid topic with one subscription per rule."""

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        group: az.resources.ResourceGroup,
        lake: DataLake,
        subscription: pulumi.Input[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("dhow:azure:EventWiring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        topo = cfg.topology
        account = lake.account
        self.queues: dict[str, az.storage.Queue] = {}
        names = [
            (n, m)
            for q in topo.queues
            for n, m in ((q.logical, q.name), (q.logical + POISON, q.name + POISON))
        ]
        # Alerts stay in a queue of the region: action groups are global resources.
        names += [(t.logical, t.name) for t in topo.topics]
        for logical, queue_name in names:
            self.queues[logical] = az.storage.Queue(
                logical,
                queue_name=queue_name,
                account_name=account.name,
                resource_group_name=group.name,
                opts=child,
            )
        self.system_topic = az.eventgrid.SystemTopic(
            "storage-events",
            system_topic_name=f"{cfg.prefix}-storage-events",
            resource_group_name=group.name,
            location=cfg.location,
            source=account.id,
            topic_type="Microsoft.Storage.StorageAccounts",
            identity={"type": "SystemAssigned"},
            tags=cfg.tags,
            opts=child,
        )
        self.topic = az.eventgrid.Topic(
            "pipeline",
            topic_name=topo.bus_name,
            resource_group_name=group.name,
            location=cfg.location,
            input_schema="CloudEventSchemaV1_0",
            # Event Grid keeps the events of this topic in its region, even on failover.
            data_residency_boundary="WithinRegion",
            disable_local_auth=True,
            minimum_tls_version_allowed="1.2",
            identity={"type": "SystemAssigned"},
            tags=cfg.tags,
            opts=child,
        )
        self.subscriptions = []
        dead_letter = _dead_letter(lake)
        for rule in topo.rules:
            target = topo.queue(rule.target_queue).name
            if rule.logical == "raw_object_created":
                raw = topo.bucket("raw").name
                self.subscriptions.append(
                    az.eventgrid.SystemTopicEventSubscription(
                        rule.logical,
                        event_subscription_name=rule.name,
                        system_topic_name=self.system_topic.name,
                        resource_group_name=group.name,
                        delivery_with_resource_identity=_queue_destination(account, target),
                        dead_letter_with_resource_identity=dead_letter,
                        event_delivery_schema="EventGridSchema",
                        filter={
                            "included_event_types": ["Microsoft.Storage.BlobCreated"],
                            "subject_begins_with": (
                                f"/blobServices/default/containers/{raw}/blobs/datasets/"
                            ),
                        },
                        retry_policy=_RETRY,
                        opts=child,
                    )
                )
            elif rule.bus == "pipeline":
                self.subscriptions.append(
                    az.eventgrid.EventSubscription(
                        rule.logical,
                        event_subscription_name=rule.name,
                        scope=self.topic.id,
                        delivery_with_resource_identity=_queue_destination(account, target),
                        dead_letter_with_resource_identity=dead_letter,
                        event_delivery_schema="CloudEventSchemaV1_0",
                        filter=_pipeline_filter(rule.pattern),
                        retry_policy=_RETRY,
                        opts=child,
                    )
                )
            # training_job_ended is Azure ML's RunStatusChanged (subscribed by
            # Training, on the workspace). The serving rules have no Azure counterpart:
            # the deploy function steps each online endpoint's traffic itself and sends
            # its own checks on the deploy queue (infra/azure/serving.py,
            # shared/adapters/azure_serving.py).

        # Each topic's identity may send to the queues its subscriptions deliver to, and
        # write dead letters; nothing else.
        for label, identity, rules in (
            ("storage-events", self.system_topic.identity, ["raw_object_created"]),
            (
                "pipeline",
                self.topic.identity,
                [r.logical for r in topo.rules if r.bus == "pipeline"],
            ),
        ):
            principal = _principal(identity)
            targets = sorted({topo.rule(r).target_queue for r in rules})
            for queue in targets:
                _assign(
                    f"{label}-sends-{queue}",
                    subscription,
                    principal,
                    QUEUE_SENDER,
                    self.queues[queue].id,
                    child,
                )
            _assign(
                f"{label}-dead-letters",
                subscription,
                principal,
                BLOB_CONTRIBUTOR,
                lake.dead_letters.id,
                child,
            )
        self.register_outputs({"topic": self.topic.name})


# Event Grid's own defaults, stated so that the dead-letter path is explicit.
_RETRY = value("azure.eventgrid.dead_letter_on_every_subscription")


def _dead_letter(lake: DataLake) -> dict[str, Any]:
    """Undelivered events go to the data account's dead-letter container, written with
    the topic's own identity (granted Blob Data Contributor there)."""
    return {
        "identity": {"type": "SystemAssigned"},
        "dead_letter_destination": {
            "endpoint_type": "StorageBlob",
            "resource_id": lake.account.id,
            "blob_container_name": lake.dead_letters.name,
        },
    }


def _pipeline_filter(pattern: dict[str, Any]) -> dict[str, Any]:
    """An EventBridge pattern of the pipeline bus as an Event Grid filter: ``detail-type``
    is the CloudEvent ``type``; ``detail`` fields are ``data`` fields."""
    out: dict[str, Any] = {}
    if types := pattern.get("detail-type"):
        out["included_event_types"] = list(types)
    detail = pattern.get("detail") or {}
    if detail:
        # Typed: a plain dict inside this union would reach ARM with snake_case keys.
        out["advanced_filters"] = [
            az.eventgrid.StringInAdvancedFilterArgs(
                operator_type="StringIn", key=f"data.{field}", values=list(values)
            )
            for field, values in detail.items()
        ]
    return out


class Training(pulumi.ComponentResource):
    """The Azure ML workspace, its GPU training cluster (low priority when a spec asks
    for spot capacity) and a CPU cluster for validation hand-offs; both scale to zero."""

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        group: az.resources.ResourceGroup,
        storage: az.storage.StorageAccount,
        vault: az.keyvault.Vault,
        insights: az.applicationinsights.Component,
        lake: DataLake,
        subscription: pulumi.Input[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("dhow:azure:Training", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.storage = storage
        # The workspace's own registry, where Azure ML builds the environments' images
        # (base image + conda file) and pulls them from. Left to Azure ML, it would be
        # created on first use with its admin user on, by whoever asks first: the app's
        # identity holds a narrow custom role that cannot create it, so a first job or
        # deployment could not build. Created here without the admin user and named by
        # the workspace (fact azure.ml.workspace_registry).
        registry_rule = value("azure.ml.workspace_registry")
        self.registry = az.containerregistry.Registry(
            "registry",
            registry_name=pulumi.Output.from_input(subscription).apply(
                lambda s: account_name(cfg.stage, "acr", s)
            ),
            resource_group_name=group.name,
            location=cfg.location,
            sku={"name": registry_rule["sku"]},
            admin_user_enabled=registry_rule["admin_user_enabled"],
            anonymous_pull_enabled=False,
            tags=cfg.tags,
            opts=child,
        )
        self.workspace = az.machinelearningservices.Workspace(
            "workspace",
            workspace_name=pulumi.Output.from_input(subscription).apply(
                lambda s: ml_workspace_name(cfg.stage, s)
            ),
            resource_group_name=group.name,
            location=cfg.location,
            identity={"type": "SystemAssigned"},
            sku={"name": "Basic", "tier": "Basic"},
            storage_account=storage.id,
            key_vault=vault.id,
            application_insights=insights.id,
            container_registry=self.registry.id,
            system_datastores_auth_mode="identity",
            hbi_workspace=True,
            tags=cfg.tags,
            opts=child,
        )
        # The workspace's identity builds and pushes the images. Microsoft documents
        # Contributor on the registry (for a user-assigned workspace identity; a
        # system-assigned one's assignments are Microsoft-managed), which the policy pack
        # refuses: AcrPush, push and pull, is the build's data-plane share. The clusters
        # and endpoints get AcrPull from Azure ML (the registry exists before them), and a
        # second identical assignment would be refused (fact azure.ml.registry_identity_roles).
        roles = value("azure.ml.registry_identity_roles")
        self.registry_push = _assign(
            "workspace-registry-push",
            subscription,
            _principal(self.workspace.identity),
            roles["role_ids"][roles["workspace"]],
            self.registry.id,
            child,
        )
        spot = any(s.training.use_spot for s in cfg.specs)
        self.gpu = self._cluster(
            cfg, group, "gpu", cfg.azure_gpu_vm_size, cfg.azure_gpu_max_nodes, spot, child
        )
        self.cpu = self._cluster(cfg, group, "cpu", "Standard_D4s_v5", 2, False, child)
        # Identity-based datastores over the data account's containers: a job reads and
        # writes them as its cluster's identity, no key or SAS is stored in the workspace.
        self.datastores = {
            logical: az.machinelearningservices.Datastore(
                f"datastore-{logical}",
                name=f"dhow_{logical}",
                workspace_name=self.workspace.name,
                resource_group_name=group.name,
                properties=az.machinelearningservices.AzureBlobDatastoreArgs(
                    datastore_type="AzureBlob",
                    account_name=lake.account.name,
                    container_name=lake.containers[logical].name,
                    credentials=az.machinelearningservices.NoneDatastoreCredentialsArgs(
                        credentials_type=value("azure.storage.ml_identity_datastore_access")[
                            "credentials_type"
                        ]
                    ),
                    endpoint="core.windows.net",
                    protocol="https",
                    # Studio's previews read as the workspace, never with a stored key.
                    service_data_access_auth_identity="WorkspaceSystemAssignedIdentity",
                ),
                opts=child,
            )
            for logical in DATASTORES
        }
        # What the jobs run on: Azure ML's Ubuntu base images with the project's pinned
        # dependencies (the code itself ships with each job).
        self.environments = {
            kind: self._environment(group, kind, image, extras, child)
            for kind, (image, extras) in ENVIRONMENTS.items()
        }
        self.register_outputs({"workspace": self.workspace.name})

    def _environment(
        self,
        group: az.resources.ResourceGroup,
        kind: str,
        image: str,
        extras: tuple[str, ...],
        child: pulumi.ResourceOptions,
    ) -> az.machinelearningservices.EnvironmentVersion:
        container = az.machinelearningservices.EnvironmentContainer(
            f"environment-{kind}",
            name=f"dhow-{kind}",
            workspace_name=self.workspace.name,
            resource_group_name=group.name,
            properties=az.machinelearningservices.EnvironmentContainerPropertiesArgs(
                description=f"Dhow's {kind} jobs"
            ),
            opts=child,
        )
        return az.machinelearningservices.EnvironmentVersion(
            f"environment-{kind}-v{ENVIRONMENT_VERSION}",
            name=container.name,
            version=ENVIRONMENT_VERSION,
            workspace_name=self.workspace.name,
            resource_group_name=group.name,
            properties=az.machinelearningservices.EnvironmentVersionPropertiesArgs(
                image=image, conda_file=conda_file(kind, extras), os_type="Linux"
            ),
            opts=child,
        )

    def _cluster(
        self,
        cfg: StackConfig,
        group: az.resources.ResourceGroup,
        kind: str,
        vm_size: str,
        max_nodes: int,
        low_priority: bool,
        child: pulumi.ResourceOptions,
    ) -> az.machinelearningservices.Compute:
        return az.machinelearningservices.Compute(
            kind,
            compute_name=f"{kind}-cluster",
            workspace_name=self.workspace.name,
            resource_group_name=group.name,
            location=cfg.location,
            identity={"type": "SystemAssigned"},
            properties=az.machinelearningservices.AmlComputeArgs(
                compute_type="AmlCompute",
                disable_local_auth=True,
                properties=az.machinelearningservices.AmlComputePropertiesArgs(
                    vm_size=vm_size,
                    vm_priority="LowPriority" if low_priority else "Dedicated",
                    os_type="Linux",
                    remote_login_port_public_access="Disabled",
                    scale_settings={
                        "min_node_count": 0,
                        "max_node_count": max_nodes,
                        "node_idle_time_before_scale_down": "PT10M",
                    },
                ),
            ),
            opts=child,
        )


# The data account's containers the jobs use: staged files (validation), curated files
# (training's input), models (training's output).
DATASTORES = ("staging", "curated", "models")
# Each environment: Azure ML's base image and the pyproject extras installed on it.
ENVIRONMENTS = {
    "validate": ("mcr.microsoft.com/azureml/openmpi4.1.0-ubuntu22.04", ("azureml",)),
    "train": (
        "mcr.microsoft.com/azureml/openmpi4.1.0-cuda11.8-cudnn8-ubuntu22.04",
        ("train", "azureml"),
    ),
}
# Environment versions are immutable in Azure ML: a change of dependencies is a new one.
ENVIRONMENT_VERSION = "1"


def conda_file(kind: str, extras: tuple[str, ...]) -> str:
    """A conda spec of the project's exact pins: its dependencies and ``extras``."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    pins = [*project["dependencies"]]
    for extra in extras:
        pins += project["optional-dependencies"][extra]
    lines = [f"name: dhow-{kind}", "channels: [conda-forge]", "dependencies:"]
    lines += ["  - python=3.12", "  - pip", "  - pip:"]
    lines += [f"    - {pin}" for pin in pins]
    return "\n".join(lines) + "\n"


def environment_ref(kind: str) -> str:
    """How a job names an environment: ``azureml:<name>:<version>``."""
    return f"azureml:dhow-{kind}:{ENVIRONMENT_VERSION}"


class Monitoring(pulumi.ComponentResource):
    """Logs and Application Insights, in the stack's location."""

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        group: az.resources.ResourceGroup,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("dhow:azure:Monitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.logs = az.operationalinsights.Workspace(
            "logs",
            workspace_name=f"{cfg.prefix}-logs",
            resource_group_name=group.name,
            location=cfg.location,
            sku={"name": "PerGB2018"},
            retention_in_days=min(cfg.log_retention_days, 730),
            tags=cfg.tags,
            opts=child,
        )
        self.insights = az.applicationinsights.Component(
            "insights",
            resource_name_=f"{cfg.prefix}-insights",
            resource_group_name=group.name,
            location=cfg.location,
            kind="web",
            application_type="web",
            workspace_resource_id=self.logs.id,
            disable_local_auth=True,
            tags=cfg.tags,
            opts=child,
        )
        self.register_outputs({})


class Functions(pulumi.ComponentResource):
    """A Flex Consumption Python Function App with a system identity, its own host
    storage account, and the identity's least-privilege role assignments."""

    def __init__(
        self,
        name: str,
        cfg: StackConfig,
        group: az.resources.ResourceGroup,
        subscription: pulumi.Input[str],
        scopes: dict[tuple[str, str], pulumi.Input[str]],
        settings: dict[str, pulumi.Input[str]],
        data_account: az.storage.StorageAccount,
        insights: az.applicationinsights.Component,
        opts: pulumi.ResourceOptions,
    ) -> None:
        super().__init__("dhow:azure:Functions", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.host = _storage_account("host", cfg, group, subscription, child)
        package = az.storage.BlobContainer(
            "app-package",
            container_name="app-package",
            account_name=self.host.name,
            resource_group_name=group.name,
            public_access="None",
            opts=child,
        )
        plan = az.web.AppServicePlan(
            "plan",
            name=f"{cfg.prefix}-plan",
            resource_group_name=group.name,
            location=cfg.location,
            kind="functionapp",
            reserved=True,  # Linux
            sku={"name": "FC1", "tier": "FlexConsumption"},
            tags=cfg.tags,
            opts=child,
        )
        host_blob = self.host.primary_endpoints.apply(lambda e: e["blob"])
        self.app = az.web.WebApp(
            "app",
            name=f"{cfg.prefix}-functions",
            resource_group_name=group.name,
            location=cfg.location,
            kind="functionapp,linux",
            server_farm_id=plan.id,
            https_only=True,
            identity={"type": "SystemAssigned"},
            function_app_config=az.web.FunctionAppConfigArgs(
                deployment={
                    "storage": {
                        "type": "blobContainer",
                        "value": host_blob.apply(lambda b: f"{b}app-package"),
                        "authentication": {"type": "SystemAssignedIdentity"},
                    }
                },
                runtime={"name": "python", "version": "3.12"},
                scale_and_concurrency={"maximum_instance_count": 40, "instance_memory_mb": 2048},
            ),
            site_config={
                "min_tls_version": "1.2",
                "ftps_state": "Disabled",
                "app_settings": [
                    {"name": k, "value": v}
                    for k, v in {
                        **host_settings(self.host, data_account, insights),
                        **settings,
                    }.items()
                ],
            },
            tags=cfg.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[package]),
        )
        principal = _principal(self.app.identity)
        # The host's own account: blobs (deployment package, leases), queues, tables.
        host_roles = (
            (BLOB_OWNER, "blob"),
            (QUEUE_CONTRIBUTOR, "queue"),
            (TABLE_CONTRIBUTOR, "table"),
        )
        self.assignments = [
            _assign(f"host-{short}", subscription, principal, role, self.host.id, child)
            for role, short in host_roles
        ]
        workspace = scopes[("workspace", "workspace")]
        self.workspace_role = _workspace_role(cfg, subscription, workspace, child)
        for grant in function_app_grants(cfg.topology):
            scope = scopes[(grant.scope_kind, grant.scope)]
            if grant.role == WORKSPACE_ROLE:
                self.assignments.append(
                    _assign_workspace_role(
                        _grant_name(grant), cfg, subscription, principal, scope, self
                    )
                )
                continue
            self.assignments.append(
                _assign(_grant_name(grant), subscription, principal, grant.role, scope, child)
            )
        # The workspace's own account: the code upload to its default blob datastore.
        self.assignments += _ml_storage_assignments(
            "app", subscription, principal, scopes[("account", "ml")], child
        )
        # The code: published to One Deploy, which writes the deployment container with
        # the app's identity, once that identity holds its roles (infra/azure/app_package.py).
        self.code = app_package.deploy(
            self.app,
            app_package.package_path(cfg),
            pulumi.ResourceOptions(parent=self, depends_on=self.assignments),
        )
        self.register_outputs({"app": self.app.name})


def host_settings(
    host: az.storage.StorageAccount,
    data: az.storage.StorageAccount,
    insights: az.applicationinsights.Component,
) -> dict[str, pulumi.Input[str]]:
    """The settings the Functions host reads (not Dhow's own): its storage, the queue
    connection the bindings name, and telemetry with the app's identity."""
    connection = value("azure.functions.queue_identity_connection")
    telemetry = value("azure.monitor.appinsights_entra_ingestion")
    return {
        # The host's own storage (leases, timers, keys), reached with the app's identity.
        "AzureWebJobsStorage__accountName": host.name,
        # Where the stack's Event Grid subscriptions deliver: the data account's queues.
        # The app's identity is system-assigned, the default: no __credential/__clientId.
        QUEUE_CONNECTION + connection["service_uri_suffix"]: data.primary_endpoints.apply(
            lambda e: str(e["queue"]).rstrip("/")
        ),
        "APPLICATIONINSIGHTS_CONNECTION_STRING": insights.connection_string,
        # Local auth is off on the component: the host signs its telemetry with Entra.
        telemetry["setting"]: telemetry["system_assigned"],
    }


def _workspace_role(
    cfg: StackConfig,
    subscription: pulumi.Input[str],
    workspace: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> az.authorization.RoleDefinition:
    """The app's custom role in the workspace (infra/azure/roles.py): defined at the
    workspace and assignable only there, so it can grant nothing anywhere else."""
    sub = pulumi.Output.from_input(subscription)
    return az.authorization.RoleDefinition(
        "workspace-role",
        role_definition_id=sub.apply(lambda s: workspace_role_guid(s, cfg.stage)),
        role_name=sub.apply(lambda s: workspace_role_name(cfg.stage, s)),
        description="Dhow's Function App: submit its Azure ML jobs with their code, roll "
        "out its online deployments and read their metrics",
        role_type="CustomRole",
        permissions=[{"actions": workspace_role_actions()}],
        assignable_scopes=[workspace],
        scope=workspace,
        opts=opts,
    )


def _assign_workspace_role(
    logical: str,
    cfg: StackConfig,
    subscription: pulumi.Input[str],
    principal: pulumi.Input[str],
    scope: pulumi.Input[str],
    functions: Functions,
) -> az.authorization.RoleAssignment:
    """``_assign`` for the custom role, whose GUID is known only with the subscription;
    it waits for the definition, as Azure refuses an assignment to a missing role."""
    sub = pulumi.Output.from_input(subscription)
    return az.authorization.RoleAssignment(
        logical,
        role_assignment_name=pulumi.Output.all(scope, principal, sub).apply(
            lambda a: assignment_name(
                str(a[0]), workspace_role_guid(str(a[2]), cfg.stage), str(a[1])
            )
        ),
        principal_id=principal,
        principal_type="ServicePrincipal",
        role_definition_id=sub.apply(lambda s: role_id(s, workspace_role_guid(s, cfg.stage))),
        scope=scope,
        opts=pulumi.ResourceOptions(parent=functions, depends_on=[functions.workspace_role]),
    )


def _grant_name(grant: Grant) -> str:
    return f"grant-{grant.scope_kind}-{grant.scope}-{grant.role[:8]}"


def build(cfg: StackConfig) -> dict[str, pulumi.Input[object]]:
    """Create the Azure stack; returns what ``__main__`` exports."""
    provider = az.Provider("uae", location=cfg.location)
    opts = pulumi.ResourceOptions(providers=[provider])
    client = az.authorization.get_client_config_output(
        opts=pulumi.InvokeOutputOptions(provider=provider)
    )
    group = az.resources.ResourceGroup(
        "group",
        resource_group_name=f"{cfg.prefix}-rg",
        location=cfg.location,
        tags=cfg.tags,
        opts=pulumi.ResourceOptions(provider=provider),
    )
    lake = DataLake("data-lake", cfg, group, client.tenant_id, client.subscription_id, opts)
    lineage = Lineage("lineage", cfg, group, lake.account, opts)
    events = EventWiring("events", cfg, group, lake, client.subscription_id, opts)
    monitoring = Monitoring("monitoring", cfg, group, opts)
    # The workspace's own account (its system datastores), reached by identity.
    ml_storage = _storage_account(
        "ml", cfg, group, client.subscription_id, pulumi.ResourceOptions(provider=provider)
    )
    training = Training(
        "training",
        cfg,
        group,
        ml_storage,
        lake.vault,
        monitoring.insights,
        lake,
        client.subscription_id,
        opts,
    )
    run_events = _run_status_events(
        cfg, group, lake, events, training, client.subscription_id, opts
    )
    scopes = _scopes(cfg.topology, lake, lineage, events, training, monitoring)
    # One online endpoint per dataset, whose traffic the deploy function steps.
    serving = Serving(
        "serving", cfg, group, training.workspace, scopes, _assign, client.subscription_id, opts
    )
    # What the stack knows, by setting; the app gets the union of its functions' shares
    # of it (shared/stack_contract.py), so nothing unread goes in and nothing read is left out.
    offered: dict[str, pulumi.Input[str]] = {
        c.CLOUD: "azure",
        c.AZURE_STORAGE_ACCOUNT: lake.account.name,
        c.AZURE_EVENTGRID_ENDPOINT: events.topic.endpoint.apply(lambda e: e or ""),
        c.STAGE: cfg.stage,
        c.AZURE_LOCATION: cfg.location,
        c.TRAINING_BACKEND: "azureml",
        c.SERVING_BACKEND: "cloud",
        c.AZUREML_SUBSCRIPTION_ID: client.subscription_id,
        c.AZUREML_RESOURCE_GROUP: group.name,
        c.AZUREML_WORKSPACE: training.workspace.name,
        c.AZUREML_COMPUTE: training.cpu.name,
        c.AZUREML_GPU_COMPUTE: training.gpu.name,
        c.AZUREML_ENVIRONMENT: environment_ref("validate"),
        c.AZUREML_TRAIN_ENVIRONMENT: environment_ref("train"),
        c.AZUREML_STAGING_DATASTORE: training.datastores["staging"].name,
        c.AZUREML_CURATED_DATASTORE: training.datastores["curated"].name,
        c.AZUREML_MODELS_DATASTORE: training.datastores["models"].name,
        c.AZUREML_SERVE_ENVIRONMENT: serve_environment_ref(),
        c.AZUREML_SERVING_INSTANCE_TYPE: cfg.azure_serving_instance_type,
    }
    settings = shared_environment("azure", [fn.logical for fn in cfg.topology.functions], offered)
    _grant_clusters(cfg.topology, training, scopes, client.subscription_id, opts)
    functions = Functions(
        "functions",
        cfg,
        group,
        client.subscription_id,
        scopes,
        settings,
        lake.account,
        monitoring.insights,
        opts,
    )
    serving.grant_app(
        _assign,
        client.subscription_id,
        _principal(functions.app.identity),
        events.queues[cfg.topology.queue("deploy").logical].id,
    )
    return {
        "location": cfg.location,
        "resource_group": group.name,
        "serve_urls": serving.serve_urls(),
        "data_account": lake.account.name,
        "function_app": functions.app.name,
        "workspace": training.workspace.name,
        "pipeline_topic": events.topic.name,
        "run_status_topic": run_events.name,
    }


@dataclass(frozen=True)
class RunStatusRule:
    """One subscription to the workspace's RunStatusChanged: the topology rule it plays,
    the data fields it matches exactly (``StringIn``) and the run-id prefix of its stage."""

    logical: str
    name: str
    target_queue: str
    string_in: tuple[tuple[str, tuple[str, ...]], ...]
    run_id_prefix: str


# Azure ML's end states, as RunStatusChanged reports them.
_RUN_END_STATES = ("Completed", "Failed", "Canceled")


def run_status_rules(cfg: StackConfig) -> list[RunStatusRule]:
    """Training runs to register, validation runs to validate. Both match the run's
    experiment, which the launchers set (shared.adapters.azure_ml), and the stage's name
    prefix: a training job of a dataset called ``validate-…`` would share the validation
    prefix, and every validation job starts with the stage's prefix too."""
    topo = cfg.topology
    out = []
    for logical, experiment, prefix in (
        ("training_job_ended", TRAINING_EXPERIMENT, family_prefix(cfg.stage)),
        ("validation_job_ended", VALIDATION_EXPERIMENT, processing_job_prefix(cfg.stage)),
    ):
        rule = topo.rule(logical)
        out.append(
            RunStatusRule(
                logical,
                rule.name,
                rule.target_queue,
                (
                    ("data.runStatus", _RUN_END_STATES),
                    ("data.experimentName", (experiment,)),
                ),
                prefix,
            )
        )
    return out


def _run_status_events(
    cfg: StackConfig,
    group: az.resources.ResourceGroup,
    lake: DataLake,
    events: EventWiring,
    training: Training,
    subscription: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> az.eventgrid.SystemTopic:
    """The workspace's Event Grid system topic: Azure ML's RunStatusChanged of a stage's
    run that ended goes, by the run's experiment and name, to the register queue for a
    training run (the training_job_ended rule) and to the validate queue for a validation
    run (validation_job_ended), so neither function is handed the other's run."""
    topo = cfg.topology
    topic = az.eventgrid.SystemTopic(
        "ml-events",
        system_topic_name=f"{cfg.prefix}-ml-events",
        resource_group_name=group.name,
        location=cfg.location,
        source=training.workspace.id,
        topic_type="Microsoft.MachineLearningServices.Workspaces",
        identity={"type": "SystemAssigned"},
        tags=cfg.tags,
        opts=opts,
    )
    principal = _principal(topic.identity)
    for rule in run_status_rules(cfg):
        target = topo.queue(rule.target_queue)
        az.eventgrid.SystemTopicEventSubscription(
            rule.logical,
            event_subscription_name=rule.name,
            system_topic_name=topic.name,
            resource_group_name=group.name,
            delivery_with_resource_identity=_queue_destination(lake.account, target.name),
            dead_letter_with_resource_identity=_dead_letter(lake),
            event_delivery_schema="EventGridSchema",
            filter={
                "included_event_types": [AZUREML_RUN_STATUS_CHANGED],
                "advanced_filters": [
                    az.eventgrid.StringInAdvancedFilterArgs(
                        operator_type="StringIn", key=key, values=list(values)
                    )
                    for key, values in rule.string_in
                ]
                + [
                    az.eventgrid.StringBeginsWithAdvancedFilterArgs(
                        operator_type="StringBeginsWith",
                        key="data.runId",
                        values=[rule.run_id_prefix],
                    )
                ],
            },
            retry_policy=_RETRY,
            opts=opts,
        )
        _assign(
            f"ml-events-sends-{target.logical}",
            subscription,
            principal,
            QUEUE_SENDER,
            events.queues[target.logical].id,
            opts,
        )
    _assign(
        "ml-events-dead-letters",
        subscription,
        principal,
        BLOB_CONTRIBUTOR,
        lake.dead_letters.id,
        opts,
    )
    return topic


def _grant_clusters(
    topo: Topology,
    training: Training,
    scopes: dict[tuple[str, str], pulumi.Input[str]],
    subscription: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> None:
    """Each compute cluster's identity gets the data roles its jobs need, and its role on
    the workspace's own account (code snapshots, outputs; shared keys are off there)."""
    clusters = {"cpu": training.cpu, "gpu": training.gpu}
    for kind, grants in cluster_grants(topo).items():
        principal = _principal(clusters[kind].identity)
        for grant in grants:
            scope = scopes[(grant.scope_kind, grant.scope)]
            _assign(
                f"{kind}-{_grant_name(grant)}", subscription, principal, grant.role, scope, opts
            )
        _ml_storage_assignments(kind, subscription, principal, training.storage.id, opts)


def _ml_storage_assignments(
    kind: str,
    subscription: pulumi.Input[str],
    principal: pulumi.Input[str],
    account: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> list[az.authorization.RoleAssignment]:
    """``kind``'s roles on the workspace's own account, one resource per role (fact
    azure.ml.identity_storage_roles): named by the role, as two roles under one logical
    name would be a duplicate URN. The Blob Data Contributor assignment was named
    ``<kind>-ml-storage`` before, and the alias keeps an existing stack's resource (and
    the assignment in Azure) instead of deleting and recreating it."""
    out = []
    for role in workspace_storage_roles()[kind]:
        legacy = [pulumi.Alias(name=f"{kind}-ml-storage")] if role == BLOB_CONTRIBUTOR else []
        out.append(
            _assign(
                f"{kind}-ml-storage-{role[:8]}",
                subscription,
                principal,
                role,
                account,
                pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=legacy)),
            )
        )
    return out


def _scopes(
    topo: Topology,
    lake: DataLake,
    lineage: Lineage,
    events: EventWiring,
    training: Training,
    monitoring: Monitoring,
) -> dict[tuple[str, str], pulumi.Input[str]]:
    scopes: dict[tuple[str, str], pulumi.Input[str]] = {
        ("container", k): v.id for k, v in lake.containers.items()
    }
    scopes |= {("queue", k): v.id for k, v in events.queues.items()}
    scopes |= {("table", k): v.id for k, v in lineage.tables.items()}
    scopes[("topic", "pipeline")] = events.topic.id
    scopes[("workspace", "workspace")] = training.workspace.id
    scopes[("account", "ml")] = training.storage.id
    scopes[("insights", "insights")] = monitoring.insights.id
    return scopes
