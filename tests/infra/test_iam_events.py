"""Each function may put on the bus exactly the event types its service publishes.

What a service publishes is read from its code: every ``.publish(...)`` in the service
module its entry point builds (through ``shared.wiring.build_<x>_service``) is handed an
event constructor, whose class name is the event's detail-type. The generated policy is
then judged by moto's IAM evaluator with the request's ``events:detail-type`` and
``events:source``, for every pipeline event type."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

from infra.aws import iam
from shared.cloud_facts import value
from shared.constants import EVENT_SOURCE
from shared.events import EVENT_TYPES
from shared.topology import build_topology
from tests.infra.harness import ACCOUNT
from tests.infra.iam_check import allows, service_reference

ROOT = Path(__file__).resolve().parents[2]
STAGE = "uae-prod"
SCOPE = iam.AwsScope("me-central-1", ACCOUNT, STAGE)
TOPOLOGY = build_topology(STAGE)
BUS = SCOPE.arn("events", f"event-bus/{TOPOLOGY.bus_name}")
KEYS = value("aws.eventbridge.put_events_condition_keys")


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), filename=str(path))


def _service_modules(logical: str) -> set[str]:
    """The shared.services modules that ``logical``'s entry point builds its service from."""
    core = _tree(ROOT / "functions" / logical / "core.py")
    builders = {
        n.func.id
        for n in ast.walk(core)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        if n.func.id.startswith("build_") and n.func.id.endswith("_service")
    }
    out: set[str] = set()
    for fn in _tree(ROOT / "shared" / "wiring.py").body:
        if isinstance(fn, ast.FunctionDef) and fn.name in builders:
            out |= {
                str(n.module)
                for n in ast.walk(fn)
                if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("shared.services.")
            }
    return out


def _published(module: str) -> set[str]:
    """The event types ``module``'s code hands to ``.publish``; fails on a publish whose
    argument is not an event constructor, where reading the code could miss a type."""
    path = ROOT / (module.replace(".", "/") + ".py")
    out: set[str] = set()
    for n in ast.walk(_tree(path)):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute):
            if n.func.attr != "publish" or not n.args:
                continue
            arg = n.args[0]
            assert isinstance(arg, ast.Call), f"{path.name}:{n.lineno}: publish(<constructor>)"
            assert isinstance(arg.func, ast.Name), f"{path.name}:{n.lineno}"
            assert arg.func.id in EVENT_TYPES, f"{path.name}:{n.lineno}: {arg.func.id}"
            out.add(arg.func.id)
    return out


def _publishers() -> dict[str, set[str]]:
    return {
        fn.logical: set().union(*(_published(m) for m in _service_modules(fn.logical)))
        for fn in TOPOLOGY.functions
        if fn.trigger_queue is not None
    }


def _policy(logical: str) -> dict[str, Any]:
    fn = TOPOLOGY.function(logical)
    return iam.function_policy(
        TOPOLOGY, fn, SCOPE, function_name=fn.name, key_arn="arn:aws:kms:k", dlq_arn="arn:dlq"
    )


def test_each_function_declares_exactly_what_its_service_publishes() -> None:
    derived = _publishers()
    assert derived["register"] >= {"ModelApproved"}  # the reading of the code finds them
    declared = {lg: set(TOPOLOGY.function(lg).publishes) for lg in derived}
    assert declared == derived


def test_put_events_supports_the_keys_the_policy_conditions_on() -> None:
    entry = service_reference()["events:putevents"]
    keys = {k for rt in entry["resource_types"] for k in rt["condition_keys"]}
    assert {KEYS["detail_type"], KEYS["source"]} <= keys


@pytest.mark.parametrize("logical", sorted(_publishers()))
def test_a_function_may_put_only_its_own_event_types(logical: str) -> None:
    policy = _policy(logical)
    allowed = {
        t
        for t in EVENT_TYPES
        if allows(
            policy,
            "events:PutEvents",
            BUS,
            {KEYS["detail_type"]: t, KEYS["source"]: EVENT_SOURCE},
        )
    }
    assert allowed == set(TOPOLOGY.function(logical).publishes)
    # Nor as another source (aws.sagemaker, say) with one of its own types.
    mine = TOPOLOGY.function(logical).publishes[0]
    context = {KEYS["detail_type"]: mine, KEYS["source"]: "aws.sagemaker"}
    assert not allows(policy, "events:PutEvents", BUS, context)


def test_drift_check_cannot_approve_a_model() -> None:
    context = {KEYS["detail_type"]: "ModelApproved", KEYS["source"]: EVENT_SOURCE}
    assert not allows(_policy("drift_check"), "events:PutEvents", BUS, context)
    assert allows(_policy("register"), "events:PutEvents", BUS, context)
