"""The trigger registry and the functions' route tables, held to the real payloads in
tests/events/ and to the topology's subscriptions.

One registry of shapes reads every trigger; each function's route table says which
typed events it takes and which service method each goes to. A payload two shapes
claim, an event a function is subscribed to without a route, or an unknown payload
that a function would not refuse, fails here.
"""

from __future__ import annotations

import importlib
import json
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from mangum.handlers import APIGateway, HTTPGateway
from pydantic import BaseModel

from shared.constants import EVENT_SOURCE
from shared.errors import ConfigError, EventParseError
from shared.event_patterns import matches
from shared.events import EVENT_TYPES, DatasetValidated, ModelApproved
from shared.topology import build_topology
from shared.triggers import (
    SHAPES,
    RouteTable,
    TriggerContext,
    azure_queue_body,
    loads,
    sqs_messages,
)
from shared.triggers.aws import is_sqs_batch
from tests.helpers import load_event

EVENTS = Path(__file__).resolve().parents[1] / "events"
# The functions with a trigger queue, by topology name, and the module of their table.
CORES = {
    "ingest": "functions.ingest.core",
    "validate": "functions.validate.core",
    "train_launch": "functions.train_launch.core",
    "register": "functions.register.core",
    "deploy": "functions.deploy.core",
    "drift_check": "functions.drift_check.core",
}
# The samples' serve targets and jobs are the prod stage's (dhow-prod--...).
TOPOLOGY = build_topology("prod")
PREFIX = "dhow-prod--serve-"


# What the stack sets for the functions that refuse to start without it: a cold start
# here builds each service as in the cloud (no call reaches a client).
STACK_ENV = {
    "DHOW_TRAINING_IMAGE_URI": "123456789012.dkr.ecr.me-central-1.amazonaws.com/train:1",
    "DHOW_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123456789012:role/dhow-prod-sagemaker",
    "DHOW_KMS_KEY_ID": "arn:aws:kms:me-central-1:123456789012:key/0000",
    "DHOW_PRIVATE_SUBNETS": "subnet-a,subnet-b",
    "DHOW_ALERTS_TOPIC_ARN": "arn:aws:sns:me-central-1:123456789012:dhow-prod-alerts",
}


def core(function: str) -> ModuleType:
    """The function's ``core`` module, cold-started with the stack's settings."""
    with pytest.MonkeyPatch.context() as env:
        for name, val in STACK_ENV.items():
            env.setenv(name, val)
        return importlib.import_module(CORES[function])


def table(function: str) -> RouteTable[Any]:
    """The function's route table, reading serve targets as the samples' stage names them."""
    routes: RouteTable[Any] = core(function).ROUTES
    if routes.context.serve_prefix is None:
        return routes
    return replace(routes, context=TriggerContext(serve_prefix=PREFIX))


def bodies(name: str) -> list[Any]:
    """The trigger bodies a function is handed for one sample: an SQS batch's and an
    Azure queue message's opened, as Lambda's event-source mapping and the Functions
    host open them; any other sample is a body itself."""
    raw = load_event(name)
    if isinstance(raw, str):
        return [azure_queue_body(raw)]
    if isinstance(raw, dict) and is_sqs_batch(raw):
        return [json.loads(m.body) for m in sqs_messages(raw)]
    return [raw]


SAMPLES = sorted(p.name for p in EVENTS.iterdir() if p.suffix in (".json", ".b64"))
# Serve's API Gateway request is mangum's to read (its own registry of handlers).
MANGUMS = {"apigw_http_v2_predict.json"}


@pytest.mark.parametrize("name", sorted(set(SAMPLES) - MANGUMS))
def test_every_sample_is_claimed_by_exactly_one_registered_shape(name: str) -> None:
    for body in bodies(name):
        data = loads(body)
        claimed = [s.name for s in SHAPES if s.infer(data)]
        assert len(claimed) == 1, f"{name}: claimed by {claimed}"


