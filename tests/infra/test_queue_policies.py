"""Who may send to the stack's queues: its own rules, its scheduler and its functions'
failed asynchronous calls; not another principal of the account, however broad its own
policy, and not EventBridge on behalf of someone else's rule."""

from __future__ import annotations

import json
from typing import Any

import pytest

from infra.aws.events import queue_policy, sender_roles
from infra.aws.iam import function_role_name
from infra.config import StackConfig
from shared.adapters.codedeploy import serve_function_name
from shared.cloud_facts import fact, value
from shared.identifiers import family_head, scheduler_role_name
from tests.infra.harness import ACCOUNT, Program
from tests.infra.resource_policy import Request, may_send

INTRUDER = f"arn:aws:iam::{ACCOUNT}:role/some-admin"
EVENTS = value("aws.eventbridge.sqs_target_principal")


def _role(name: str) -> str:
    return f"arn:aws:iam::{ACCOUNT}:role/{name}"


def _queues(program: Program) -> dict[str, dict[str, Any]]:
    """Every queue and DLQ by name, with its policy (None when it has none)."""
    policies = {
        p.outputs["queueUrl"]: json.loads(p.outputs["policy"])
        for p in program.of_type("aws:sqs/queuePolicy:QueuePolicy")
    }
    return {
        q.outputs["name"]: {"arn": q.outputs["arn"], "policy": policies.get(q.outputs["url"])}
        for q in program.of_type("aws:sqs/queue:Queue")
    }


def _rules(program: Program) -> dict[str, str]:
    return {
        r.outputs["name"]: r.outputs["arn"]
        for r in program.of_type("aws:cloudwatch/eventRule:EventRule")
    }


def test_every_queue_has_a_policy(aws_program: Program) -> None:
    missing = [name for name, q in _queues(aws_program).items() if q["policy"] is None]
    assert missing == []


def test_another_principal_of_the_account_cannot_send_to_any_queue(
    aws_program: Program,
) -> None:
    """The intruder's own policy allows sqs:SendMessage on *: only an explicit Deny in the
    queue policy stops it (fact aws.sqs.deny_foreign_senders_keys)."""
    fact("aws.sqs.deny_foreign_senders_keys")
    admitted = [
        name
        for name, q in _queues(aws_program).items()
        if may_send(
            q["policy"],
            Request("sqs:SendMessage", q["arn"], role_arn=INTRUDER),
            identity_allows=True,
        )
    ]
    assert admitted == []


def test_eventbridge_sends_only_for_the_stack_s_rules(
    aws_program: Program, aws_cfg: StackConfig
) -> None:
    topo, queues, rules = aws_cfg.topology, _queues(aws_program), _rules(aws_program)
    for r in topo.rules:
        rule_arn = rules[r.name]
        q = topo.queue(r.target_queue)
        for name in (q.name, q.dlq_name):
            target = queues[name]
            ours = Request(
                "sqs:SendMessage",
                target["arn"],
                service=EVENTS,
                context={"aws:SourceArn": rule_arn},
            )
            assert may_send(target["policy"], ours, identity_allows=False), (r.name, name)
            # The same service, for a rule of another stack (or account): not admitted.
            foreign = Request(
                "sqs:SendMessage",
                target["arn"],
                service=EVENTS,
                context={"aws:SourceArn": rule_arn.replace(aws_cfg.prefix, "dhow-other")},
            )
            assert not may_send(target["policy"], foreign, identity_allows=False), name


