"""The event wiring: the pipeline bus, the topology's rules, and the queues (each with
its dead-letter queue, all KMS-encrypted) that the rules deliver to."""

from __future__ import annotations

import json

import pulumi
import pulumi_aws as aws

from infra.config import StackConfig


def queue_policy(queue_arn: str, source_arns: list[str]) -> str:
    """EventBridge may send to the queue only for the stack's own rules."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "FromStackRules",
                    "Effect": "Allow",
                    "Principal": {"Service": "events.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": sorted(source_arns)}},
                }
            ],
        }
    )


class EventWiring(pulumi.ComponentResource):
    queues: dict[str, aws.sqs.Queue]
    dlqs: dict[str, aws.sqs.Queue]
    rules: dict[str, aws.cloudwatch.EventRule]

    def __init__(
        self, name: str, cfg: StackConfig, key: aws.kms.Key, opts: pulumi.ResourceOptions
    ) -> None:
        super().__init__("dhow:aws:EventWiring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        topo = cfg.topology
        self.bus = aws.cloudwatch.EventBus(
            "pipeline", name=topo.bus_name, tags=cfg.tags, opts=child
        )
        self.dlqs, self.queues = {}, {}
        for q in topo.queues:
            dlq = aws.sqs.Queue(
                f"{q.logical}-dlq",
                name=q.dlq_name,
                kms_master_key_id=key.arn,
                kms_data_key_reuse_period_seconds=300,
                message_retention_seconds=q.dlq_retention_s,
                tags=cfg.tags,
                opts=child,
            )
            self.dlqs[q.logical] = dlq
            self.queues[q.logical] = aws.sqs.Queue(
                q.logical,
                name=q.name,
                kms_master_key_id=key.arn,
                kms_data_key_reuse_period_seconds=300,
                visibility_timeout_seconds=q.visibility_timeout_s,
                message_retention_seconds=q.retention_s,
                redrive_policy=dlq.arn.apply(
                    lambda arn, n=q.max_receive_count: json.dumps(
                        {"deadLetterTargetArn": arn, "maxReceiveCount": n}
                    )
                ),
                tags=cfg.tags,
                opts=child,
            )

        self.rules = {}
        # Each queue a rule delivers to (and its DLQ, for what cannot be delivered) admits
        # exactly the rules that send to it.
        senders: dict[str, tuple[aws.sqs.Queue, list[pulumi.Output[str]]]] = {}
        for r in topo.rules:
            bus_name = "default" if r.bus == "default" else self.bus.name
            rule = aws.cloudwatch.EventRule(
                r.logical,
                name=r.name,
                event_bus_name=bus_name,
                event_pattern=json.dumps(r.pattern),
                tags=cfg.tags,
                opts=child,
            )
            aws.cloudwatch.EventTarget(
                r.logical,
                rule=rule.name,
                event_bus_name=bus_name,
                arn=self.queues[r.target_queue].arn,
                # What EventBridge cannot deliver is kept in the target's DLQ, not dropped.
                dead_letter_config={"arn": self.dlqs[r.target_queue].arn},
                retry_policy={"maximum_event_age_in_seconds": 86400, "maximum_retry_attempts": 185},
                opts=child,
            )
            self.rules[r.logical] = rule
            for key, queue in (
                (r.target_queue, self.queues[r.target_queue]),
                (f"{r.target_queue}-dlq", self.dlqs[r.target_queue]),
            ):
                senders.setdefault(key, (queue, []))[1].append(rule.arn)

        for target, (queue, arns) in senders.items():
            aws.sqs.QueuePolicy(
                f"{target}-from-rules",
                queue_url=queue.url,
                policy=pulumi.Output.all(queue.arn, *arns).apply(
                    lambda v: queue_policy(v[0], list(v[1:]))
                ),
                opts=child,
            )
        self.register_outputs(
            {"bus": self.bus.name, "queues": {k: q.url for k, q in self.queues.items()}}
        )
