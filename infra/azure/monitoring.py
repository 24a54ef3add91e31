"""Monitoring on Azure: the Log Analytics workspace and Application Insights."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_azure_native as az

from infra.config import StackConfig


@dataclass(frozen=True)
class MonitoringArgs:
    cfg: StackConfig
    group: az.resources.ResourceGroup


class Monitoring(pulumi.ComponentResource):
    """Logs and Application Insights, in the stack's location."""

    def __init__(
        self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:azure:Monitoring", name, None, opts)
        cfg, group = args.cfg, args.group
        child = pulumi.ResourceOptions(parent=self)
        self.logs = az.operationalinsights.Workspace(
            "logs",
            workspace_name=cfg.name("logs"),
            resource_group_name=group.name,
            location=cfg.location,
            sku={"name": "PerGB2018"},
            retention_in_days=min(cfg.log_retention_days, 730),
            tags=cfg.tags,
            opts=child,
        )
        self.insights = az.applicationinsights.Component(
            "insights",
            resource_name_=cfg.name("insights"),
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
