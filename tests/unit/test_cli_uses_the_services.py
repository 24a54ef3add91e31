"""The CLI asks the services and ports, never a copy of their logic or a client of its
own (issue 17): `dhow upload` asks ingest's own "seen before?" functions what a new
upload of known bytes does, and `dhow local alerts` drains an ``AlertInbox``."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import boto3
import pytest
from click.testing import CliRunner
from dhow_cli import app, main
from moto import mock_aws

from shared.adapters.aws import SqsAlertInbox, aws_client
from shared.adapters.azure import QueueAlertInbox
from shared.events import ObjectRef
from shared.ports import AlertInbox, DeliveredAlert, LineageRecord
from shared.services.alerts import drain_alerts
from shared.services.ingest import IngestService, first_validation, revalidates
from shared.settings import Settings
from shared.triggers import ObjectCreated
from shared.wiring import Ports
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "localstack/samples/customers.csv"
RAW, STAGING = "dhow-t-raw", "dhow-t-staging"


@pytest.mark.parametrize("validation", [None, "claimed", "validated", "failed", "rejected"])
def test_upload_says_what_ingest_does_with_bytes_it_has_seen(
    monkeypatch: pytest.MonkeyPatch, validation: str | None
) -> None:
    """Ingest and `dhow upload` read the same lineage the same way: the CLI says a new
    attempt will run exactly when ingest announces the new upload, and nothing new
    will run exactly when ingest calls it a duplicate."""
    store, lineage, bus = MemoryStore(), MemoryLineage(), MemoryBus()
    ingest = IngestService(
        store, bus, lineage, staging_container=STAGING, max_upload_bytes=10**7, claim_seconds=60
    )
    data = SAMPLE.read_bytes()

    def uploaded(key: str) -> ObjectCreated:
        store.put_bytes(ObjectRef(container=RAW, key=key), data, {})
        return ObjectCreated(container=RAW, key=key, size=len(data), source_event="test")

    first = ingest.handle(uploaded("datasets/customers/first.csv"))
    assert first.status == "ingested"
    assert first.sha256 is not None
    if validation is not None:
        lineage.put_if_absent(
            LineageRecord(
                dataset="customers",
                record_id=f"validate:{first.sha256}",
                kind="validate",
                status=validation,
            )
        )
    assert revalidates(first_validation(lineage, "customers", first.sha256)) is (
        validation == "failed"
    )
    monkeypatch.setattr(app, "resolve_settings", lambda: Settings())
    monkeypatch.setattr(
        "shared.wiring.build_ports", lambda s, t=None: Ports(store=store, bus=bus, lineage=lineage)
    )
    said = CliRunner().invoke(main, ["upload", str(SAMPLE), "--dataset", "customers"]).output
    again = ingest.handle(uploaded("datasets/customers/again.csv")).status
    assert again in ("ingested", "duplicate")
    assert ("a new attempt will run" in said) is (again == "ingested"), said
    assert ("nothing new will run" in said) is (again == "duplicate"), said


def _queue_calls(path: Path) -> list[str]:
    names = {"receive_message", "receive_messages", "delete_message", "get_queue_url"}
    return [
        f"{path.relative_to(ROOT)}:{node.lineno} {node.func.attr}"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in names
    ]


def test_the_cli_reads_no_queue_with_a_client_of_its_own() -> None:
    """Queues are read through the ports (EventTap, AlertInbox); before, `dhow local
    alerts` drained SQS and the Storage queue with clients of its own."""
    modules = sorted((ROOT / "localstack/dhow_cli").glob("*.py"))
    assert modules
    assert [call for m in modules for call in _queue_calls(m)] == []


class MemoryInbox(AlertInbox):
    def __init__(self, *batches: list[tuple[str, str]]) -> None:
        self.batches = [list(b) for b in batches]
        self.acked: list[str] = []

    def receive(self, wait_s: int = 1) -> list[DeliveredAlert]:
        batch = self.batches.pop(0) if self.batches else []
        return [DeliveredAlert(subject=s, message=m, handle=s) for s, m in batch]

    def ack(self, alert: DeliveredAlert) -> None:
        self.acked.append(alert.handle)


def test_drain_reads_until_empty_and_removes_each_alert() -> None:
    inbox = MemoryInbox([("a", "1"), ("b", "2")], [("c", "3")], [], [("d", "late")])
    assert [a.subject for a in drain_alerts(inbox, wait_s=0)] == ["a", "b", "c"]
    assert inbox.acked == ["a", "b", "c"]


def test_drain_waits_for_a_first_alert_until_the_deadline() -> None:
    ticks = iter([0.0, 1.0, 2.0, 3.0])
    inbox = MemoryInbox([], [], [("late", "x")])
    got = drain_alerts(inbox, wait_s=2.5, clock=lambda: next(ticks))
    assert [a.subject for a in got] == ["late"]
    assert drain_alerts(MemoryInbox(), wait_s=0) == []


def test_the_sqs_inbox_reads_sns_envelopes_and_deletes_them() -> None:
    settings = Settings()
    with mock_aws():
        sqs = boto3.client("sqs", region_name=settings.aws_region)
        url = sqs.create_queue(QueueName="dhow-t-alerts-local-inbox")["QueueUrl"]
        for n in (1, 2):
            envelope = {"Type": "Notification", "Subject": f"drift {n}", "Message": f"body {n}"}
            sqs.send_message(QueueUrl=url, MessageBody=json.dumps(envelope))
        inbox = SqsAlertInbox(aws_client("sqs", settings), "dhow-t-alerts-local-inbox")
        got = drain_alerts(inbox, wait_s=0)
        assert sorted((a.subject, a.message) for a in got) == [
            ("drift 1", "body 1"),
            ("drift 2", "body 2"),
        ]
        assert drain_alerts(inbox, wait_s=0) == []


class FakeQueue:
    """The two calls QueueAlertInbox makes on azure-storage-queue's QueueClient."""

    def __init__(self, bodies: list[dict[str, Any]]) -> None:
        self.messages = [
            type("Msg", (), {"id": f"m{i}", "pop_receipt": f"r{i}", "content": json.dumps(b)})
            for i, b in enumerate(bodies)
        ]
        self.deleted: list[tuple[str, str]] = []

    def receive_messages(self, **_: Any) -> list[Any]:
        got, self.messages = self.messages, []
        return got

    def delete_message(self, message_id: str, receipt: str) -> None:
        self.deleted.append((message_id, receipt))


def test_the_storage_queue_inbox_reads_what_queue_alerts_writes() -> None:
    queue = FakeQueue([{"Subject": "drift", "Message": "body", "Attributes": {}}])
    got = drain_alerts(QueueAlertInbox(queue), wait_s=0)  # type: ignore[arg-type]
    assert [(a.subject, a.message) for a in got] == [("drift", "body")]
    assert queue.deleted == [("m0", "r0")]


def test_dhow_local_alerts_prints_what_the_inbox_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    inbox = MemoryInbox([("drift on customers", "3 of 5 columns drifted")])
    monkeypatch.setattr(app, "resolve_settings", lambda: Settings())
    monkeypatch.setattr("dhow_local.provision.alert_inbox", lambda _s, _topic: inbox)
    r = CliRunner().invoke(main, ["local", "alerts", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.output)
    assert out["alerts"] == [{"subject": "drift on customers", "message": "3 of 5 columns drifted"}]
    assert out["topic"].endswith("alerts")
    text = CliRunner().invoke(main, ["local", "alerts"]).output
    assert text == "no alerts\n"
