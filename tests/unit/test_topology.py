"""The topology is self-consistent: everything a function names exists."""

from __future__ import annotations

from shared.topology import build_topology


def test_names_derive_from_stage_and_do_not_collide() -> None:
    a, b = build_topology("local"), build_topology("acme-prod")
    names_a = {x.name for x in (*a.buckets, *a.queues, *a.tables, *a.functions)}
    names_b = {x.name for x in (*b.buckets, *b.queues, *b.tables, *b.functions)}
    assert names_a.isdisjoint(names_b)
    assert build_topology("local") == a  # pure


def test_every_reference_resolves() -> None:
    t = build_topology("local")
    logical = {
        "bucket": {b.logical for b in t.buckets},
        "queue": {q.logical for q in t.queues},
        "table": {x.logical for x in t.tables},
        "bus": {"pipeline"},
        "jobs": {
            "processing_jobs",
            "training_jobs",
            "service_quotas",
            "model_registry",
            "serve_functions",
            "serving_deployments",
            "serve_alarms",
            "serving_endpoints",
            "drift_metrics",
        },
        "topic": {x.logical for x in t.topics},
        "role": {"sagemaker_execution"},
    }
    for fn in t.functions:
        assert fn.trigger_queue in logical["queue"] or (fn.logical == "serve")
        for perm in fn.permissions:
            assert perm.resource in logical[perm.kind], (fn.name, perm)
            assert all("*" not in action for action in perm.actions)
    for rule in t.rules:
        assert rule.target_queue in logical["queue"]
    for schedule in t.schedules:
        assert schedule.target_queue in logical["queue"]


def test_queues_have_dlqs_and_room_for_their_consumer() -> None:
    t = build_topology("local")
    for q in t.queues:
        assert q.dlq_name.endswith("-dlq")
        assert q.max_receive_count >= 1
    for fn in t.functions:
        if fn.trigger_queue is not None:
            assert t.queue(fn.trigger_queue).visibility_timeout_s >= 6 * fn.timeout_s


def test_approvals_and_deployment_ends_route_to_deploy() -> None:
    t = build_topology("acme-prod")
    to_deploy = {r.logical: r.pattern for r in t.rules if r.target_queue == "deploy"}
    assert to_deploy["model_approved"]["detail-type"] == ["ModelApproved"]
    codedeploy = to_deploy["serving_deployment_ended"]
    assert codedeploy["detail"] == {
        "deploymentGroup": [{"prefix": "dhow-acme-prod-serve-"}],
        "state": ["SUCCESS", "FAILURE", "STOP"],
    }
    endpoint = to_deploy["serving_endpoint_changed"]
    assert endpoint["detail"]["EndpointName"] == [{"prefix": "dhow-acme-prod-serve-"}]
    serve = t.function("serve")
    assert serve.trigger_queue is None
    assert {p.resource for p in serve.permissions} == {"models", "capture", "model_registry"}


def test_raw_uploads_route_to_ingest() -> None:
    t = build_topology("local")
    rule = next(r for r in t.rules if r.target_queue == "ingest")
    assert rule.pattern["source"] == ["aws.s3"]
    assert rule.pattern["detail"] == {
        "bucket": {"name": ["dhow-local-raw"]},
        "object": {"key": [{"prefix": "datasets/"}]},
    }


def test_drift_checks_are_scheduled_per_dataset_and_their_actions_routed() -> None:
    t = build_topology("acme-prod")
    schedule = t.schedule("drift_check")
    assert schedule.name_for("customers") == "dhow-acme-prod-drift-customers"
    assert schedule.expression_from == "drift.schedule"
    assert t.function("drift_check").trigger_queue == schedule.target_queue == "drift"
    assert t.function("drift_check").package == "image"  # evidently does not fit a zip
    routes = {
        r.target_queue: r.pattern["detail"]
        for r in t.rules
        if r.pattern.get("detail-type") == ["DriftDetected"]
    }
    assert routes == {"train": {"action": ["retrain"]}, "deploy": {"action": ["rollback"]}}
    assert t.topic("alerts").name == "dhow-acme-prod-alerts"