def test_the_stack_s_own_senders_are_not_denied(aws_program: Program, aws_cfg: StackConfig) -> None:
    """Scheduler sends the drift checks and their dead letters with its role; Lambda sends a
    function's failed asynchronous call to its DLQ with the function's role (facts
    aws.sqs.scheduler_dlq_sends_with_execution_role,
    aws.sqs.lambda_async_dlq_sends_with_execution_role). The Deny must spare them."""
    fact("aws.sqs.scheduler_dlq_sends_with_execution_role")
    fact("aws.sqs.lambda_async_dlq_sends_with_execution_role")
    topo, queues = aws_cfg.topology, _queues(aws_program)
    drift = topo.queue("drift")
    scheduler = _role(scheduler_role_name(aws_cfg.stage))
    for name in (drift.name, drift.dlq_name):
        req = Request("sqs:SendMessage", queues[name]["arn"], role_arn=scheduler)
        assert may_send(queues[name]["policy"], req, identity_allows=True), name
    checked = 0
    for fn in topo.functions:
        if fn.trigger_queue is None:
            continue
        dlq = topo.queue(fn.trigger_queue).dlq_name
        role = _role(function_role_name(fn.name))
        req = Request("sqs:SendMessage", queues[dlq]["arn"], role_arn=role)
        assert may_send(queues[dlq]["policy"], req, identity_allows=True), fn.name
        # ...and only its own: a function's role is no sender to another function's queue.
        other = topo.queue("ingest" if fn.trigger_queue != "ingest" else "validate")
        req = Request("sqs:SendMessage", queues[other.name]["arn"], role_arn=role)
        assert not may_send(queues[other.name]["policy"], req, identity_allows=True)
        checked += 1
    failures = queues[f"{aws_cfg.prefix}-async-failures"]
    for spec in aws_cfg.specs:
        role = _role(function_role_name(serve_function_name(family_head(topo.stage), spec.name)))
        req = Request("sqs:SendMessage", failures["arn"], role_arn=role)
        assert may_send(failures["policy"], req, identity_allows=True), spec.name
    assert checked == sum(1 for f in topo.functions if f.trigger_queue)


def test_every_sender_the_stack_configures_is_listed(aws_cfg: StackConfig) -> None:
    """The senders are derived from the same topology the stack wires: every schedule's
    queue and every queue-triggered function's DLQ has its sender."""
    roles = sender_roles(aws_cfg)
    topo = aws_cfg.topology
    for s in topo.schedules:
        assert scheduler_role_name(aws_cfg.stage) in roles[s.target_queue]
        assert scheduler_role_name(aws_cfg.stage) in roles[f"{s.target_queue}-dlq"]
    for fn in topo.functions:
        if fn.trigger_queue:
            assert function_role_name(fn.name) in roles[f"{fn.trigger_queue}-dlq"]


@pytest.mark.parametrize("operator", [f"arn:aws:iam::{ACCOUNT}:role/oncall", "*"])
def test_a_configured_operator_may_redrive_into_a_source_queue(operator: str) -> None:
    """A redrive sends with the operator's own permissions (fact
    aws.sqs.redrive_sends_with_caller_permissions): dhow:queueOperators lists who may."""
    fact("aws.sqs.redrive_sends_with_caller_permissions")
    arn = f"arn:aws:sqs:me-central-1:{ACCOUNT}:dhow-x-ingest"
    policy = json.loads(queue_policy(arn, [], [operator] if operator != "*" else []))
    req = Request("sqs:SendMessage", arn, role_arn=f"arn:aws:iam::{ACCOUNT}:role/oncall")
    assert may_send(policy, req, identity_allows=True) is (operator != "*")


def test_the_evaluator_follows_iam_on_missing_keys() -> None:
    """The evaluator itself, on IAM's documented rule (fact
    aws.iam.negated_condition_missing_key): a negated operator on a missing key holds."""
    rule = value("aws.iam.negated_condition_missing_key")
    assert rule == {"missing_key_negated": True, "missing_key_positive": False}
    arn = f"arn:aws:sqs:me-central-1:{ACCOUNT}:q"
    deny_unless_source = {
        "Statement": [
            {
                "Effect": "Deny",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": arn,
                "Condition": {"ArnNotLike": {"aws:SourceArn": "arn:aws:events:*:*:rule/x"}},
            }
        ]
    }
    # A role's session carries no aws:SourceArn: ArnNotLike holds, and the Deny applies.
    req = Request("sqs:SendMessage", arn, role_arn=INTRUDER)
    assert not may_send(deny_unless_source, req, identity_allows=True)
