"""The first live event path on real LocalStack in me-central-1:
upload -> EventBridge -> SQS -> runner -> ingest handler -> DynamoDB + EventBridge."""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
import types
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from botocore.exceptions import ClientError

from shared.adapters.aws import SqsEventTap, aws_client
from shared.events import (
    DatasetIngested,
    DatasetRejected,
    DatasetValidated,
    ModelApproved,
    PipelineEvent,
    TrainingCompleted,
    TrainingLaunched,
)
from shared.services.ingest import ingest_record_id
from shared.services.validate import validate_record_id
from shared.settings import Settings
from shared.topology import build_topology
from shared.wiring import build_model_registry, build_ports

ROOT = Path(__file__).resolve().parents[2]
CSV = b"customer_id,age,churned\nC1,30,0\nC2,41,1\n"
SAMPLE = ROOT / "localstack/samples/customers.csv"


@pytest.fixture(scope="module")
def env(aws_platform: dict[str, Any]) -> dict[str, Any]:
    settings: Settings = aws_platform["settings"]
    topo = build_topology(settings.stage)
    return {
        "settings": settings,
        "topo": topo,
        "s3": aws_client("s3", settings),
        "sqs": aws_client("sqs", settings),
        "ports": build_ports(settings, topo),
        "tap": SqsEventTap(aws_client("sqs", settings), topo.queue("events").name),
    }


def wait_event(
    tap: SqsEventTap,
    correlation: str,
    kind: type[PipelineEvent] | types.UnionType,
    timeout: float = 30,
) -> PipelineEvent:
    deadline = time.monotonic() + timeout
    # Others' events are held (hidden for the queue's visibility timeout) while we look,
    # and handed back at the end: SQS gives at most 10 a receive, and released at once
    # the same ten would come back every time, hiding ours behind them.
    held = []
    try:
        while time.monotonic() < deadline:
            for t in tap.receive(wait_s=1):
                if t.event.correlation_id == correlation and isinstance(t.event, kind):
                    tap.ack(t)
                    return t.event
                held.append(t)
    finally:
        for t in held:
            # One held past the visibility timeout came back with a new receipt; its
            # old one may no longer be valid, and it is visible again anyway.
            with contextlib.suppress(ClientError):
                tap.release(t)
    raise AssertionError(f"no {kind} for {correlation} within {timeout}s")


def put(env: dict[str, Any], key: str, body: bytes) -> str:
    upload_id = uuid.uuid4().hex
    env["s3"].put_object(
        Bucket=env["topo"].bucket("raw").name,
        Key=key,
        Body=body,
        Metadata={"dhow_upload_id": upload_id, "dhow_uploaded_by": "itest"},
    )
    return upload_id


