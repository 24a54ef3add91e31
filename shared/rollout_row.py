"""A progressive rollout's row: one lineage row per dataset that says which version is
stable, which is the candidate, its share now and the schedule of its share.

Two places keep such a row and drive it the same way: the Azure deployer
(``shared.adapters.azure_serving``, row ``serving:rollout``) and the local router, which
plays CodeDeploy and the endpoint's split (``dhow_local.serving``, row
``serving:router``). Each subclasses ``RolloutRow`` with only what is its own, and both
load, start, step, finish, roll back and save through here, so a rule about a rollout
(where a step lands, what a manual rollback leaves) is written once.

A subclass keeps the keys its rows were first written with (``STORED_KEYS``: their
order; a field's serialization alias: its name), so rows written before read back and
rows written now are the same bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, ClassVar, Literal, Self

from pydantic import BaseModel

from shared.canary import CanaryRule, rollout_schedule
from shared.lineage import ServingRecord
from shared.ports import DeploymentPlan, LineageRecord, LineageStore

RolloutStatus = Literal["Idle", "InProgress", "Succeeded", "RolledBack", "Manual"]


class RolloutRow(BaseModel):
    """The rollout of one dataset, as stored in its row (see the module docstring)."""

    deployment_id: str | None = None
    stable: int | None = None
    candidate: int | None = None
    share: float = 0.0  # the candidate's share now
    schedule: list[tuple[float, float]] = []  # (minutes after start, candidate share)
    started_at: datetime | None = None
    status: RolloutStatus = "Idle"
    error_rate_threshold: float = 0.05
    p99_latency_ms: int = 2000
    min_requests: int = 20
    reason: str | None = None

    # The stored keys in the order the subclass's rows have them; empty: field order.
    STORED_KEYS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def begun(
        cls,
        plan: DeploymentPlan,
        *,
        deployment_id: str,
        stable: int | None,
        schedule: list[tuple[float, float]],
        share: float,
        started_at: datetime,
        **own: Any,
    ) -> Self:
        """A rollout of ``plan.model_version`` just started, judged by the plan's rule;
        ``own``: the subclass's own fields."""
        return cls(
            deployment_id=deployment_id,
            stable=stable,
            candidate=plan.model_version,
            share=share,
            schedule=schedule,
            started_at=started_at,
            status="InProgress",
            error_rate_threshold=plan.error_rate_threshold,
            p99_latency_ms=plan.p99_latency_ms,
            min_requests=plan.min_requests,
            **own,
        )

    @classmethod
    def manual(cls, ref: str, to_version: int, reason: str, at: datetime) -> Self:
        """A manual rollback: ``to_version`` serves everything, nothing is in progress."""
        return cls(
            deployment_id=ref, stable=to_version, started_at=at, status="Manual", reason=reason
        )

    def rule(self) -> CanaryRule:
        """The rule the candidate's periods are judged by (the plan's thresholds)."""
        return CanaryRule(
            min_requests=self.min_requests,
            max_error_rate=self.error_rate_threshold,
            max_p99_ms=self.p99_latency_ms,
        )

    def share_due(self, elapsed_min: float) -> float:
        """The candidate's share the schedule gives ``elapsed_min`` minutes after start:
        the last step reached, or the share now before the first."""
        return max((w for at, w in self.schedule if at <= elapsed_min), default=self.share)

    def succeeded(self) -> Self:
        """The candidate is the stable version; the rollout is over."""
        return self.model_copy(
            update={
                "stable": self.candidate,
                "candidate": None,
                "share": 0.0,
                "status": "Succeeded",
            }
        )

    def rolled_back(self, reason: str) -> Self:
        """The candidate loses all its traffic; the stable version keeps serving."""
        return self.model_copy(
            update={"candidate": None, "share": 0.0, "status": "RolledBack", "reason": reason}
        )

    def stored(self) -> dict[str, Any]:
        """The row's attributes, with the keys (names and order) its rows have."""
        dumped = self.model_dump(mode="json", by_alias=True)
        if not self.STORED_KEYS:
            return dumped
        return {k: dumped[k] for k in self.STORED_KEYS}


def first_schedule(
    plan: DeploymentPlan, stable: int | None, *, redeploy_at_once: bool
) -> list[tuple[float, float]]:
    """The plan's steps when there is a stable version to step from, else all at once.
    ``redeploy_at_once``: a plan of the stable version itself goes all at once too."""
    stepped = stable is not None and not (redeploy_at_once and stable == plan.model_version)
    if stepped:
        return rollout_schedule(plan.strategy, plan.step_percent, plan.interval_minutes)
    return [(0.0, 1.0)]


def load_row[Row: RolloutRow](
    lineage: LineageStore, dataset: str, record_id: str, kind: type[Row]
) -> tuple[Row, LineageRecord]:
    """The dataset's rollout row (created Idle when there is none yet) and its record,
    whose revision the next ``save_row`` is conditional on."""
    row = lineage.get(dataset, record_id)
    if row is None:
        row = ServingRecord(dataset=dataset, record_id=record_id, status="Idle", attributes={})
        if not lineage.put_if_absent(row):
            row = lineage.get(dataset, record_id) or row
    return kind.model_validate(row.attributes), row


def save_row(
    lineage: LineageStore, row: LineageRecord, state: RolloutRow, now: Callable[[], datetime]
) -> bool:
    """Conditional on the row's revision; False if another writer wrote first."""
    updated = row.model_copy(
        update={"status": state.status, "attributes": state.stored(), "updated_at": now()}
    )
    return lineage.replace(updated, row.revision)
