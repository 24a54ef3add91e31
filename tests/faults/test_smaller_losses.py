"""Smaller losses (issue 16): rows a GPU endpoint captured that drift never read, rows a
Lambda buffered when its container stopped, a failing drift check the Azure timer sent
again every minute, and SageMaker names that made two things one. Each test injects
the fault, records what it observed in the ledger, then asserts."""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import importlib
import io
import json
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.stub import Stubber
from moto import mock_aws

from shared.adapters.aws import aws_client
from shared.adapters.lineage_registry import LineageModelRegistry
from shared.adapters.sagemaker_endpoint import (
    VARIANT,
    EndpointConfig,
    SageMakerEndpointDeployer,
    endpoint_names,
)
from shared.adapters.sagemaker_training import training_job_name
from shared.artifacts import ARTIFACT_SHA256
from shared.capture import InferenceCapture, read_captures
from shared.cloud_facts import value
from shared.drift import feature_kinds
from shared.events import ObjectRef
from shared.ports import DeploymentPlan
from shared.serve_app import model_app
from shared.settings import Settings
from shared.specs import load_spec
from shared.validation import validate_file
from tests.faults.ledger import Ledger
from tests.helpers import ROOT, MemoryLineage, MemoryStore, load_event, train_artifact
from tests.unit.test_drift_service import CAPTURE, SAMPLE, T0, World
from tests.unit.test_training_job_request import REQ

SPEC = load_spec("customers")


@pytest.fixture(autouse=True)
def creds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")


# --- a GPU endpoint's captures reach the drift check ---------------------------------


def _destination_the_deployer_asks_for(dataset: str) -> tuple[str, str]:
    """(DestinationS3Uri, endpoint name) of the CreateEndpointConfig the real deployer
    sends for a first deployment of ``dataset``."""
    sm = aws_client("sagemaker", Settings())
    deployer = SageMakerEndpointDeployer(
        sm,
        EndpointConfig(
            name_prefix="dhow-t",
            role_arn="arn:aws:iam::123456789012:role/dhow-t-sagemaker",
            image_uri="123456789012.dkr.ecr.me-central-1.amazonaws.com/dhow-serve:1",
            kms_key_id="arn:aws:kms:me-central-1:123456789012:key/k1",
            capture_bucket=CAPTURE,
        ),
    )
    sent: dict[str, Any] = {}

    def keep(params: dict[str, Any], **_: Any) -> None:
        sent.update(params)

    sm.meta.events.register("provide-client-params.sagemaker.CreateEndpointConfig", keep)
    plan = DeploymentPlan(
        dataset=dataset,
        model_version=1,
        previous_version=None,
        artifact="s3://dhow-t-models/models/customers/job-1/output/model.tar.gz",
        artifact_sha256="0a1b2c3d" + "e" * 56,
        image="local:shared.trainer",
        strategy="all_at_once",
        step_percent=10,
        interval_minutes=5,
        error_rate_threshold=0.05,
        p99_latency_ms=2000,
        min_requests=20,
        capture_sampling=1.0,
        instance_type="ml.g5.xlarge",
        instance_count=1,
    )
    with Stubber(sm) as stub:
        stub.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:me-central-1:1:model/m"})
        stub.add_response(
            "create_endpoint_config",
            {"EndpointConfigArn": "arn:aws:sagemaker:me-central-1:1:endpoint-config/c"},
        )
        stub.add_client_error(
            "describe_endpoint",
            service_error_code="ValidationException",
            service_message="Could not find endpoint.",
        )
        stub.add_response(
            "create_endpoint", {"EndpointArn": "arn:aws:sagemaker:me-central-1:1:endpoint/e"}
        )
        deployer.start(plan)
    return sent["DataCaptureConfig"]["DestinationS3Uri"], deployer.endpoint(dataset)


