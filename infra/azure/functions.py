"""The functions on Azure: one Flex Consumption Python Function App with a system
identity, its own host storage account, its code (infra/azure/app_package.py) and the
identity's least-privilege role assignments (infra/azure/roles.py)."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_azure_native as az

from infra.azure import app_package
from infra.azure.assignments import (
    assign,
    assignment_name,
    grant_name,
    ml_storage_assignments,
    principal_of,
    role_id,
)
from infra.azure.data_lake import storage_account
from infra.azure.roles import (
    BLOB_OWNER,
    QUEUE_CONTRIBUTOR,
    TABLE_CONTRIBUTOR,
    WORKSPACE_ROLE,
    function_app_grants,
    workspace_role_actions,
    workspace_role_guid,
    workspace_role_name,
)
from infra.config import StackConfig
from shared.cloud_facts import value

# The connection every queue binding of functions/function_app.py names: the data
# account's queue service, reached with the app's system-assigned identity.
QUEUE_CONNECTION = "DhowQueues"


@dataclass(frozen=True)
class FunctionsArgs:
    cfg: StackConfig
    group: az.resources.ResourceGroup
    subscription: pulumi.Input[str]
    # Every role scope of the stack, by (scope kind, logical name) as roles.Grant has them.
    scopes: dict[tuple[str, str], pulumi.Input[str]]
    # The app settings: the union of its functions' shares (shared/stack_contract.py).
    settings: dict[str, pulumi.Input[str]]
    data_account: az.storage.StorageAccount
    insights: az.applicationinsights.Component


class Functions(pulumi.ComponentResource):
    """A Flex Consumption Python Function App with a system identity, its own host
    storage account, and the identity's least-privilege role assignments."""

    def __init__(
        self, name: str, args: FunctionsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:azure:Functions", name, None, opts)
        cfg, group, subscription, scopes = args.cfg, args.group, args.subscription, args.scopes
        settings, data_account, insights = args.settings, args.data_account, args.insights
        child = pulumi.ResourceOptions(parent=self)
        self.host = storage_account("host", cfg, group, subscription, child)
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
            name=cfg.name("plan"),
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
            name=cfg.name("functions"),
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
        principal = principal_of(self.app.identity)
        # The host's own account: blobs (deployment package, leases), queues, tables.
        host_roles = (
            (BLOB_OWNER, "blob"),
            (QUEUE_CONTRIBUTOR, "queue"),
            (TABLE_CONTRIBUTOR, "table"),
        )
        self.assignments = [
            assign(f"host-{short}", subscription, principal, role, self.host.id, child)
            for role, short in host_roles
        ]
        workspace = scopes[("workspace", "workspace")]
        self.workspace_role = workspace_role_definition(cfg, subscription, workspace, child)
        for grant in function_app_grants(cfg.topology):
            scope = scopes[(grant.scope_kind, grant.scope)]
            if grant.role == WORKSPACE_ROLE:
                self.assignments.append(
                    assign_workspace_role(
                        grant_name(grant), cfg, subscription, principal, scope, self
                    )
                )
                continue
            self.assignments.append(
                assign(grant_name(grant), subscription, principal, grant.role, scope, child)
            )
        # The workspace's own account: the code upload to its default blob datastore.
        self.assignments += ml_storage_assignments(
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


def workspace_role_definition(
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


def assign_workspace_role(
    logical: str,
    cfg: StackConfig,
    subscription: pulumi.Input[str],
    principal: pulumi.Input[str],
    scope: pulumi.Input[str],
    functions: Functions,
) -> az.authorization.RoleAssignment:
    """``assign`` for the custom role, whose GUID is known only with the subscription;
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
