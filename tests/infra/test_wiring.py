"""Check 5 of issue 14: the wiring is connected end to end, over the mocked AWS stack.

The hops come from the topology (shared/topology.py), not from a list written here: each
rule, each schedule and each serve function is followed through the resources the
program registers, each pointing at the next. Patterns are matched by moto's EventBridge
pattern evaluator (an implementation of EventBridge's matching we did not write) against
real payloads from tests/events/ where AWS sends the event, and against the event class
the publishing function emits where Dhow sends it. A broken hop fails with its name.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from moto.events.models import EventPattern

from shared import events as pipeline_events
from shared.adapters.codedeploy import serve_function_name
from shared.cloud_facts import value
from shared.constants import EVENT_SOURCE
from shared.identifiers import family_head
from shared.topology import EventRule, build_topology
from tests.infra.harness import Program

EVENTS = Path(__file__).resolve().parents[1] / "events"
STAGE = "uae-prod"
PREFIX = f"dhow-{STAGE}"


def _aws_sample(rule: EventRule) -> dict[str, Any]:
    """The real payload AWS sends for the rule's source and detail-type, its resource
    names moved to this stage (the samples were captured on other stages)."""
    source, detail_type = rule.pattern["source"], rule.pattern["detail-type"]  # type: ignore[index]
    for path in sorted(EVENTS.glob("*.json")):
        try:
            sample = json.loads(path.read_text())
        except ValueError:
            continue
        if (
            isinstance(sample, dict)
            and sample.get("source") in source
            and sample.get("detail-type") in detail_type
        ):
            text = json.dumps(sample)
            for stage in ("dhow-local-", "dhow-prod-", "dhow-dev-"):
                text = text.replace(stage, f"{PREFIX}-")
            moved: dict[str, Any] = json.loads(text)
            return moved
    pytest.fail(f"hop {rule.logical}: no real {detail_type} payload in tests/events/")


def _pipeline_samples(rule: EventRule) -> list[dict[str, Any]]:
    """The events Dhow functions publish that the rule is for: each detail-type it names
    must be an event class's name (all of them, for a rule on the source alone)."""
    types = list(rule.pattern.get("detail-type", pipeline_events.EVENT_TYPES))  # type: ignore[call-overload]
    out = []
    for detail_type in types:
        assert detail_type in pipeline_events.EVENT_TYPES, (
            f"hop {rule.logical}: no function publishes {detail_type!r} (shared/events.py)"
        )
        model = pipeline_events.EVENT_TYPES[detail_type]
        detail: dict[str, Any] = {}
        for key, allowed in dict(rule.pattern.get("detail", {})).items():  # type: ignore[call-overload]
            # A detail filter must name a field the event carries; sample its first value.
            assert key in model.model_fields, f"hop {rule.logical}: {detail_type} has no {key!r}"
            detail[key] = allowed[0]
        out.append({"source": EVENT_SOURCE, "detail-type": detail_type, "detail": detail})
    return out


def _one(program: Program, typ: str, hop: str, **match: Any) -> dict[str, Any]:
    found = [
        r.outputs
        for r in program.of_type(typ)
        if all(r.outputs.get(k) == v for k, v in match.items())
    ]
    assert len(found) == 1, f"hop {hop}: expected one {typ} with {match}, found {len(found)}"
    return found[0]


def _consumer(program: Program, queue_logical: str, hop: str) -> dict[str, Any]:
    """queue -> the queue's event-source mapping -> the function it triggers."""
    topo = build_topology(STAGE)
    queue = _one(program, "aws:sqs/queue:Queue", hop, name=topo.queue(queue_logical).name)
    fns = [f for f in topo.functions if f.trigger_queue == queue_logical]
    assert len(fns) == 1, f"hop {hop}: {len(fns)} functions read {queue_logical}"
    fn = _one(program, "aws:lambda/function:Function", f"{hop} function", name=fns[0].name)
    _one(
        program,
        "aws:lambda/eventSourceMapping:EventSourceMapping",
        f"{hop} event-source mapping",
        eventSourceArn=queue["arn"],
        functionName=fn["arn"],
    )
    return fn


