"""The lineage table: an Azure Table per table of the topology."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_azure_native as az

from infra.config import StackConfig
from shared.wiring import azure_table_name


@dataclass(frozen=True)
class LineageArgs:
    cfg: StackConfig
    group: az.resources.ResourceGroup
    account: az.storage.StorageAccount


class Lineage(pulumi.ComponentResource):
    """The lineage table(s) of the topology, in the data account."""

    def __init__(
        self, name: str, args: LineageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:azure:Lineage", name, None, opts)
        cfg, group, account = args.cfg, args.group, args.account
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