def test_no_sample_is_a_schedules_message() -> None:
    """The two schedules send the same bare body, told apart by the queue it is on: each
    function reads only its own (no function's table reads both)."""
    from shared.triggers.schedule import ScheduledDriftCheck, ScheduledValidationSweep

    for name in sorted(set(SAMPLES) - MANGUMS):
        for body in bodies(name):
            data = loads(body)
            assert not ScheduledDriftCheck.infer(data), name
            assert not ScheduledValidationSweep.infer(data), name
    for function in CORES:
        assert {ScheduledDriftCheck, ScheduledValidationSweep} - set(table(function).shapes)


def test_serves_request_is_mangums_and_no_shape_claims_it() -> None:
    [name] = MANGUMS
    event = load_event(name)
    config: Any = {"api_gateway_base_path": "/", "custom_handlers": [], "text_mime_types": []}
    assert HTTPGateway.infer(event, {}, config)
    assert not APIGateway.infer(event, {}, config)
    assert not [s.name for s in SHAPES if s.infer(event)]


@pytest.mark.parametrize("name", sorted(set(SAMPLES) - MANGUMS))
def test_each_platform_sample_is_taken_by_exactly_one_function(name: str) -> None:
    """An S3, SageMaker, CodeDeploy, Event Grid or Azure ML event goes to one function,
    read there to the same typed events the registry reads it to."""
    for body in bodies(name):
        takers = [f for f in CORES if any(s.infer(loads(body)) for s in table(f).shapes)]
        assert len(takers) == 1, f"{name}: read by {takers}"
        routes = table(takers[0])
        events = routes.parse(body)
        for event in events:
            routes.route_for(event)


