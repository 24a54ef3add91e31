"""The lineage table: every step of every dataset, with point-in-time recovery."""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import StackConfig


@dataclass(frozen=True)
class LineageArgs:
    cfg: StackConfig
    key: aws.kms.Key


class Lineage(pulumi.ComponentResource):
    tables: dict[str, aws.dynamodb.Table]

    def __init__(
        self, name: str, args: LineageArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:aws:Lineage", name, None, opts)
        cfg, key = args.cfg, args.key
        child = pulumi.ResourceOptions(parent=self)
        self.tables = {
            t.logical: aws.dynamodb.Table(
                t.logical,
                name=t.name,
                billing_mode="PAY_PER_REQUEST",
                hash_key="pk",
                range_key="sk",
                attributes=[{"name": "pk", "type": "S"}, {"name": "sk", "type": "S"}],
                point_in_time_recovery={"enabled": True},
                server_side_encryption={"enabled": True, "kms_key_arn": key.arn},
                deletion_protection_enabled=True,
                tags=cfg.tags,
                opts=child,
            )
            for t in cfg.topology.tables
        }
        self.register_outputs({"tables": {k: t.name for k, t in self.tables.items()}})
