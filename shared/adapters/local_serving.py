"""``Deployer`` for the local platform: the local router plays the Lambda alias and
CodeDeploy.

The deployer writes the rollout into one lineage row per dataset
(``serving:router``): which version is stable, which is the candidate, and the
schedule of the candidate's share (minutes from the start, as CodeDeploy's
configs are written). The router (``dhow_local.router``) reads that row, splits
requests by it, steps the share on time, watches the same alarms the stack sets
in the cloud (error rate and p99 latency over at least ``min_requests``), and
finishes or rolls back by itself. It then publishes CodeDeploy's own
"Deployment State-change Notification" to the default bus, so the deploy
function sees locally exactly the event it sees in the cloud.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel

from shared.errors import WorkInProgress
from shared.ports import Deployer, DeploymentPlan, LineageRecord, LineageStore, StartedDeployment

ROUTER_RECORD = "serving:router"


class RouterState(BaseModel):
    """What the local router serves for one dataset, and the rollout in progress."""

    stable: int | None = None
    candidate: int | None = None
    weight: float = 0.0  # the candidate's share now
    schedule: list[tuple[float, float]] = []  # (minutes after start, candidate share)
    deployment_id: str | None = None
    started_at: datetime | None = None
    status: Literal["Idle", "InProgress", "Succeeded", "RolledBack", "Manual"] = "Idle"
    error_rate_threshold: float = 0.05
    p99_latency_ms: int = 2000
    min_requests: int = 20
    reason: str | None = None
    # "router": the router steps and judges (it plays CodeDeploy, on AWS); "deployer":
    # the deploy function does (Azure), and the router only splits and counts.
    stepped_by: Literal["router", "deployer"] = "router"

    def traffic(self) -> dict[str, float]:
        shares: dict[str, float] = {}
        if self.stable is not None:
            shares[str(self.stable)] = round(1.0 - self.weight, 6)
        if self.candidate is not None and self.weight > 0:
            shares[str(self.candidate)] = round(self.weight, 6)
        return {k: v for k, v in shares.items() if v > 0}


def rollout_schedule(strategy: str, percent: int, minutes: int) -> list[tuple[float, float]]:
    """The candidate's share over time, as CodeDeploy's canary and linear configs step it."""
    share = percent / 100
    if strategy == "canary":
        return [(0.0, share), (float(minutes), 1.0)]
    if strategy == "linear":
        steps, out = int(1 / share + 0.999), []
        for i in range(steps):
            out.append((float(i * minutes), min(1.0, round(share * (i + 1), 6))))
        return out
    return [(0.0, 1.0)]


def load_router_state(lineage: LineageStore, dataset: str) -> tuple[RouterState, LineageRecord]:
    row = lineage.get(dataset, ROUTER_RECORD)
    if row is None:
        row = LineageRecord(
            dataset=dataset, record_id=ROUTER_RECORD, kind="serving", status="Idle", attributes={}
        )
        if not lineage.put_if_absent(row):
            row = lineage.get(dataset, ROUTER_RECORD) or row
    return RouterState.model_validate(row.attributes), row


def save_router_state(lineage: LineageStore, row: LineageRecord, state: RouterState) -> bool:
    """Conditional on the row's revision; False if the router or a deployer wrote first."""
    updated = row.model_copy(
        update={
            "status": state.status,
            "attributes": state.model_dump(mode="json"),
            "updated_at": datetime.now(UTC),
        }
    )
    return lineage.replace(updated, row.revision)


class LocalRouterDeployer(Deployer):
    def __init__(self, lineage: LineageStore) -> None:
        self._lineage = lineage

    def start(self, plan: DeploymentPlan) -> StartedDeployment:
        deployment_id = f"local-{plan.dataset}-v{plan.model_version}-{uuid.uuid4().hex[:6]}"
        for _ in range(5):
            state, row = load_router_state(self._lineage, plan.dataset)
            if state.status == "InProgress":
                # CodeDeploy refuses a second deployment on a group the same way.
                raise WorkInProgress(
                    f"{plan.dataset} has deployment {state.deployment_id} in progress",
                    hint="this one is retried when the queue delivers it again",
                )
            stable = state.stable if state.stable is not None else plan.previous_version
            schedule = (
                rollout_schedule(plan.strategy, plan.step_percent, plan.interval_minutes)
                if stable is not None
                else [(0.0, 1.0)]
            )
            new = RouterState(
                stable=stable if stable is not None else plan.model_version,
                candidate=plan.model_version,
                weight=schedule[0][1] if stable is not None else 0.0,
                schedule=schedule,
                deployment_id=deployment_id,
                started_at=datetime.now(UTC),
                status="InProgress",
                error_rate_threshold=plan.error_rate_threshold,
                p99_latency_ms=plan.p99_latency_ms,
                min_requests=plan.min_requests,
            )
            if save_router_state(self._lineage, row, new):
                return StartedDeployment(
                    deployment_id=deployment_id, target=f"local-router/{plan.dataset}"
                )
        raise WorkInProgress(f"the local router's state for {plan.dataset} kept changing")

    def traffic(self, dataset: str) -> dict[str, float]:
        row = self._lineage.get(dataset, ROUTER_RECORD)
        return RouterState.model_validate(row.attributes).traffic() if row else {}

    def failure_reason(self, dataset: str, deployment_id: str) -> str | None:
        row = self._lineage.get(dataset, ROUTER_RECORD)
        if row is None:
            return None
        state = RouterState.model_validate(row.attributes)
        return state.reason if state.deployment_id == deployment_id else None

    def rollback(self, dataset: str, to_version: int, reason: str) -> str:
        ref = f"local-rollback-{dataset}-v{to_version}-{uuid.uuid4().hex[:6]}"
        for _ in range(5):
            _state, row = load_router_state(self._lineage, dataset)
            new = RouterState(
                stable=to_version,
                deployment_id=ref,
                started_at=datetime.now(UTC),
                status="Manual",
                reason=reason,
            )
            if save_router_state(self._lineage, row, new):
                return ref
        raise WorkInProgress(f"the local router's state for {dataset} kept changing")
