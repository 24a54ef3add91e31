"""Training on Azure: the Azure ML workspace with its registry, a GPU training cluster
(low priority when a spec asks for spot capacity) and a CPU cluster for validation
hand-offs, the identity-based datastores, the job environments, and the clusters' data
roles."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass

import pulumi
import pulumi_azure_native as az

from infra.azure.assignments import assign, grant_name, ml_storage_assignments, principal_of
from infra.azure.data_lake import DataLake
from infra.azure.names import account_name, ml_workspace_name
from infra.azure.roles import cluster_grants
from infra.config import REPO_ROOT, StackConfig
from shared.cloud_facts import value
from shared.topology import Topology


@dataclass(frozen=True)
class TrainingArgs:
    cfg: StackConfig
    group: az.resources.ResourceGroup
    # The workspace's own account (its system datastores), reached by identity.
    storage: az.storage.StorageAccount
    vault: az.keyvault.Vault
    insights: az.applicationinsights.Component
    lake: DataLake
    subscription: pulumi.Input[str]


class Training(pulumi.ComponentResource):
    """The Azure ML workspace, its GPU training cluster (low priority when a spec asks
    for spot capacity) and a CPU cluster for validation hand-offs; both scale to zero."""

    def __init__(
        self, name: str, args: TrainingArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:azure:Training", name, None, opts)
        cfg, group, lake, subscription = args.cfg, args.group, args.lake, args.subscription
        storage, vault, insights = args.storage, args.vault, args.insights
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
        self.registry_push = assign(
            "workspace-registry-push",
            subscription,
            principal_of(self.workspace.identity),
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


def grant_clusters(
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
        principal = principal_of(clusters[kind].identity)
        for grant in grants:
            scope = scopes[(grant.scope_kind, grant.scope)]
            assign(f"{kind}-{grant_name(grant)}", subscription, principal, grant.role, scope, opts)
        ml_storage_assignments(kind, subscription, principal, training.storage.id, opts)
