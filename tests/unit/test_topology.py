"""The topology is self-consistent: everything a function names exists."""

from __future__ import annotations

from infra.aws.iam import permission_actions
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
            assert all("*" not in action for action in permission_actions(perm))
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
        "deploymentGroup": [{"prefix": "dhow-acme-prod--serve-"}],
        "state": ["SUCCESS", "FAILURE", "STOP"],
    }
    endpoint = to_deploy["serving_endpoint_changed"]
    assert endpoint["detail"]["EndpointName"] == [{"prefix": "dhow-acme-prod--serve-"}]
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


# --- The cloud's rules the topology is held to (shared/cloud_facts) ---------------------


def test_validates_tmp_holds_the_inline_limit() -> None:
    from shared.cloud_facts import value
    from shared.settings import Settings
    from shared.topology import validate_tmp_mb

    tmp = value("aws.lambda.ephemeral_storage_mb")
    for fn in build_topology("t1").functions:
        assert tmp["min"] <= fn.ephemeral_storage_mb <= tmp["max"], fn.name
    validate = build_topology("t1").function("validate")
    # The inline limit the function runs with (the stack leaves the default) must fit /tmp:
    # the staged file and its curated copy, with headroom.
    inline = Settings().validate_inline_max_bytes
    assert validate.ephemeral_storage_mb >= validate_tmp_mb(inline)
    assert validate_tmp_mb(inline) > tmp["default"]  # so the default /tmp would not do
    # And no inline limit may be configured beyond what the largest /tmp holds.
    assert validate_tmp_mb(inline) <= tmp["max"]


def test_queues_give_their_functions_six_times_their_timeout() -> None:
    from shared.cloud_facts import value

    factor = value("aws.sqs.visibility_timeout_per_function_timeout")
    ceiling = value("aws.sqs.max_visibility_timeout_s")
    t = build_topology("t1")
    for fn in t.functions:
        if fn.trigger_queue is not None:
            queue = t.queue(fn.trigger_queue)
            assert queue.visibility_timeout_s >= factor * fn.timeout_s, fn.name
            assert queue.visibility_timeout_s <= ceiling, queue.name


def test_ingest_is_sized_for_the_largest_upload_it_accepts() -> None:
    from shared.cloud_facts import value
    from shared.settings import Settings
    from shared.topology import ingest_timeout_s

    ingest = build_topology("t1").function("ingest")
    # An upload with no full-object SHA-256 is streamed once to hash it, and a call
    # streams every record of its batch before it returns (a timeout fails them all).
    assert ingest.timeout_s >= ingest.batch_size * ingest_timeout_s(Settings().max_upload_bytes)
    assert ingest.timeout_s <= value("aws.lambda.max_timeout_s")
    # Hashing is single-threaded: at least one full vCPU.
    assert ingest.memory_mb >= value("aws.lambda.memory_mb_per_vcpu")


def _absence_probes() -> dict[str, set[str]]:
    """Run ingest and validate through their paths, recording the buckets on which each
    asks storage whether a key is there (HEAD, or a read that may find nothing)."""
    from pathlib import Path
    from typing import Any

    from shared.errors import ObjectMissing
    from shared.events import ObjectRef
    from shared.ports import ValidationJobEnded, ValidationJobLauncher, ValidationJobRequest
    from shared.services.ingest import IngestService
    from shared.services.validate import ValidateService
    from shared.triggers import ObjectCreated
    from tests.helpers import MemoryBus, MemoryLineage, MemoryStore

    t = build_topology("t1")
    probes: dict[str, set[str]] = {}

    class ProbedStore(MemoryStore):
        fn = ""

        def head(self, ref: ObjectRef, **pin: Any) -> object:  # type: ignore[override]
            probes.setdefault(self.fn, set()).add(ref.container)
            return super().head(ref, **pin)

        def iter_chunks(self, ref: ObjectRef, chunk_size: int = 1024 * 1024, **pin: Any) -> object:  # type: ignore[override]
            try:
                return super().iter_chunks(ref, chunk_size, **pin)
            except ObjectMissing:
                probes.setdefault(self.fn, set()).add(ref.container)
                raise

        def _get(self, ref: ObjectRef) -> tuple[bytes, dict[str, str], str]:
            try:
                return super()._get(ref)
            except ObjectMissing:
                probes.setdefault(self.fn, set()).add(ref.container)
                raise

    class Jobs(ValidationJobLauncher):
        def launch(self, request: ValidationJobRequest) -> str:
            return "dhow-t1-validate-x"

    store, bus, lineage = ProbedStore(), MemoryBus(), MemoryLineage()
    raw = t.bucket("raw").name
    sample = Path(__file__).resolve().parents[2] / "localstack/samples/customers.csv"
    store.fn = "ingest"
    ingest = IngestService(
        store, bus, lineage, staging_container=t.bucket("staging").name, max_upload_bytes=10**9
    )
    store.put_bytes(ObjectRef(container=raw, key="datasets/customers/a.csv"), sample.read_bytes())
    ingest.handle(ObjectCreated(container=raw, key="datasets/customers/a.csv", source_event="t"))
    ingest.handle(ObjectCreated(container=raw, key="datasets/customers/gone.csv", source_event="t"))
    store.fn = "validate"
    validate = ValidateService(
        store,
        bus,
        lineage,
        curated_container=t.bucket("curated").name,
        quarantine_container=t.bucket("quarantine").name,
        inline_max_bytes=1000,
        jobs=Jobs(),
    )
    [ingested] = [e for e in bus.events if e.event_type == "DatasetIngested"]
    validate.handle(ingested)  # type: ignore[arg-type]
    staged = ingested.staged  # type: ignore[attr-defined]
    validate.finish_job(
        ValidationJobEnded(job_name="dhow-t1-validate-x", status="Completed", staged=staged)
    )
    return probes


