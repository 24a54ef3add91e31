"""IAM measured, not believed: every AWS call each function made during the integration
tests, checked against the policy `pulumi up` gives that function's role.

The calls are recorded by ``shared/adapters/aws_calls.py`` (this folder's conftest points
``DHOW_AWS_CALL_LOG`` at the session's tmp dir); each is mapped to the IAM actions it
needs by the table in ``shared/cloud_facts/aws-iam.yaml`` (``aws.iam.actions_for_calls``,
from the Service Authorization Reference), and each action is evaluated against
``infra.aws.iam.function_policy`` by moto's IAM evaluator (tests/infra/iam_check.py says
why that one). The report, with the grants no test exercised, is written beside the log.

This module runs last in the integration session (conftest orders it), after the calls.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from infra.aws import iam
from shared.cloud_facts import value
from shared.topology import Topology, build_topology
from tests.conftest import ITEST_STAGE
from tests.infra.iam_check import allows

# LocalStack's account, which the queue URLs and the local runner use. moto, which plays
# SageMaker locally, writes its own (123456789012) into the ARNs it returns; in the cloud
# the stack is one account, so ARNs are read with this one.
LOCAL_ACCOUNT = "000000000000"
_ARN_ACCOUNT = re.compile(r"^(arn:aws:[^:]+:[^:]*:)\d{12}(:)")
KEY_ARN = f"arn:aws:kms:me-central-1:{LOCAL_ACCOUNT}:key/stack-key"
# Code that plays a managed service locally (the local training job stands in for
# SageMaker's, the local deployer for CodeDeploy's): in the cloud those calls are the
# service's, not the function's role's. The runner's own polling is not among them: it
# plays the event-source mapping, which polls with the function's role.
STAND_INS = ("dhow_local.training", "dhow_local.serving")
_PLACEHOLDER = re.compile(r"\{([A-Za-z.]+)\}")


@dataclass(frozen=True)
class Need:
    """One action one call needs, on one resource."""

    function: str
    call: str
    action: str
    resource: str
    context: tuple[tuple[str, str], ...] = ()


@dataclass
class Measure:
    recorded: int = 0
    stand_in: int = 0
    judged: int = 0
    allowed: int = 0
    denied: list[str] = field(default_factory=list)
    unmapped: Counter[str] = field(default_factory=Counter)
    needs: list[Need] = field(default_factory=list)


def _lookup(params: dict[str, Any], name: str, region: str, account: str) -> list[str]:
    if name == "region":
        return [region]
    if name == "account":
        return [account]
    if name == "QueueName":
        return [str(params["QueueUrl"]).rstrip("/").rsplit("/", 1)[-1]]
    if name == "EventBusName":
        return [str(b) for b in params.get("EventBusNames", ["default"])]
    node: Any = params
    for part in name.split("."):
        node = node[part]
    return [str(node)]


def _resources(template: str, params: dict[str, Any], region: str, account: str) -> list[str]:
    """``template`` with the call's values; a value that is itself an ARN is the resource."""
    out = [template]
    for name in _PLACEHOLDER.findall(template):
        values = _lookup(params, name, region, account)
        expanded = []
        for partial in out:
            for v in values:
                if v.startswith("arn:"):
                    expanded.append(_ARN_ACCOUNT.sub(rf"\g<1>{account}\g<2>", v))
                else:
                    expanded.append(partial.replace(f"{{{name}}}", v))
        out = expanded
    return out


def needs_of(call: dict[str, Any], region: str, account: str) -> list[Need] | None:
    """The actions one recorded call needs; None when the table does not know the call."""
    table: dict[str, list[dict[str, Any]]] = value("aws.iam.actions_for_calls")
    key = f"{call['service']}.{call['operation']}"
    if key not in table:
        return None
    found = value("aws.s3.missing_key_status_without_list_bucket")["with_list_bucket"]
    params = call["params"]
    out = []
    for need in table[key]:
        when = need.get("when")
        if when == "missing" and call["status"] != found:
            continue
        if when == "tagged" and not params.get("Tagged"):
            continue
        source = params.get("CopySource")
        versioned = bool(
            params.get("VersionId") or (isinstance(source, dict) and source.get("VersionId"))
        )
        if (when == "versioned" and not versioned) or (when == "unversioned" and versioned):
            continue
        context = {
            k: _resources(v, params, region, account)[0]
            for k, v in (need.get("context") or {}).items()
        }
        for resource in _resources(need["resource"], params, region, account):
            out.append(
                Need(
                    call["function"], key, need["action"], resource, tuple(sorted(context.items()))
                )
            )
    return out


