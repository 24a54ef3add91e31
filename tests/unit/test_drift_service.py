"""The drift check end to end in one process: a real validated reference sample, rows
captured by the real capture code, the model registry, SNS, SQS and CloudWatch in moto,
and evidently's report."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from moto import mock_aws

from shared.adapters.aws import CloudWatchMetrics, SnsAlerts, aws_client
from shared.adapters.sagemaker_registry import SageMakerModelRegistry
from shared.capture import InferenceCapture
from shared.events import DriftChecked, DriftDetected, ObjectRef
from shared.layout import DatasetVersion
from shared.services.drift import (
    POLICY_RECORD,
    DriftService,
    drift_check_id,
    drift_history,
    window_end,
)
from shared.settings import Settings
from shared.specs import load_spec
from shared.validation import validate_file
from tests.helpers import ROOT, MemoryBus, MemoryLineage, MemoryStore

CAPTURE, REPORTS, CURATED = "dhow-t-capture", "dhow-t-reports", "dhow-t-curated"
# The version the champion learnt from, whose reference sample the checks compare with.
CHAMPION_DATA = DatasetVersion("customers", "abc123" + "0" * 58)
SAMPLE = ROOT / "localstack/samples/customers.csv"
# The demo's shifted replay: new, older, bigger-spending gold customers from Dubai, what
# a campaign brings in. Five of the seven inputs move, past the drift share of one half.
SHIFTED = ROOT / "localstack/samples/customers-shifted.csv"
T0 = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


class World:
    def __init__(self, specs: Path, reference: Path) -> None:
        self.store, self.bus, self.lineage = MemoryStore(), MemoryBus(), MemoryLineage()
        settings = Settings()
        self.registry = SageMakerModelRegistry(aws_client("sagemaker", settings), stage="t")
        sns, self.sqs = aws_client("sns", settings), aws_client("sqs", settings)
        topic = sns.create_topic(Name="dhow-t-alerts")["TopicArn"]
        self.inbox = self.sqs.create_queue(QueueName="on-call")["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=self.inbox, AttributeNames=["QueueArn"])
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn["Attributes"]["QueueArn"])
        self.cloudwatch = aws_client("cloudwatch", settings)
        self.now = T0
        self.svc = DriftService(
            self.store,
            self.bus,
            self.lineage,
            self.registry,
            CloudWatchMetrics(self.cloudwatch),
            SnsAlerts(sns, topic),
            capture_container=CAPTURE,
            reports_container=REPORTS,
            specs_dir=specs,
            clock=lambda: self.now,
        )
        key = CHAMPION_DATA.curated_key
        self.store.upload_file(
            ObjectRef(container=CURATED, key=CHAMPION_DATA.reference_key),
            reference,
            {},
        )
        self.registry.register(
            "customers",
            artifact="s3://dhow-t-models/m.tar.gz",
            image="local:shared.trainer",
            metrics={"roc_auc": 0.7},
            lineage={"curated": f"s3://{CURATED}/{key}"},
            status="Approved",
        )
        self.rows = pd.read_csv(SAMPLE).drop(columns=["churned"])
        self.shifted = pd.read_csv(SHIFTED).drop(columns=["churned"])

    def capture(self, frame: pd.DataFrame, at: datetime) -> None:
        cap = InferenceCapture(self.store, CAPTURE, "customers", batch_rows=10**6, now=lambda: at)
        records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
        cap.record(records, [0] * len(records), "1", "req")
        assert cap.flush() == len(records)

    def alerts(self) -> list[dict[str, Any]]:
        got = self.sqs.receive_message(QueueUrl=self.inbox, MaxNumberOfMessages=10)
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]

    def events(self, kind: type[Any]) -> list[Any]:
        return [e for e in self.bus.events if isinstance(e, kind)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = validate_file(SAMPLE, "csv", load_spec("customers"), out_dir=tmp_path_factory.mktemp("v"))
    assert run.reference is not None
    return run.reference


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference: Path) -> Iterator[World]:
    spec = yaml.safe_load((ROOT / "shared/specs/customers.yaml").read_text())
    spec["drift"] |= {"policy": "retrain", "cooldown_hours": 6, "min_rows": 200}
    (tmp_path / "customers.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        yield World(tmp_path, reference)


def test_captures_like_the_training_data_are_no_drift(world: World) -> None:
    world.capture(world.rows, T0 - timedelta(hours=2))
    out = world.svc.check("customers", requested_by="alice")
    assert out.verdict.verdict == "no_drift"
    assert out.verdict.current_rows == len(world.rows)
    assert out.action == "none"
    assert world.alerts() == []
    checked = world.events(DriftChecked)
    assert [e.verdict for e in checked] == ["no_drift"]
    assert world.events(DriftDetected) == []
    summary = json.loads(b"".join(world.store.iter_chunks(out.summary)))
    assert summary["verdict"] == "no_drift"
    assert summary["requested_by"] == "alice"
    assert {c["column"] for c in summary["columns"]} == {
        "age", "tenure_months", "monthly_spend_aed", "support_calls",
        "segment", "emirate", "has_mobile_app",
    }  # fmt: skip
    assert out.report is not None
    page = b"".join(world.store.iter_chunks(out.report)).decode()
    assert "Drift check of customers: no drift" in page
    assert "uses all 400 current and 400 reference rows" in page
    metrics = world.cloudwatch.list_metrics(Namespace="Dhow/Drift")["Metrics"]
    assert {"DatasetDrift", "DriftShare", "CurrentRows", "ColumnStatistic"} <= {
        m["MetricName"] for m in metrics
    }
    row = world.lineage.get("customers", f"drift:{out.check_id}")
    assert row is not None
    assert row.status == "no_drift"
    assert row.attributes["report"] == out.report.uri


def test_a_shift_alerts_names_the_columns_and_retrains_once_per_cooldown(world: World) -> None:
    world.capture(world.shifted, T0 - timedelta(hours=1))
    first = world.svc.check("customers")
    assert first.verdict.verdict == "drift"
    assert set(first.verdict.drifted_columns) == {
        "age", "tenure_months", "monthly_spend_aed", "segment", "emirate"
    }  # fmt: skip
    assert first.action == "retrain"
    [alert] = world.alerts()
    assert alert["Subject"].startswith("[dhow] drift in customers: ")
    assert "emirate" in alert["Subject"]
    assert first.report is not None
    assert first.report.uri in alert["Message"]
    assert "the retrain has been requested" in alert["Message"]
    [detected] = world.events(DriftDetected)
    assert detected.action == "retrain"
    assert detected.check_id == first.check_id

    # An hour later the feed still drifts: an alert, but no second retrain.
    world.now = T0 + timedelta(hours=1)
    second = world.svc.check("customers")
    assert second.verdict.verdict == "drift"
    assert second.action == "alert"
    assert second.cooldown_until == T0 + timedelta(hours=6)
    [alert] = world.alerts()
    assert "cooling down until 2026-11-23 16:00 UTC" in alert["Message"]
    assert [e.action for e in world.events(DriftDetected)] == ["retrain", "alert"]
    assert world.events(DriftDetected)[1].cooldown_until == T0 + timedelta(hours=6)

    # Past the cooldown (the captures still in the 24 h window) it acts again.
    world.now = T0 + timedelta(hours=6, minutes=1)
    third = world.svc.check("customers")
    assert third.action == "retrain"
    policy = world.lineage.get("customers", POLICY_RECORD)
    assert policy is not None
    assert policy.attributes["check_id"] == third.check_id
    actions = [r.attributes["action"] for r in drift_history(world.lineage, "customers")]
    assert actions == ["retrain", "alert", "retrain"]


def test_two_checks_at_once_cannot_both_act(world: World) -> None:
    spec = load_spec("customers", world.svc._specs)
    assert world.svc._take_action(spec, "a", T0) == (True, None)
    assert world.svc._take_action(spec, "b", T0) == (False, T0 + timedelta(hours=6))


def test_too_few_captured_rows_is_insufficient_data_without_alarm(world: World) -> None:
    world.capture(world.shifted.head(150), T0 - timedelta(hours=1))
    # Rows older than the 24 h window do not count.
    world.capture(world.shifted, T0 - timedelta(hours=30))
    out = world.svc.check("customers")
    assert out.verdict.verdict == "insufficient_data"
    assert out.verdict.current_rows == 150
    assert out.report is None
    assert out.action == "none"
    assert out.note is not None
    assert "fewer than the 200" in out.note
    assert world.alerts() == []
    assert [e.verdict for e in world.events(DriftChecked)] == ["insufficient_data"]
    assert world.events(DriftDetected) == []


@pytest.fixture
def quick_report(monkeypatch: pytest.MonkeyPatch) -> None:
    """evidently's page is checked above; these tests are about what a check does."""
    monkeypatch.setattr(
        "shared.drift_report.render_html", lambda *a, **k: b"<html>drift report</html>"
    )


