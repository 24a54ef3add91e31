"""One rollout row (shared.rollout_row) for the Azure deployer and the local router: both
rows read back and are written with the keys, names and order they had before."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from dhow_local.serving import ROUTER_RECORD, RouterState, load_router_state, save_router_state

from shared.adapters.azure_serving import ROLLOUT_RECORD, RolloutState
from shared.lineage import ServingRecord
from shared.rollout_row import RolloutRow, first_schedule, load_row, save_row
from tests.helpers import MemoryLineage, deployment_plan

# The rows as the router and the deployer wrote them before the row was shared.
ROUTER_ROW = (
    '{"stable": 1, "candidate": 2, "weight": 0.1, "schedule": [[0.0, 0.1], [5.0, 1.0]], '
    '"deployment_id": "local-customers-v2-abc123", "started_at": "2026-01-01T00:00:00Z", '
    '"status": "InProgress", "error_rate_threshold": 0.05, "p99_latency_ms": 2000, '
    '"min_requests": 20, "reason": null, "stepped_by": "router"}'
)
ROLLOUT_ROW = (
    '{"deployment_id": "rollout-customers-v2-abc123", "stable": 1, "candidate": 2, '
    '"share": 0.1, "schedule": [[0.0, 0.1], [5.0, 1.0]], '
    '"started_at": "2026-01-01T00:00:00Z", "status": "InProgress", '
    '"error_rate_threshold": 0.05, "p99_latency_ms": 2000, "min_requests": 20, '
    '"reason": null, "provisioned": true}'
)


def _stored(lineage: MemoryLineage, record_id: str, attributes: str) -> None:
    lineage.put_if_absent(
        ServingRecord(
            dataset="customers",
            record_id=record_id,
            status="InProgress",
            attributes=json.loads(attributes),
        )
    )


def test_both_rows_are_the_one_model() -> None:
    assert issubclass(RouterState, RolloutRow)
    assert issubclass(RolloutState, RolloutRow)


def test_todays_router_row_reads_back_and_is_written_the_same() -> None:
    lineage = MemoryLineage()
    _stored(lineage, ROUTER_RECORD, ROUTER_ROW)
    state, row = load_router_state(lineage, "customers")
    assert (state.stable, state.candidate, state.share) == (1, 2, 0.1)
    assert state.started_at == datetime(2026, 1, 1, tzinfo=UTC)
    assert json.dumps(state.stored()) == ROUTER_ROW
    assert save_router_state(lineage, row, state)
    again = lineage.get("customers", ROUTER_RECORD)
    assert again is not None
    assert json.dumps(again.attributes) == ROUTER_ROW


def test_todays_rollout_row_reads_back_and_is_written_the_same() -> None:
    lineage = MemoryLineage()
    _stored(lineage, ROLLOUT_RECORD, ROLLOUT_ROW)
    state, row = load_row(lineage, "customers", ROLLOUT_RECORD, RolloutState)
    assert (state.stable, state.candidate, state.share, state.provisioned) == (1, 2, 0.1, True)
    assert json.dumps(state.stored()) == ROLLOUT_ROW
    assert save_row(lineage, row, state, lambda: datetime.now(UTC))
    again = lineage.get("customers", ROLLOUT_RECORD)
    assert again is not None
    assert json.dumps(again.attributes) == ROLLOUT_ROW


def test_stepping_finishing_and_rolling_back_are_one_rule() -> None:
    state = RouterState.model_validate_json(ROUTER_ROW)
    assert state.share_due(0.0) == 0.1
    assert state.share_due(4.9) == 0.1
    assert state.share_due(5.0) == 1.0
    done = state.succeeded()
    assert (done.stable, done.candidate, done.share, done.status) == (2, None, 0.0, "Succeeded")
    back = state.rolled_back("alarm x")
    assert (back.stable, back.candidate, back.share, back.status) == (1, None, 0.0, "RolledBack")
    assert back.reason == "alarm x"


def test_a_first_rollout_goes_at_once_and_a_redeploy_as_each_side_did() -> None:
    plan = deployment_plan(previous=None, strategy="linear", interval_minutes=1)
    assert first_schedule(plan, None, redeploy_at_once=False) == [(0.0, 1.0)]
    assert first_schedule(plan, 2, redeploy_at_once=True) == [(0.0, 1.0)]
    assert first_schedule(plan, 2, redeploy_at_once=False)[0] == (0.0, 0.1)
    assert first_schedule(plan, 1, redeploy_at_once=True)[0] == (0.0, 0.1)