def queue_drained(env: dict[str, Any], name: str, timeout: float = 30) -> None:
    url = env["sqs"].get_queue_url(QueueName=name)["QueueUrl"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        a = env["sqs"].get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        if (
            a["ApproximateNumberOfMessages"] == "0"
            and a["ApproximateNumberOfMessagesNotVisible"] == "0"
        ):
            return
        time.sleep(0.3)
    raise AssertionError(f"{name} still has messages after {timeout}s")


def test_upload_reaches_ingest_and_leaves_lineage_and_event(env: dict[str, Any]) -> None:
    body = customers_csv(uuid.uuid4().hex[:6])  # valid, so validation leaves staging alone
    t0 = time.monotonic()
    upload_id = put(env, "datasets/customers/flow.csv", body)
    event = wait_event(env["tap"], upload_id, DatasetIngested)
    elapsed = time.monotonic() - t0
    print(f"\nupload -> DatasetIngested: {elapsed:.3f}s")
    assert isinstance(event, DatasetIngested)
    assert event.uploader == "itest"
    assert event.size_bytes == len(body)
    row = env["ports"].lineage.get("customers", ingest_record_id(event.sha256))
    assert row is not None
    assert row.status == "ingested"
    assert row.attributes["source"].endswith("datasets/customers/flow.csv")
    staged = env["s3"].get_object(Bucket=event.staged.container, Key=event.staged.key)
    assert staged["Body"].read() == body


def test_same_s3_event_delivered_twice_yields_one_row(env: dict[str, Any]) -> None:
    body = CSV + uuid.uuid4().hex.encode() + b",2,1\n"
    key = "datasets/twice/t.csv"
    upload_id = put(env, key, body)
    first = wait_event(env["tap"], upload_id, DatasetIngested)
    # Replay the exact EventBridge delivery S3 made, twice more (at-least-once delivery).
    raw = env["topo"].bucket("raw").name
    event = json.loads((ROOT / "tests/events/eventbridge_s3_object_created.json").read_text())
    event["detail"]["bucket"]["name"] = raw
    event["detail"]["object"]["key"] = key
    url = env["sqs"].get_queue_url(QueueName=env["topo"].queue("ingest").name)["QueueUrl"]
    for _ in range(2):
        env["sqs"].send_message(QueueUrl=url, MessageBody=json.dumps(event))
    queue_drained(env, env["topo"].queue("ingest").name)
    rows = [r for r in env["ports"].lineage.list("twice") if r.kind == "ingest"]
    assert len(rows) == 1
    assert rows[0].attributes["sha256"] == first.sha256
    with pytest.raises(AssertionError):
        wait_event(env["tap"], upload_id, DatasetIngested, timeout=3)


def test_poison_message_ends_in_the_dlq(env: dict[str, Any]) -> None:
    q = env["topo"].queue("ingest")
    url = env["sqs"].get_queue_url(QueueName=q.name)["QueueUrl"]
    dlq = env["sqs"].get_queue_url(QueueName=q.dlq_name)["QueueUrl"]
    marker = f"not an event {uuid.uuid4().hex}"
    env["sqs"].send_message(QueueUrl=url, MessageBody=marker)
    deadline = time.monotonic() + 40
    bodies: list[str] = []
    while time.monotonic() < deadline and marker not in bodies:
        r = env["sqs"].receive_message(QueueUrl=dlq, WaitTimeSeconds=1, MaxNumberOfMessages=10)
        for m in r.get("Messages", []):
            bodies.append(m["Body"])
            env["sqs"].delete_message(QueueUrl=dlq, ReceiptHandle=m["ReceiptHandle"])
    assert marker in bodies, "the poison message never reached the DLQ"


def test_rejected_upload_is_answered_and_left_in_place(env: dict[str, Any]) -> None:
    key = f"datasets/customers/broken-{uuid.uuid4().hex[:6]}.parquet"
    upload_id = put(env, key, CSV)
    event = wait_event(env["tap"], upload_id, DatasetRejected)
    assert isinstance(event, DatasetRejected)
    assert event.reason == "format_mismatch"
    raw = env["topo"].bucket("raw").name
    assert env["s3"].get_object(Bucket=raw, Key=key)["Body"].read() == CSV


def customers_csv(tag: str) -> bytes:
    """The sample with ids made unique to this test, so its bytes are a new version."""
    return SAMPLE.read_text().replace("\nC", f"\n{tag}C").encode()


def test_good_upload_is_validated_and_curated(env: dict[str, Any]) -> None:
    t0 = time.monotonic()
    upload_id = put(env, "datasets/customers/good.csv", customers_csv(uuid.uuid4().hex[:6]))
    event = wait_event(env["tap"], upload_id, DatasetValidated, timeout=60)
    print(f"\nupload -> DatasetValidated: {time.monotonic() - t0:.3f}s")
    assert isinstance(event, DatasetValidated)
    assert event.rows == 400
    body = env["s3"].get_object(Bucket=event.curated.container, Key=event.curated.key)["Body"]
    assert len(pd.read_parquet(io.BytesIO(body.read()))) == 400
    row = env["ports"].lineage.get("customers", validate_record_id(event.sha256))
    assert row is not None
    assert row.status == "validated"
    assert row.attributes["spec_version"] == event.spec_version


def test_bad_upload_is_quarantined_with_a_readable_report(env: dict[str, Any]) -> None:
    data = customers_csv(uuid.uuid4().hex[:6]).replace(b",gold,", b",platinum,", 1)
    upload_id = put(env, "datasets/customers/bad.csv", data)
    event = wait_event(env["tap"], upload_id, DatasetRejected, timeout=60)
    assert isinstance(event, DatasetRejected)
    assert event.stage == "validate"
    assert event.reason == "schema_checks_failed"
    assert event.quarantined is not None
    assert event.report is not None
    s3 = env["s3"]
    quarantined = s3.get_object(Bucket=event.quarantined.container, Key=event.quarantined.key)
    assert quarantined["Body"].read() == data
    report = json.loads(
        s3.get_object(Bucket=event.report.container, Key=event.report.key)["Body"].read()
    )
    assert report["checks"][0]["column"] == "segment"
    assert report["failure_cases"][0]["value"] == "platinum"
    # The raw upload is untouched.
    raw = env["topo"].bucket("raw").name
    assert s3.get_object(Bucket=raw, Key="datasets/customers/bad.csv")["Body"].read() == data


def _dhow(*args: str, home: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DHOW_LOCAL_HOME": home, "DHOW_STAGE": "itest"}
    for k in ("DHOW_AWS_ENDPOINT_URL", "DHOW_AWS_DYNAMODB_ENDPOINT_URL"):
        env.pop(k, None)  # found through the platform state, as a user would
    return subprocess.run(
        [sys.executable, "-m", "dhow_cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_upload_wait_json_and_status(env: dict[str, Any], tmp_path: Path) -> None:
    home = os.environ["DHOW_LOCAL_HOME"]
    f = tmp_path / "cli.csv"
    f.write_bytes(customers_csv(uuid.uuid4().hex[:6]))
    r = _dhow("upload", str(f), "--dataset", "customers", "--wait", "--json", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [e["type"] for e in out["events"]] == [
        "DatasetIngested",
        "DatasetValidated",
        "TrainingLaunched",
        "TrainingCompleted",
        "ModelApproved",
    ]
    again = _dhow("upload", str(f), "--dataset", "customers", "--wait", "--json", home=home)
    assert again.returncode == 0
    assert json.loads(again.stdout)["duplicate_of"]
    lineage = json.loads(_dhow("lineage", "customers", "--json", home=home).stdout)
    sha = out["events"][0]["event"]["sha256"]
    mine = {
        r["kind"]: r["status"] for r in lineage["records"] if r["attributes"].get("sha256") == sha
    }
    assert mine == {
        "ingest": "ingested",
        "validate": "validated",
        "train": "launched",
        "register": "approved",
    }
    models = json.loads(_dhow("models", "customers", "--json", home=home).stdout)
    assert sha in {v["lineage"]["sha256"] for v in models["versions"]}
    version = out["events"][-1]["event"]["model_version"]
    traced = json.loads(_dhow("lineage", f"customers@v{version}", "--json", home=home).stdout)
    assert traced["model"]["lineage"]["sha256"] == sha
    # From the model back to the raw upload.
    assert {r["kind"] for r in traced["records"]} >= {"ingest", "validate"}
    [ingest] = [r for r in traced["records"] if r["kind"] == "ingest"]
    assert ingest["attributes"]["source"].endswith("datasets/customers/cli.csv")
    # A manual retrain is a new job on the latest validated version, recorded with who asked.
    retrain = _dhow("train", "customers", "--wait", "--json", "--timeout", "120", home=home)
    assert retrain.returncode in (0, 1), retrain.stderr
    manual = json.loads(retrain.stdout)
    assert manual["status"] == "launched"
    assert manual["events"][0]["type"] == "TrainingLaunched"
    assert manual["events"][-1]["type"] in ("ModelApproved", "ModelRejected")
    status = _dhow("local", "status", "--json", home=home)
    assert status.returncode == 0
    assert json.loads(status.stdout)["ready"] is True
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    rejected = _dhow("upload", str(empty), "--dataset", "customers", "--wait", home=home)
    assert rejected.returncode == 1
    assert "empty_object" in rejected.stdout


def test_validated_dataset_is_trained_and_registered(env: dict[str, Any]) -> None:
    t0 = time.monotonic()
    upload_id = put(env, "datasets/customers/train.csv", customers_csv(uuid.uuid4().hex[:6]))
    validated = wait_event(env["tap"], upload_id, DatasetValidated, timeout=60)
    launched = wait_event(env["tap"], upload_id, TrainingLaunched, timeout=60)
    completed = wait_event(env["tap"], upload_id, TrainingCompleted, timeout=120)
    verdict = wait_event(env["tap"], upload_id, ModelApproved, timeout=60)
    print(f"\nupload -> ModelApproved: {time.monotonic() - t0:.3f}s")
    assert isinstance(launched, TrainingLaunched)
    assert launched.backend == "local"
    assert isinstance(completed, TrainingCompleted)
    assert completed.status == "Completed"
    assert completed.model_artifact is not None
    assert completed.model_artifact.key.endswith(f"{launched.job_name}/output/model.tar.gz")
    assert isinstance(verdict, ModelApproved)
    registry = build_model_registry(env["settings"])
    [version] = [
        v for v in registry.versions("customers") if v.version == int(verdict.model_version)
    ]
    assert isinstance(validated, DatasetValidated)
    # From the model back to the exact bytes it learned from.
    assert version.lineage["sha256"] == validated.sha256
    assert version.lineage["curated"] == validated.curated.uri
    assert version.lineage["job_name"] == launched.job_name


def test_a_second_identical_dataset_validated_launches_nothing(env: dict[str, Any]) -> None:
    upload_id = put(env, "datasets/customers/twice.csv", customers_csv(uuid.uuid4().hex[:6]))
    validated = wait_event(env["tap"], upload_id, DatasetValidated, timeout=60)
    first = wait_event(env["tap"], upload_id, TrainingLaunched, timeout=60)
    # Deliver the same DatasetValidated to train-launch again, as EventBridge may.
    body = json.dumps(
        {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "DatasetValidated",
            "source": "dhow.pipeline",
            "account": "000000000000",
            "time": "2026-11-22T00:00:00Z",
            "region": "me-central-1",
            "resources": [],
            "detail": json.loads(validated.model_dump_json()),
        }
    )
    url = env["sqs"].get_queue_url(QueueName=env["topo"].queue("train").name)["QueueUrl"]
    env["sqs"].send_message(QueueUrl=url, MessageBody=body)
    queue_drained(env, env["topo"].queue("train").name)
    with pytest.raises(AssertionError):
        wait_event(env["tap"], upload_id, TrainingLaunched, timeout=3)
    assert isinstance(first, TrainingLaunched)
    rows = [
        r
        for r in env["ports"].lineage.list("customers")
        if r.kind == "train" and r.attributes.get("sha256") == validated.sha256
    ]
    assert [r.attributes["job_name"] for r in rows] == [first.job_name]
