"""The first live event path on real LocalStack in me-central-1:
upload -> EventBridge -> SQS -> runner -> ingest handler -> DynamoDB + EventBridge."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from shared.adapters.aws import SqsEventTap, aws_client
from shared.events import DatasetIngested, DatasetRejected, PipelineEvent
from shared.services.ingest import ingest_record_id
from shared.settings import Settings
from shared.topology import build_topology
from shared.wiring import build_ports

ROOT = Path(__file__).resolve().parents[2]
CSV = b"customer_id,age,churned\nC1,30,0\nC2,41,1\n"


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
    tap: SqsEventTap, correlation: str, kind: type[PipelineEvent], timeout: float = 30
) -> PipelineEvent:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in tap.receive(wait_s=1):
            if t.event.correlation_id == correlation and isinstance(t.event, kind):
                tap.ack(t)
                return t.event
            tap.release(t)
    raise AssertionError(f"no {kind.__name__} for {correlation} within {timeout}s")


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
    body = CSV + uuid.uuid4().hex.encode() + b",1,0\n"
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


def _dhow(*args: str, home: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DHOW_LOCAL_HOME": home, "DHOW_STAGE": "itest"}
    for k in ("DHOW_AWS_ENDPOINT_URL", "DHOW_AWS_DYNAMODB_ENDPOINT_URL"):
        env.pop(k, None)  # found through the platform state, as a user would
    return subprocess.run(
        [sys.executable, "-m", "shared.cli", *args],
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
    f.write_bytes(CSV + uuid.uuid4().hex.encode() + b",3,0\n")
    r = _dhow("upload", str(f), "--dataset", "clitest", "--wait", "--json", home=home)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert [e["type"] for e in out["events"]] == ["DatasetIngested"]
    again = _dhow("upload", str(f), "--dataset", "clitest", "--wait", "--json", home=home)
    assert again.returncode == 0
    assert json.loads(again.stdout)["duplicate_of"]
    lineage = json.loads(_dhow("lineage", "clitest", "--json", home=home).stdout)
    assert [r["status"] for r in lineage["records"]] == ["ingested"]
    status = _dhow("local", "status", "--json", home=home)
    assert status.returncode == 0
    assert json.loads(status.stdout)["ready"] is True
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    rejected = _dhow("upload", str(empty), "--dataset", "clitest", "--wait", home=home)
    assert rejected.returncode == 1
    assert "empty_object" in rejected.stdout
