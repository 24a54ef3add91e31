"""The data account (a container per bucket of the topology) and the stack's Key Vault."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_azure_native as az

from infra.azure.names import account_name, vault_name
from infra.config import StackConfig
from shared.cloud_facts import value


def storage_account(
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


@dataclass(frozen=True)
class DataLakeArgs:
    cfg: StackConfig
    group: az.resources.ResourceGroup
    tenant_id: pulumi.Input[str]
    subscription: pulumi.Input[str]


class DataLake(pulumi.ComponentResource):
    """The data account (a container per bucket of the topology) and Key Vault."""

    def __init__(
        self, name: str, args: DataLakeArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:azure:DataLake", name, None, opts)
        cfg, group, subscription = args.cfg, args.group, args.subscription
        child = pulumi.ResourceOptions(parent=self)
        self.account = storage_account("data", cfg, group, subscription, child)
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
            container_name=cfg.name("dead-letters"),
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
                tenant_id=args.tenant_id,
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
