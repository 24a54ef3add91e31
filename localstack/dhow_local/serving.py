"""Serving on the local platform: the local router plays the Lambda alias and CodeDeploy
(AWS), or the online endpoint's traffic split and Azure Monitor (Azure).

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

import json
import os
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, Literal

from pydantic import AliasChoices, Field

from shared.adapters.azure_serving import CandidateMetrics, RolloutState, TrafficSplit
from shared.canary import PERIOD_S, PeriodCounts, ReportedPeriod
from shared.constants import ROUTER_PORT
from shared.errors import WorkInProgress
from shared.ports import (
    Deployer,
    DeploymentPlan,
    LineageRecord,
    LineageStore,
    StartedDeployment,
)
from shared.rollout_row import RolloutRow, first_schedule, load_row, save_row

ROUTER_RECORD = "serving:router"


class RouterState(RolloutRow):
    """What the local router serves for one dataset, and the rollout in progress. Its
    rows call the candidate's share ``weight`` and keep their first key order."""

    share: float = Field(
        default=0.0, validation_alias=AliasChoices("share", "weight"), serialization_alias="weight"
    )
    # "router": the router steps and judges (it plays CodeDeploy, on AWS); "deployer":
    # the deploy function does (Azure), and the router only splits and counts.
    stepped_by: Literal["router", "deployer"] = "router"

    STORED_KEYS: ClassVar[tuple[str, ...]] = (
        "stable",
        "candidate",
        "weight",
        "schedule",
        "deployment_id",
        "started_at",
        "status",
        "error_rate_threshold",
        "p99_latency_ms",
        "min_requests",
        "reason",
        "stepped_by",
    )

    def traffic(self) -> dict[str, float]:
        shares: dict[str, float] = {}
        if self.stable is not None:
            shares[str(self.stable)] = round(1.0 - self.share, 6)
        if self.candidate is not None and self.share > 0:
            shares[str(self.candidate)] = round(self.share, 6)
        return {k: v for k, v in shares.items() if v > 0}


def load_router_state(lineage: LineageStore, dataset: str) -> tuple[RouterState, LineageRecord]:
    """The dataset's router row (created Idle when there is none yet) and its record."""
    return load_row(lineage, dataset, ROUTER_RECORD, RouterState)


def save_router_state(lineage: LineageStore, row: LineageRecord, state: RouterState) -> bool:
    """Conditional on the row's revision; False if the router or a deployer wrote first."""
    return save_row(lineage, row, state, lambda: datetime.now(UTC))


class LocalRouterDeployer(Deployer):
    """The AWS local kit's deployer: the rollout goes into the router's row, and the
    router steps and judges it (``stepped_by="router"``)."""

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
            schedule = first_schedule(plan, stable, redeploy_at_once=False)
            new = RouterState.begun(
                plan,
                deployment_id=deployment_id,
                stable=stable if stable is not None else plan.model_version,
                schedule=schedule,
                share=schedule[0][1] if stable is not None else 0.0,
                started_at=datetime.now(UTC),
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
            new = RouterState.manual(ref, to_version, reason, datetime.now(UTC))
            if save_router_state(self._lineage, row, new):
                return ref
        raise WorkInProgress(f"the local router's state for {dataset} kept changing")


# -- Azure: the stepped rollout (shared.adapters.azure_serving) on the router's row -------


class RouterTraffic(TrafficSplit):
    """The local router's row: it splits requests by it and counts each version's
    answers, but steps and judges nothing (``stepped_by="deployer"``)."""

    def __init__(self, lineage: LineageStore) -> None:
        self._lineage = lineage

    def set(self, dataset: str, weights: Mapping[int, int], state: RolloutState) -> None:
        for _ in range(5):
            _old, row = load_router_state(self._lineage, dataset)
            candidate = state.candidate if state.status == "InProgress" else None
            stable = state.stable if state.stable is not None else state.candidate
            new = RouterState(
                stable=stable,
                candidate=candidate if candidate != stable else None,
                share=weights.get(candidate, 0) / 100 if candidate is not None else 0.0,
                schedule=state.schedule,
                deployment_id=state.deployment_id,
                started_at=state.started_at,
                status="InProgress"
                if candidate is not None and candidate != stable
                else ("Succeeded" if state.status in ("Succeeded", "InProgress") else state.status),
                error_rate_threshold=state.error_rate_threshold,
                p99_latency_ms=state.p99_latency_ms,
                min_requests=state.min_requests,
                reason=state.reason,
                stepped_by="deployer",
            )
            if save_router_state(self._lineage, row, new):
                return
        raise WorkInProgress(f"the local router's state for {dataset} kept changing")


class RouterMetrics(CandidateMetrics):
    """The local router's per-period counts of the candidate (``/_router/periods``),
    where Azure Monitor's would be. ``get`` fetches a path of the router as JSON."""

    def __init__(self, get: Callable[[str], Mapping[str, Any]]) -> None:
        self._get = get

    def periods(
        self, dataset: str, state: RolloutState, until: datetime
    ) -> dict[datetime, PeriodCounts]:
        data = self._get(f"/_router/periods/{dataset}")
        if data.get("deployment_id") != state.deployment_id or state.started_at is None:
            return {}  # the router has not seen this rollout's row yet: no evidence
        # The router counts live (latency 0): its periods are the alarms' (60 s each,
        # from the rollout's start), indexed as it reports them.
        period = timedelta(seconds=PERIOD_S)
        return {
            state.started_at + int(p["index"]) * period: ReportedPeriod(
                requests=int(p["requests"]),
                errors=int(p["errors"]),
                reported_p99_ms=float(p["p99_ms"]),
            )
            for p in data.get("periods", [])
        }


def router_get(path: str) -> dict[str, object]:
    """A JSON GET to the local router (``DHOW_ROUTER_PORT``, 4570 by default)."""
    port = os.environ.get(ROUTER_PORT, "4570")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
        data: dict[str, object] = json.loads(r.read())
    return data
