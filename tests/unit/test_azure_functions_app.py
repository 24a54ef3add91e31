"""The Azure Functions app and its entry points, without a host: the bindings the v2
programming model indexes, the triggers' event shapes, and that each entry point is
only a parser of its trigger around the function's one ``handle``."""

from __future__ import annotations

import ast
import importlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from infra.azure.functions import QUEUE_CONNECTION
from shared.errors import EventParseError
from shared.event_patterns import matches
from shared.topology import build_topology
from shared.triggers import parse_training_state_change
from tests.helpers import MemoryLineage

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "tests" / "events"


@pytest.fixture
def function_app(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("DHOW_STAGE", "prod")
    import functions.function_app as module

    return importlib.reload(module)


def _bindings(fn: Any) -> list[dict[str, Any]]:
    bindings: list[dict[str, Any]] = json.loads(fn.get_function_json())["bindings"]
    return bindings


def test_every_queue_function_of_the_topology_is_bound_to_its_queue(
    function_app: ModuleType,
) -> None:
    topo = build_topology("prod")
    indexed = {f.get_function_name(): f for f in function_app.app.get_functions()}
    for fn in topo.functions:
        if fn.trigger_queue is None:
            continue
        (trigger,) = _bindings(indexed[fn.name])
        assert trigger["type"] == "queueTrigger"
        assert trigger["queueName"] == topo.queue(fn.trigger_queue).name
        # The data account's queues (where Event Grid delivers), not the host's account.
        assert trigger["connection"] == QUEUE_CONNECTION != "AzureWebJobsStorage"


def test_serve_is_an_http_route_and_drift_has_a_timer_feeding_its_queue(
    function_app: ModuleType,
) -> None:
    topo = build_topology("prod")
    indexed = {f.get_function_name(): f for f in function_app.app.get_functions()}
    serve = {b["type"]: b for b in _bindings(indexed[topo.function("serve").name])}
    assert serve["httpTrigger"]["route"] == "datasets/{dataset}/{*path}"
    assert serve["httpTrigger"]["authLevel"] == "FUNCTION"
    timer = {b["type"]: b for b in _bindings(indexed[f"{topo.function('drift_check').name}-timer"])}
    assert timer["timerTrigger"]["schedule"] == "0 * * * * *"
    assert timer["queue"]["queueName"] == topo.queue("drift").name
    assert timer["queue"]["direction"] == "OUT"
    assert timer["queue"]["connection"] == QUEUE_CONNECTION
    # validate's sweep of jobs whose end never came: a timer feeding the validate queue.
    sweep = {
        b["type"]: b for b in _bindings(indexed[f"{topo.function('validate').name}-sweep-timer"])
    }
    assert sweep["queue"]["queueName"] == topo.queue("validate").name
    assert sweep["queue"]["direction"] == "OUT"
    assert len(indexed) == len(topo.functions) + len(topo.schedules)  # one timer each


@pytest.mark.parametrize(
    "fn", ["ingest", "validate", "train_launch", "register", "deploy", "drift_check"]
)
def test_entry_points_only_unwrap_their_trigger_around_one_handle(fn: str) -> None:
    """No logic copied between clouds: both entry points call ``core.handle`` with the
    message body and do nothing else of their own."""
    for entry in ("aws_lambda", "azure_function"):
        tree = ast.parse((ROOT / "functions" / fn / f"{entry}.py").read_text())
        imported = {
            (node.module, alias.name)
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert (f"functions.{fn}.core", "handle") in imported, entry
        bodies = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert all(len(b.body) == 1 for b in bodies), f"{entry} does more than unwrap"


def test_azureml_run_status_changed_is_a_training_end() -> None:
    ended = parse_training_state_change((EVENTS / "azureml_run_status_changed.json").read_text())
    assert ended.job_name == "dhow-prod--customers-c4e6eda8-b51f36e6cfc4"
    assert ended.status == "Completed"
    assert ended.artifact == (
        "dhow-prod-models/models/customers/dhow-prod--customers-c4e6eda8-b51f36e6cfc4/"
        "output/model.tar.gz"
    )
    assert ended.hyperparameters == {"target": "churned", "task": "binary", "max_depth": "6"}
    assert ended.instance_type == "dhow-prod-gpu"
    assert ended.failure_reason is None


def test_azureml_canceled_is_stopped_and_running_is_refused() -> None:
    event = json.loads((EVENTS / "azureml_run_status_changed.json").read_text())
    event["data"]["runStatus"] = "Canceled"
    ended = parse_training_state_change(event)
    assert ended.status == "Stopped"
    assert ended.failure_reason == "Azure ML run ended Canceled"
    event["data"]["runStatus"] = "Running"
    with pytest.raises(EventParseError, match="not an end state"):
        parse_training_state_change(event)


def test_topology_patterns_route_each_event_where_eventbridge_would() -> None:
    topo = build_topology("prod")

    def targets(envelope: dict[str, Any]) -> set[str]:
        return {r.target_queue for r in topo.rules if matches(r.pattern, envelope)}

    def pipeline(kind: str, **detail: Any) -> dict[str, Any]:
        return {"source": "dhow.pipeline", "detail-type": kind, "detail": detail}

    assert targets(pipeline("DatasetIngested")) == {"validate", "events"}
    assert targets(pipeline("ModelApproved")) == {"deploy", "events"}
    assert targets(pipeline("DriftDetected", action="retrain")) == {"train", "events"}
    assert targets(pipeline("DriftDetected", action="alert")) == {"events"}
    s3 = {
        "source": "aws.s3",
        "detail-type": "Object Created",
        "detail": {"bucket": {"name": "dhow-prod-raw"}, "object": {"key": "datasets/c/a.csv"}},
    }
    assert targets(s3) == {"ingest"}
    s3["detail"]["object"] = {"key": "elsewhere/a.csv"}
    assert targets(s3) == set()


def test_an_unknown_pattern_operator_is_refused() -> None:
    with pytest.raises(ValueError, match="unsupported"):
        matches({"detail": {"size": [{"numeric": [">", 1]}]}}, {"detail": {"size": 3}})


def test_the_timer_sends_only_checks_that_are_due(tmp_path: Path) -> None:
    from shared.lineage import DriftRecord
    from shared.services.drift import due_drift_checks

    (tmp_path / "hourly.yaml").write_text(
        (ROOT / "shared" / "specs" / "customers.yaml").read_text().replace("customers", "hourly")
    )
    lineage = MemoryLineage()
    now = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
    assert due_drift_checks(lineage, str(tmp_path), now) == ["hourly"]  # never checked
    lineage.put_if_absent(
        DriftRecord(
            dataset="hourly",
            record_id="drift:1",
            status="no_drift",
            created_at=now - timedelta(minutes=30),
        )
    )
    assert due_drift_checks(lineage, str(tmp_path), now) == []
    assert due_drift_checks(lineage, str(tmp_path), now + timedelta(minutes=31)) == ["hourly"]