def test_a_check_is_its_window_and_trigger_not_chance() -> None:
    end = T0
    start = end - timedelta(hours=24)
    assert drift_check_id("customers", start, end, "schedule") == drift_check_id(
        "customers", start, end, "schedule"
    )
    assert drift_check_id("customers", start, end, "schedule").startswith("20261123T100000Z-")
    others = {
        drift_check_id("orders", start, end, "schedule"),
        drift_check_id("customers", start - timedelta(hours=1), end, "schedule"),
        drift_check_id("customers", start, end + timedelta(hours=1), "schedule"),
        drift_check_id("customers", start, end, "alice"),
    }
    assert drift_check_id("customers", start, end, "schedule") not in others
    assert len(others) == 4
    # The schedule's time for the run, else the moment a person asked: a `dhow drift run`
    # right after traffic sees that traffic (the minute's start did not), and a second run
    # seconds later is a check of its own.
    assert window_end(T0, T0 + timedelta(minutes=90)) == T0
    asked = T0 + timedelta(seconds=42, microseconds=7)
    assert window_end(None, asked) == asked
    later = asked + timedelta(seconds=5)
    assert drift_check_id("customers", start, window_end(None, asked), "alice") != (
        drift_check_id("customers", start, window_end(None, later), "alice")
    )