def test_every_rule_is_followed_from_its_bus_to_a_function(aws_program: Program) -> None:
    topo = build_topology(STAGE)
    bus = _one(aws_program, "aws:cloudwatch/eventBus:EventBus", "pipeline bus", name=topo.bus_name)
    for rule in topo.rules:
        hop = rule.logical
        bus_name = "default" if rule.bus == "default" else bus["name"]
        res = _one(aws_program, "aws:cloudwatch/eventRule:EventRule", hop, name=rule.name)
        assert res["eventBusName"] == bus_name, f"hop {hop}: rule on the wrong bus"
        samples = [_aws_sample(rule)] if rule.bus == "default" else _pipeline_samples(rule)
        pattern = EventPattern.load(res["eventPattern"])
        for sample in samples:
            assert pattern.matches_event(sample), f"hop {hop}: the pattern misses {sample}"
        queue = _one(
            aws_program, "aws:sqs/queue:Queue", hop, name=topo.queue(rule.target_queue).name
        )
        target = _one(
            aws_program, "aws:cloudwatch/eventTarget:EventTarget", f"{hop} target", rule=rule.name
        )
        assert target["arn"] == queue["arn"], f"hop {hop}: the target is not its queue"
        # An SQS target needs the queue's policy to admit the rule (fact below).
        policies = [
            json.loads(p.outputs["policy"])
            for p in aws_program.of_type("aws:sqs/queuePolicy:QueuePolicy")
            if p.outputs["queueUrl"] == queue["url"]
        ]
        admits = [
            s
            for p in policies
            for s in p["Statement"]
            if s["Effect"] == "Allow"
            and s["Principal"] == {"Service": value("aws.eventbridge.sqs_target_principal")}
            and "sqs:SendMessage"
            in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])
            and res["arn"] in s["Condition"]["ArnEquals"]["aws:SourceArn"]
        ]
        assert admits, f"hop {hop}: the policy of {queue['name']} does not admit the rule"
        if not any(f.trigger_queue == rule.target_queue for f in topo.functions):
            continue  # a queue the CLI reads (`dhow events`), not a function
        fn = _consumer(aws_program, rule.target_queue, hop)
        # The function publishes to the bus its stage names (Settings -> topology).
        assert build_topology(fn["environment"]["variables"]["DHOW_STAGE"]).bus_name == bus["name"]


def test_an_upload_reaches_ingest(aws_program: Program) -> None:
    topo = build_topology(STAGE)
    raw = next(b for b in topo.buckets if b.emits_object_events)
    note = _one(
        aws_program,
        "aws:s3/bucketNotification:BucketNotification",
        "raw bucket notification",
        bucket=raw.name,
    )
    assert note["eventbridge"] is True, "hop raw bucket notification: EventBridge is off"
    first = [r for r in topo.rules if r.bus == "default" and r.target_queue == "ingest"]
    assert first, "hop raw bucket -> rule: no default-bus rule delivers to ingest"
    sample = _aws_sample(first[0])
    assert sample["detail"]["bucket"]["name"] == raw.name
    assert sample["detail-type"] == value("aws.eventbridge.s3_object_created_detail_type")


def test_each_drift_schedule_reaches_drift_check(aws_program: Program) -> None:
    topo = build_topology(STAGE)
    assert topo.schedules
    for sched in topo.schedules:
        queue = _one(
            aws_program,
            "aws:sqs/queue:Queue",
            sched.logical,
            name=topo.queue(sched.target_queue).name,
        )
        made = [
            r.outputs
            for r in aws_program.of_type("aws:scheduler/schedule:Schedule")
            if r.outputs["name"].startswith(sched.name_for(""))
        ]
        assert made, f"hop {sched.logical}: no schedule"
        for s in made:
            assert s["target"]["arn"] == queue["arn"], f"hop {s['name']}: target is not its queue"
            entry = s["target"]["input"].encode()
            assert len(entry) <= value("aws.eventbridge.max_entry_bytes")
        fn = _consumer(aws_program, sched.target_queue, sched.logical)
        # drift_check's queue feeds drift-check; validate_sweep's feeds validate.
        [consumer] = [f for f in topo.functions if f.trigger_queue == sched.target_queue]
        assert fn["name"] == consumer.name


def test_each_served_dataset_has_an_endpoint_on_its_live_alias(aws_program: Program) -> None:
    """Whatever fronts the serve function (a Function URL today, API Gateway once it
    lands), it must invoke the ``live`` alias that CodeDeploy moves, and be exported."""
    urls = aws_program.outputs["serve_urls"]
    aliases = aws_program.of_type("aws:lambda/alias:Alias")
    fronts = [
        r
        for r in aws_program.resources
        if r.typ
        in (
            "aws:lambda/functionUrl:FunctionUrl",
            "aws:apigatewayv2/integration:Integration",
            "aws:apigateway/integration:Integration",
        )
    ]
    for fn in build_topology(STAGE).functions:
        if fn.trigger_queue is not None:
            continue
        # Each dataset's copy is dhow-<stage>--serve-<dataset> (codedeploy's name for it).
        head = serve_function_name(family_head(STAGE), "")
        served = [a for a in aliases if str(a.outputs["functionName"]).startswith(head)]
        assert served, "hop serve: no live alias"
        for alias in served:
            dataset = str(alias.outputs["functionName"]).removeprefix(head)
            assert urls.get(dataset), f"hop serve {dataset}: no exported endpoint"
            pointing = [
                r
                for r in fronts
                if (
                    r.outputs.get("qualifier") == alias.outputs["name"]
                    and r.outputs.get("functionName") == alias.outputs["functionName"]
                )
                or str(alias.outputs["arn"]) in json.dumps(r.outputs, default=str)
            ]
            assert pointing, f"hop serve {dataset}: nothing invokes the live alias"