def test_functions_that_test_for_absence_may_list_the_bucket() -> None:
    from shared.cloud_facts import value

    rule = value("aws.s3.missing_key_status_without_list_bucket")
    assert (rule["with_list_bucket"], rule["without_list_bucket"]) == (404, 403)
    t = build_topology("t1")
    by_name = {b.name: b.logical for b in t.buckets}
    probes = _absence_probes()
    assert set(probes) == {"ingest", "validate"}  # both paths were walked
    for fn_name, buckets in probes.items():
        fn = t.function(fn_name)
        for bucket in buckets:
            grants = {
                a
                for p in fn.permissions
                if p.kind == "bucket" and p.resource == by_name[bucket]
                for a in permission_actions(p)
            }
            assert rule["action"] in grants, f"{fn.name} tests for absence on {bucket}"


def test_a_validation_jobs_end_reaches_validate() -> None:
    import json
    from typing import Any, cast

    from moto.events.models import EventPattern

    from shared.cloud_facts import value
    from tests.helpers import load_event

    ended = value("aws.sagemaker.processing_job_state_change")
    t = build_topology("prod")
    rule = t.rule("validation_job_ended")
    assert (rule.bus, rule.target_queue) == ("default", "validate")
    assert rule.pattern["source"] == [ended["source"]]
    assert rule.pattern["detail-type"] == [ended["detail_type"]]
    detail = rule.pattern["detail"]
    assert isinstance(detail, dict)
    assert detail["ProcessingJobStatus"] == ended["end_statuses"]
    # EventBridge's matching (moto's implementation of it) on SageMaker's own payload.
    pattern = EventPattern.load(json.dumps(rule.pattern))
    sample: Any = load_event("sagemaker_processing_job_state_change.json")
    for status in ended["end_statuses"]:
        event: Any = {**sample, "detail": {**sample["detail"], "ProcessingJobStatus": status}}
        assert pattern.matches_event(event), status
    running: Any = {**sample, "detail": {**sample["detail"], "ProcessingJobStatus": "InProgress"}}
    assert not pattern.matches_event(running)
    other_stage = dict(sample["detail"], ProcessingJobName="dhow-staging--validate-customers-x")
    assert not pattern.matches_event(cast(Any, {**sample, "detail": other_stage}))


def test_functions_that_read_pinned_specs_may_list_the_models_bucket() -> None:
    """A version validate never pinned must read as missing (SpecVersionUnknown and its
    hint), and S3 answers a missing key with 404 only to a caller that may list the
    bucket: with GetObject alone it is a 403, an access-denied error instead."""
    import pytest

    from shared.cloud_facts import value
    from shared.events import ObjectRef
    from shared.settings import Settings
    from shared.specs import SpecVersionUnknown
    from shared.wiring import Ports, build_spec_catalog
    from tests.helpers import MemoryBus, MemoryLineage, MemoryStore

    rule = value("aws.s3.missing_key_status_without_list_bucket")
    t = build_topology("t1")
    missed: set[str] = set()

    class ProbedStore(MemoryStore):
        def _get(self, ref: ObjectRef) -> tuple[bytes, dict[str, str], str]:
            try:
                return super()._get(ref)
            except Exception:
                missed.add(ref.container)
                raise

    ports = Ports(store=ProbedStore(), bus=MemoryBus(), lineage=MemoryLineage())
    catalog = build_spec_catalog(Settings(stage="t1"), ports)
    with pytest.raises(SpecVersionUnknown):
        catalog.get("customers", "9+00000000")
    assert missed == {t.bucket("models").name}  # the catalog probed the pins' bucket
    by_name = {b.name: b.logical for b in t.buckets}
    for fn_name in ("train_launch", "register"):  # the stages that load a pinned version
        fn = t.function(fn_name)
        grants = {
            a
            for p in fn.permissions
            if p.kind == "bucket" and p.resource == by_name[t.bucket("models").name]
            for a in permission_actions(p)
        }
        assert rule["action"] in grants, f"{fn.name} reads pinned specs that may be absent"