def _sagemaker_records(rows: list[dict[str, Any]], at: datetime) -> list[str]:
    """One capture line a request, in SageMaker's documented format, a third each in the
    three encodings it writes: JSON, CSV (positional, in the model's feature order) and
    BASE64 (a content type no CaptureContentTypeHeader lists)."""
    record = value("aws.sagemaker.capture_record")
    assert record["encodings"] == ["CSV", "JSON", "BASE64"]
    columns = list(feature_kinds(SPEC))
    lines = []
    for i, row in enumerate(rows):
        features = {c: row[c] for c in columns}
        if i % 3 == 0:
            part = {"observedContentType": "application/json", "data": json.dumps(features)}
            part["encoding"] = "JSON"
        elif i % 3 == 1:
            out = io.StringIO()
            csv.writer(out).writerow([features[c] for c in columns])
            part = {"observedContentType": "text/csv", "data": out.getvalue(), "encoding": "CSV"}
        else:
            raw = base64.b64encode(json.dumps([features]).encode()).decode()
            part = {"observedContentType": "application/json", "data": raw, "encoding": "BASE64"}
        line = {
            "captureData": {
                "endpointInput": {**part, "mode": "INPUT"},
                "endpointOutput": {
                    "observedContentType": "text/csv; charset=utf-8",
                    "mode": "OUTPUT",
                    "data": "0",
                    "encoding": "CSV",
                },
            },
            "eventMetadata": {
                "eventId": str(uuid.UUID(int=i)),
                "inferenceTime": f"{at + timedelta(seconds=i):%Y-%m-%dT%H:%M:%S}Z",
            },
            "eventVersion": "0",
        }
        assert [*record["input"], *record["output"]][::2] == ["captureData", "captureData"]
        lines.append(json.dumps(line))
    return lines


@pytest.fixture
def drift_world(tmp_path: Path) -> Iterator[World]:
    (tmp_path / "v").mkdir()
    run = validate_file(SAMPLE, "csv", SPEC, out_dir=tmp_path / "v")
    assert run.reference is not None
    spec = yaml.safe_load((ROOT / "shared/specs/customers.yaml").read_text())
    spec["drift"] |= {"min_rows": 200}
    specs = tmp_path / "specs"
    specs.mkdir()
    # In the spec's own column order: a CSV request's fields are positional.
    (specs / "customers.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
    with mock_aws():
        yield World(specs, run.reference)


def test_a_gpu_endpoint_s_captures_are_read_by_the_drift_check(
    drift_world: World, ledger: Ledger
) -> None:
    destination, endpoint = _destination_the_deployer_asks_for("customers")
    layout = value("aws.sagemaker.capture_layout")
    at = T0 - timedelta(hours=2)
    below = at.strftime(layout["below_destination"].format(endpoint=endpoint, variant=VARIANT))
    prefix = ObjectRef.from_uri(destination.removeprefix("s3://"))
    rows: list[dict[str, Any]] = json.loads(drift_world.rows.to_json(orient="records"))
    key = f"{prefix.key}/{below}{at:%M-%S}-000-{uuid.UUID(int=7)}{layout['suffix']}"
    body = "\n".join(_sagemaker_records(rows, at)) + "\n"
    drift_world.store.put_bytes(ObjectRef(container=prefix.container, key=key), body.encode())
    ledger.fault("serve:sagemaker-endpoint", "captures in SageMaker's own layout and format")

    out = drift_world.svc.check("customers", requested_by="test")

    ledger.delivered(
        "rows a GPU endpoint captured, read by drift", len(rows), out.verdict.current_rows
    )
    assert prefix.container == CAPTURE
    assert out.verdict.current_rows == len(rows)
    # The same distribution as the reference, whichever encoding each request came in.
    assert out.verdict.verdict == "no_drift"


# --- a Lambda's buffered rows when its container stops -------------------------------


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("loss-artifact")
    run = validate_file(SAMPLE, "csv", SPEC, out_dir=base)
    assert run.curated is not None
    return train_artifact(base / "m", run.curated, n_estimators=20, max_depth=2)


def test_rows_a_lambda_invocation_captured_are_stored_when_it_returns(
    artifact: Path, monkeypatch: pytest.MonkeyPatch, ledger: Ledger
) -> None:
    store, lineage = MemoryStore(), MemoryLineage()
    registry = LineageModelRegistry(lineage)
    ref = ObjectRef(container="dhow-t-models", key="models/customers/v1/model.tar.gz")
    store.put_bytes(ref, artifact.read_bytes())
    registry.register(
        "customers",
        artifact=ref.uri,
        image="local:shared.trainer",
        metrics={"roc_auc": 0.7},
        lineage={ARTIFACT_SHA256: hashlib.sha256(artifact.read_bytes()).hexdigest()},
        status="Approved",
    )
    # The spec's own batching (50 rows or 10 s): one request is far from either.
    capture = InferenceCapture.for_spec(store, CAPTURE, SPEC)
    monkeypatch.setenv("DHOW_SERVE_DATASET", "customers")
    monkeypatch.setattr(
        "shared.wiring.build_serve_app",
        lambda settings, ports=None: model_app(SPEC, store, registry, None, capture),
    )

    class Context:
        function_name, function_version, aws_request_id = "dhow-t-serve-customers", "1", "r-1"

    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)  # as Lambda's Python runtime has one for mangum
    try:
        import functions.serve.aws_lambda as entry

        entry = importlib.reload(entry)  # its cold start, with this test's app
        answer = entry.handler(load_event("apigw_http_v2_predict.json"), Context())
    finally:
        asyncio.set_event_loop(None)
        loop.close()
    # Lambda may now freeze the container and stop it without running our code again:
    # what is not in the store at this point is lost.
    ledger.fault("serve:lambda", "container stopped after the invocation returned")
    stored = read_captures(store, CAPTURE, "customers")

    ledger.delivered("rows captured by a Lambda invocation", 1, len(stored))
    assert answer["statusCode"] == 200, answer["body"]
    assert len(stored) == 1
    assert capture.snapshot()["buffered_rows"] == 0