def measure(
    calls: list[dict[str, Any]], policies: dict[str, dict[str, Any]], region: str
) -> Measure:
    m = Measure(recorded=len(calls))
    for call in calls:
        if str(call.get("origin") or "").startswith(STAND_INS):
            m.stand_in += 1
            continue
        needs = needs_of(call, region, LOCAL_ACCOUNT)
        if needs is None:
            m.unmapped[f"{call['service']}.{call['operation']}"] += 1
            continue
        m.judged += 1
        policy = policies[call["function"]]
        refused = [n for n in needs if not allows(policy, n.action, n.resource, dict(n.context))]
        if refused:
            m.denied += [
                f"{n.function}: {n.call} needs {n.action} on {n.resource}" for n in refused
            ]
        else:
            m.allowed += 1
        m.needs += needs
    return m


def never_exercised(m: Measure, policies: dict[str, dict[str, Any]]) -> list[str]:
    """Each (function, statement, action) of the policies that no judged call needed."""
    out = []
    for function, policy in sorted(policies.items()):
        mine = [n for n in m.needs if n.function == function]
        for stmt in policy["Statement"]:
            one = {"Version": policy["Version"], "Statement": [stmt]}
            for action in stmt["Action"]:
                if not any(
                    n.action == action and allows(one, action, n.resource, dict(n.context))
                    for n in mine
                ):
                    out.append(f"{function} {stmt['Sid']} {action}")
    return out


def _policies(topo: Topology, region: str) -> dict[str, dict[str, Any]]:
    scope = iam.AwsScope(region, LOCAL_ACCOUNT, topo.stage)
    return {
        fn.logical: iam.function_policy(
            topo,
            fn,
            scope,
            function_name=fn.name,
            key_arn=KEY_ARN,
            dlq_arn=scope.arn("sqs", f"{fn.name}-dlq"),
        )
        for fn in topo.functions
    }


def test_every_recorded_call_is_allowed_by_its_function_s_policy(
    aws_call_log: Path, aws_platform: dict[str, Any]
) -> None:
    region = aws_platform["settings"].aws_region
    calls = [json.loads(line) for line in aws_call_log.read_text().splitlines() if line]
    if not calls:
        pytest.fail("no AWS calls recorded: run this with the AWS integration tests")
    policies = _policies(build_topology(ITEST_STAGE), region)
    m = measure(calls, policies, region)
    unused = never_exercised(m, policies)
    report = {
        "calls_recorded": m.recorded,
        "calls_by_local_stand_ins": m.stand_in,
        "calls_judged": m.judged,
        "calls_allowed": m.allowed,
        "denied": m.denied,
        "unmapped": dict(m.unmapped),
        "grants": sum(len(s["Action"]) for p in policies.values() for s in p["Statement"]),
        "grants_never_exercised": unused,
    }
    out = aws_call_log.with_name("iam-measured.json")
    out.write_text(json.dumps(report, indent=2))
    print(
        f"\nIAM measured: {m.recorded} calls recorded, {m.stand_in} by local stand-ins of "
        f"managed services, {m.judged} judged, {m.allowed} allowed by the function's policy; "
        f"{len(unused)} of {report['grants']} grants never exercised (list in {out})"
    )
    for line in unused:
        print(f"  never exercised: {line}")
    assert not m.unmapped, f"calls aws-iam.yaml cannot map to actions: {dict(m.unmapped)}"
    assert not m.denied, "\n".join(sorted(set(m.denied)))
    assert m.allowed == m.judged > 0
