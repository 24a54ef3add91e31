"""The event wiring: the pipeline bus, the topology's rules, and the queues (each with
its dead-letter queue, all KMS-encrypted) that the rules deliver to."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.aws.iam import function_role_name
from infra.config import StackConfig
from shared.adapters.codedeploy import serve_function_name
from shared.cloud_facts import value
from shared.identifiers import family_head, scheduler_role_name


def queue_policy(queue_arn: str, rule_arns: list[str], sender_roles: list[str]) -> str:
    """Who may send to one queue of the stack.

    EventBridge may send only for the stack's own rules (``aws:SourceArn``). Everyone
    else in the account is denied outright, whatever their own policies allow, unless
    they are one of ``sender_roles``: the roles the stack sends with (the scheduler's,
    a function's for its failed asynchronous calls) and the operators named in
    ``dhow:queueOperators`` (a DLQ redrive sends with the operator's own permissions).
    AWS service principals are left out of the Deny: a service can act on the queue
    only through the Allow above, which names the stack's rules (facts
    aws.sqs.deny_foreign_senders_keys, aws.iam.negated_condition_missing_key)."""
    keys = value("aws.sqs.deny_foreign_senders_keys")
    statements: list[dict[str, object]] = []
    if rule_arns:
        statements.append(
            {
                "Sid": "FromStackRules",
                "Effect": "Allow",
                "Principal": {"Service": "events.amazonaws.com"},
                "Action": "sqs:SendMessage",
                "Resource": queue_arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": sorted(rule_arns)}},
            }
        )
    deny_when: dict[str, dict[str, object]] = {
        "Bool": {keys["service"]: "false"},
    }
    if sender_roles:
        deny_when["ArnNotLike"] = {keys["principal"]: sorted(set(sender_roles))}
    statements.append(
        {
            "Sid": "NoOtherSenders",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "sqs:SendMessage",
            "Resource": queue_arn,
            "Condition": deny_when,
        }
    )
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


def sender_roles(cfg: StackConfig) -> dict[str, list[str]]:
    """The roles the stack itself sends to each queue with ("drift", "drift-dlq", ...;
    the serve functions' "async-failures"), by role name: EventBridge Scheduler sends
    the drift checks (and what it cannot deliver to their DLQ) with its role, and Lambda
    sends a function's failed asynchronous call to its DLQ with the function's role.
    Nothing else in the stack sends to a queue: the functions only receive and delete."""
    topo = cfg.topology
    out: dict[str, list[str]] = {}
    for sched in topo.schedules:
        for key in (sched.target_queue, f"{sched.target_queue}-dlq"):
            out.setdefault(key, []).append(scheduler_role_name(cfg.stage))
    for fn in topo.functions:
        if fn.trigger_queue is not None:
            out.setdefault(f"{fn.trigger_queue}-dlq", []).append(function_role_name(fn.name))
        else:
            for spec in cfg.specs:
                if spec.serving.target == "lambda":
                    deployed = serve_function_name(family_head(cfg.stage), spec.name)
                    out.setdefault("async-failures", []).append(function_role_name(deployed))
    return out


def role_arns(account: str, names: list[str], cfg: StackConfig) -> list[str]:
    """The stack's sender roles as ARNs, and the operators who may redrive a DLQ."""
    return [f"arn:aws:iam::{account}:role/{n}" for n in names] + list(cfg.queue_operators)


@dataclass(frozen=True)
class EventWiringArgs:
    cfg: StackConfig
    account: pulumi.Output[str]
    key: aws.kms.Key


class EventWiring(pulumi.ComponentResource):
    queues: dict[str, aws.sqs.Queue]
    dlqs: dict[str, aws.sqs.Queue]
    rules: dict[str, aws.cloudwatch.EventRule]

    def __init__(
        self, name: str, args: EventWiringArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("dhow:aws:EventWiring", name, None, opts)
        cfg, account, key = args.cfg, args.account, args.key
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
        rule_arns: dict[str, list[pulumi.Output[str]]] = {}
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
            for key in (r.target_queue, f"{r.target_queue}-dlq"):
                rule_arns.setdefault(key, []).append(rule.arn)

        # Every queue and DLQ has a policy, those no rule sends to too: without one, any
        # principal of the account that may sqs:SendMessage could feed a function.
        roles = sender_roles(cfg)
        every = [(q.logical, self.queues[q.logical]) for q in topo.queues] + [
            (f"{q.logical}-dlq", self.dlqs[q.logical]) for q in topo.queues
        ]
        for target, queue in every:
            names = roles.get(target, [])

            def document(v: list[str], names: list[str] = names) -> str:
                return queue_policy(v[1], list(v[2:]), role_arns(v[0], names, cfg))

            aws.sqs.QueuePolicy(
                f"{target}-from-rules",
                queue_url=queue.url,
                policy=pulumi.Output.all(account, queue.arn, *rule_arns.get(target, [])).apply(
                    document
                ),
                opts=child,
            )
        self.register_outputs(
            {"bus": self.bus.name, "queues": {k: q.url for k, q in self.queues.items()}}
        )