# --- the Azure drift timer and a check that keeps failing -----------------------------


def test_the_timer_sends_a_failing_check_once_per_period(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ledger: Ledger
) -> None:
    assert value("azure.storage.queue_no_duplicate_detection")["duplicate_detection"] is False
    (tmp_path / "hourly.yaml").write_text(
        (ROOT / "shared/specs/customers.yaml").read_text().replace("customers", "hourly")
    )
    assert load_spec("hourly", tmp_path).drift.schedule == "rate(1 hour)"
    monkeypatch.setenv("DHOW_ALERTS_TOPIC_ARN", "arn:aws:sns:me-central-1:123456789012:a")
    import functions.drift_check.core as core

    monkeypatch.setattr(core, "PORTS", replace(core.PORTS, lineage=MemoryLineage()))
    monkeypatch.setattr(core, "SETTINGS", replace(core.SETTINGS, specs_dir=str(tmp_path)))

    class FailingCheck:
        def check(self, dataset: str, **_: Any) -> None:
            raise ConnectionError("the reports bucket is unreachable")

    monkeypatch.setattr(core, "SERVICE", FailingCheck())
    host = json.loads((ROOT / "functions/host.json").read_text())
    max_dequeue = host["extensions"]["queues"]["maxDequeueCount"]
    ledger.fault("drift_check:check", "fails on every delivery")

    sent: dict[str, int] = {}
    poisoned = 0
    start = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    for minute in range(61):  # a tick each minute, 12:00 to 13:00
        for body in core.due_requests(start + timedelta(minutes=minute)):
            period = json.loads(body).get("period")
            sent[period] = sent.get(period, 0) + 1
            failures = 0
            for _ in range(max_dequeue):  # the host's retries, then the poison queue
                try:
                    core.handle(body)
                except ConnectionError:
                    failures += 1
            poisoned += failures == max_dequeue

    for period, times in sorted(sent.items()):
        ledger.action(f"drift check of hourly sent for the period from {period}", times)
    ledger.delivered("drift requests the timer sent", sum(sent.values()), poisoned)
    assert sent == {"2026-11-23T12:00:00Z": 1, "2026-11-23T13:00:00Z": 1}
    assert poisoned == 2


# --- names that made two things one ---------------------------------------------------


def test_long_names_stay_distinct(ledger: Ledger) -> None:
    sha = "0a1b2c3d" + "e" * 56
    datasets = ["a" * 59 + "1", "a" * 59 + "2"]
    models = {endpoint_names("dhow-prod", d, 4, sha)[0] for d in datasets}
    ledger.fault("deploy:names", "two 60-character dataset names sharing a prefix")
    ledger.delivered("models deployed, one name each", len(datasets), len(models))
    runs = [REQ.model_copy(update={"dataset": "d" * 63, "run_tag": f"r{i}"}) for i in range(300)]
    jobs = {training_job_name(r, "dhow-" + "s" * 21) for r in runs}
    ledger.fault("train_launch:names", "300 runs of a 63-character dataset on a 21-character stage")
    ledger.delivered("training runs launched, one job name each", len(runs), len(jobs))
    assert len(models) == len(datasets)
    assert len(jobs) == len(runs)