def test_one_scheduled_run_delivered_twice_is_one_check(world: World, quick_report: None) -> None:
    world.capture(world.shifted, T0 - timedelta(hours=1))
    first = world.svc.check("customers", scheduled_at=T0)
    world.now = T0 + timedelta(minutes=90)  # SQS hands the message out again
    again = world.svc.check("customers", scheduled_at=T0)
    assert again.check_id == first.check_id
    assert again.repeated
    assert again.action == first.action == "retrain"
    assert again.verdict == first.verdict
    assert [e.action for e in world.events(DriftDetected)] == ["retrain"]
    assert len(world.alerts()) == 1
    assert len(drift_history(world.lineage, "customers")) == 1


def test_a_check_that_died_after_taking_the_cooldown_still_retrains_on_redelivery(
    world: World, quick_report: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.capture(world.shifted, T0 - timedelta(hours=1))
    real = world.svc._alerts.send
    died: list[bool] = []

    def die_once(*args: Any, **kwargs: Any) -> str:
        if not died:
            died.append(True)
            raise SystemExit("the function died before its alert")
        return real(*args, **kwargs)

    monkeypatch.setattr(world.svc._alerts, "send", die_once)
    with pytest.raises(SystemExit):
        world.svc.check("customers", scheduled_at=T0)
    policy = world.lineage.get("customers", POLICY_RECORD)
    assert policy is not None  # the cooldown was taken before the crash
    world.now = T0 + timedelta(minutes=90)
    out = world.svc.check("customers", scheduled_at=T0)
    assert out.action == "retrain"
    assert [e.action for e in world.events(DriftDetected)] == ["retrain"]
    [row] = drift_history(world.lineage, "customers")
    assert (row.status, row.attributes["action"]) == ("drift", "retrain")
