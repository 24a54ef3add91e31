"""Drift on the live local platform: served and captured rows are checked against the
champion's training sample through `dhow drift run`; a shifted replay drifts, alerts
through SNS to a subscriber queue, and its retrain policy is skipped, saying why, since
nothing was uploaded after the champion's data (issue 19, part 3); and
the EventBridge Scheduler schedule of the dataset, played by the runner, runs the
drift-check function through its queue."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from shared.adapters.aws import aws_client
from shared.events import (
    DeploymentCompleted,
    DriftDetected,
    ModelApproved,
)
from shared.ports import LineageRecord
from tests.integration.test_aws_ingest_flow import (
    customers_csv,
    env,  # noqa: F401 - the module's fixture, shared
    put,
    wait_event,
)

ROOT = Path(__file__).resolve().parents[2]
# The package itself, not the installed script (which names whatever the venv was built from).
DHOW = (sys.executable, "-m", "dhow_cli")


def dhow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DHOW, *args], capture_output=True, text=True, timeout=180, check=False,
        env=dict(os.environ), cwd=ROOT,
    )  # fmt: skip


def predict(sample: str) -> None:
    cli = dhow("predict", "customers", str(ROOT / "localstack/samples" / sample), "--json")
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert json.loads(cli.stdout)["rows"] == 400


def captured_at_least(env: dict[str, Any], n: int) -> None:  # noqa: F811
    from shared.capture import read_captures

    container = env["topo"].bucket("capture").name
    deadline = time.monotonic() + 40  # batches of 50 rows, or 10 s for what is left
    while time.monotonic() < deadline:
        if len(read_captures(env["ports"].store, container, "customers")) >= n:
            return
        time.sleep(1)
    raise AssertionError(f"fewer than {n} rows captured in 40 s")


def wait_row(
    env: dict[str, Any],  # noqa: F811
    correlation: str,
    kind: str,
    statuses: set[str],
    timeout: float = 60,
) -> LineageRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for r in env["ports"].lineage.list("customers"):
            if (
                r.kind == kind
                and r.attributes.get("correlation_id") == correlation
                and r.status in statuses
            ):
                return r
        time.sleep(1)
    raise AssertionError(f"no {kind} row {statuses} for {correlation} within {timeout}s")


def test_a_shift_in_served_data_is_detected_alerted_and_retrained_once(
    env: dict[str, Any],  # noqa: F811
) -> None:
    upload_id = put(env, "datasets/customers/drift.csv", customers_csv(uuid.uuid4().hex[:6]))
    approved = wait_event(env["tap"], upload_id, ModelApproved, timeout=180)
    wait_event(env["tap"], upload_id, DeploymentCompleted, timeout=90)
    assert isinstance(approved, ModelApproved)

    predict("customers.csv")
    captured_at_least(env, 400)
    quiet = dhow("drift", "run", "customers", "--json")
    assert quiet.returncode == 0, quiet.stdout + quiet.stderr
    checked = json.loads(quiet.stdout)
    assert checked["verdict"] == "no_drift"
    assert checked["model_version"] == approved.model_version
    assert checked["current_rows"] >= 400

    predict("customers-shifted.csv")
    captured_at_least(env, 800)
    loud = dhow("drift", "run", "customers", "--json")
    assert loud.returncode == 1, loud.stdout + loud.stderr  # exit 1: drift
    drifted = json.loads(loud.stdout)
    assert drifted["verdict"] == "drift"
    assert {"age", "monthly_spend_aed", "emirate"} <= set(drifted["drifted_columns"])
    # The champion learnt from the newest upload: a retrain would learn the same rows.
    assert drifted["action"] == "alert"
    assert drifted["note"].startswith("no_new_data")
    correlation = f"drift-customers-{drifted['check_id']}"
    detected = wait_event(env["tap"], correlation, DriftDetected, timeout=30)
    assert isinstance(detected, DriftDetected)
    assert detected.report is not None
    # The report and summary are in the reports bucket.
    s3 = env["s3"]
    page = s3.get_object(Bucket=detected.report.container, Key=detected.report.key)
    assert b"Drift check of customers: drift" in page["Body"].read()

    # The alert reached the topic's subscriber, naming the columns and the report.
    alerts = dhow("local", "alerts", "--wait", "15", "--json")
    assert alerts.returncode == 0, alerts.stderr
    [alert] = [
        a for a in json.loads(alerts.stdout)["alerts"] if drifted["check_id"] in a["message"]
    ]
    assert "emirate" in alert["subject"]
    assert detected.report.uri in alert["message"]

    # ...and says the retrain was skipped, and why; the check's row records it, and no
    # training job was launched for it (lineage, as the events queue holds other tests').
    assert "Policy: retrain; skipped: no_new_data" in alert["message"]
    row = wait_row(env, correlation, "drift", {"drift"}, timeout=10)
    assert row.attributes["skipped"] == {"action": "retrain", "reason": "no_new_data"}
    assert not [
        r
        for r in env["ports"].lineage.list("customers")
        if r.kind == "train" and r.attributes.get("correlation_id") == correlation
    ]

    # Still drifting, still nothing new: skipped again, and no cooldown was spent on it.
    again = dhow("drift", "run", "customers", "--json")
    assert again.returncode == 1
    second = json.loads(again.stdout)
    assert second["action"] == "alert"
    assert second["cooldown_until"] is None


def test_the_schedule_runs_the_drift_check_function(env: dict[str, Any]) -> None:  # noqa: F811
    settings = env["settings"]
    scheduler = aws_client("scheduler", settings)
    name = env["topo"].schedule("drift_check").name_for("customers")
    current = scheduler.get_schedule(Name=name)
    assert current["ScheduleExpression"] == "rate(1 hour)"  # the spec's
    assert json.loads(current["Target"]["Input"]) == {"dataset": "customers"}
    params = {
        k: current[k]  # type: ignore[literal-required]
        for k in ("Name", "ScheduleExpression", "FlexibleTimeWindow", "Target", "State")
    }
    before = {r.record_id for r in env["ports"].lineage.list("customers") if r.kind == "drift"}
    # A minute lasts 5 s on the local platform: the check is due 5 s after the change.
    scheduler.update_schedule(**{**params, "ScheduleExpression": "rate(1 minute)"})
    try:
        deadline = time.monotonic() + 60
        found: list[LineageRecord] = []
        while time.monotonic() < deadline and not found:
            found = [
                r
                for r in env["ports"].lineage.list("customers")
                if r.kind == "drift" and r.record_id not in before
            ]
            time.sleep(1)
        assert found, "the schedule did not run a drift check within 60 s"
        assert found[0].attributes["requested_by"] == "schedule"
    finally:
        scheduler.update_schedule(**params)  # type: ignore[arg-type]