class Recorder:
    """A stand-in service that records which of its methods a route calls."""

    def __init__(self) -> None:
        self.called: list[str] = []

    def __getattr__(self, method: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            self.called.append(method)

        return call


def _routes_to_a_method(function: str, event: BaseModel) -> None:
    routes = table(function)
    route = routes.route_for(event)  # EventParseError: subscribed, but no route
    recorder = Recorder()
    route.call(recorder, event)
    [method] = recorder.called
    service = type(core(function).SERVICE)
    assert callable(getattr(service, method, None)), f"{service.__name__} has no {method}"


def _function_on(queue: str) -> str | None:
    fns = [f.logical for f in TOPOLOGY.functions if f.trigger_queue == queue]
    return fns[0] if fns else None


def _first_values(pattern: dict[str, Any]) -> dict[str, Any]:
    return {k: v[0] for k, v in pattern.items() if isinstance(v, list)}


@pytest.mark.parametrize("rule", TOPOLOGY.rules, ids=lambda r: r.logical)
def test_every_subscribed_event_has_a_route_to_a_service_method(rule: Any) -> None:
    """Each event rule that feeds a function's queue: an event it lets through is read by
    the function's table and routed to a method its service has."""
    function = _function_on(rule.target_queue)
    if function is None:  # the events queue: watchers' tap, not a function's
        assert rule.target_queue == "events"
        return
    if rule.bus == "pipeline":
        [detail_type] = rule.pattern["detail-type"]
        envelope = {"source": EVENT_SOURCE, "detail-type": detail_type, "detail": {}}
        assert any(s.infer(envelope) for s in table(function).shapes), rule.logical
        detail = _first_values(rule.pattern.get("detail", {}))
        _routes_to_a_method(function, EVENT_TYPES[detail_type].model_construct(**detail))
        return
    # The event type a rule subscribes to is its source and detail-type; the rest of
    # its pattern picks the stage's own resources, which the samples name for prod.
    kind = {k: rule.pattern[k] for k in ("source", "detail-type")}
    samples = [
        body
        for n in sorted(set(SAMPLES) - MANGUMS)
        for body in bodies(n)
        if matches(kind, loads(body))
    ]
    assert samples, f"no sample in tests/events matches rule {rule.logical}"
    for body in samples:
        events = table(function).parse(body)
        assert events, f"{body} read as nothing by {function}"
        for event in events:
            _routes_to_a_method(function, event)


@pytest.mark.parametrize("schedule", TOPOLOGY.schedules, ids=lambda s: s.logical)
def test_every_schedule_has_a_route_to_a_service_method(schedule: Any) -> None:
    function = _function_on(schedule.target_queue)
    assert function is not None
    # What EventBridge Scheduler sends, its run's time written in.
    body = json.dumps({"dataset": "customers", "period": "2026-11-23T12:00:00Z"})
    [event] = table(function).parse(body)
    _routes_to_a_method(function, event)


def test_azures_own_messages_have_routes() -> None:
    """The Azure deployer's rollout check goes back to deploy, and the queue envelope of a
    pipeline event reads as the EventBridge one does."""
    from shared.triggers import check_message

    [due] = table("deploy").parse(check_message("customers", "rollout-customers-v2-abc123"))
    _routes_to_a_method("deploy", due)
    queued = {"source": EVENT_SOURCE, "type": "DatasetValidated", "data": {}}
    assert any(s.infer(queued) for s in table("train_launch").shapes)


UNKNOWN = [
    "not json",
    "[1, 2]",
    json.dumps({"hello": "world"}),
    json.dumps({"source": "aws.ec2", "detail-type": "EC2 Instance State-change"}),
]


class Untouchable:
    def __getattr__(self, method: str) -> Any:
        raise AssertionError(f"called {method} for a trigger it does not take")


@pytest.mark.parametrize("function", sorted(CORES))
@pytest.mark.parametrize("body", UNKNOWN, ids=lambda b: b[:24])
def test_an_unknown_trigger_is_refused_as_unparseable_by_every_function(
    function: str, body: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refused before any service method: the message fails, is retried, ends in the DLQ."""
    module = core(function)
    monkeypatch.setattr(module, "SERVICE", Untouchable())
    with pytest.raises(EventParseError) as info:
        module.handle(body)
    assert info.value.reason == "event_unparseable"


def test_an_event_of_a_miswired_rule_is_refused_with_what_the_function_takes() -> None:
    routes = table("train_launch")
    approved = ModelApproved.model_construct()
    with pytest.raises(EventParseError, match="takes DatasetValidated or a retrain's"):
        routes.route_for(approved)
    # And a DriftDetected whose policy belongs to deploy.
    drift = EVENT_TYPES["DriftDetected"].model_construct(action="rollback")
    with pytest.raises(EventParseError, match="was sent DriftDetected"):
        routes.route_for(drift)


def test_a_table_reads_only_the_shapes_of_the_events_it_takes() -> None:
    only_validated = RouteTable[Any]("t").on(DatasetValidated, lambda svc, e: None)
    assert {s.name for s in only_validated.shapes} == {"eventbridge_pipeline", "queue_pipeline"}
    s3 = load_event("eventbridge_s3_object_created.json")
    with pytest.raises(EventParseError, match="not a trigger t takes"):
        only_validated.parse(s3)


def test_a_deployment_end_is_read_only_with_the_stages_serve_prefix() -> None:
    from shared.triggers.aws import CodeDeployDeploymentStateChange

    sample = load_event("codedeploy_deployment_state_change.json")
    with pytest.raises(ConfigError):
        CodeDeployDeploymentStateChange.parse(sample)  # without it, any group would be read
    [change] = CodeDeployDeploymentStateChange.parse(sample, TriggerContext(serve_prefix=PREFIX))
    assert change.dataset == "customers"


def test_each_clouds_shapes_live_in_its_own_module() -> None:
    """A cloud's kit (shared/clouds) has its trigger shapes in shared/triggers/<cloud>.py;
    the only other shapes are the schedules', the same on every cloud."""
    from shared.clouds import KITS

    clouds = {kit.cloud for kit in KITS.values()}
    assert clouds >= {"aws", "azure"}
    modules = {s.__module__ for s in SHAPES}
    assert modules == {f"shared.triggers.{c}" for c in clouds} | {"shared.triggers.schedule"}
