"""Deploy: an approved model reaches traffic step by step, and leaves it by itself if it
misbehaves.

- On ``ModelApproved`` it plans the rollout from the spec's ``serving`` section
  (canary, linear or all at once; the first deployment of a dataset is always
  all at once, there being nothing to compare against) and hands it to the
  deployer: CodeDeploy shifting a Lambda alias, a SageMaker endpoint's
  blue/green update, or the local router. Each watches its alarms and rolls back
  on its own. ``DeploymentStarted`` says what started.
- On the platform's own end-of-deployment event (a ``DeploymentStateChange``) it
  emits ``DeploymentCompleted`` or ``DeploymentRolledBack``. A rolled-back version
  is marked Rejected in the registry, so the champion is again the one serving.
- ``rollback`` is the manual path (`dhow deploy rollback`), recorded with who
  asked and why; ``on_drift`` is a drift policy's rollback (once per check).

Every step is a lineage row, so `dhow deploy status` and an auditor read the same
history.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from shared.artifacts import ARTIFACT_SHA256
from shared.errors import DhowError, WorkInProgress
from shared.events import (
    DeploymentCompleted,
    DeploymentRolledBack,
    DeploymentStarted,
    DriftDetected,
    ModelApproved,
)
from shared.ports import (
    Deployer,
    DeploymentPlan,
    DeploymentStateChange,
    EventBus,
    LineageRecord,
    LineageStore,
    ModelRegistry,
)
from shared.services.claims import claim, complete
from shared.specs import load_spec

log = logging.getLogger(__name__)

DEPLOY_KIND = "deploy"
DONE = {"completed", "rolled_back", "failed"}


class NothingToRollBackTo(DhowError):
    """A rollback was asked for with no other approved version to go to."""

    reason = "nothing_to_roll_back_to"


def deploy_record_id(version: int) -> str:
    return f"deploy:v{version}"


@dataclass(frozen=True)
class DeployOutcome:
    status: Literal["started", "duplicate", "completed", "rolled_back", "ignored"]
    deployment_id: str | None = None
    model_version: int | None = None


class DeployService:
    """Starts, finishes and rolls back deployments. See the module docstring."""

    def __init__(
        self,
        deployer: Deployer,
        registry: ModelRegistry,
        bus: EventBus,
        lineage: LineageStore,
        *,
        specs_dir: str | Path | None = None,
        claim_seconds: int = 900,
    ) -> None:
        self._deployer = deployer
        self._registry = registry
        self._bus = bus
        self._lineage = lineage
        self._specs = specs_dir
        self._claim = timedelta(seconds=claim_seconds)

    def serving_version(self, dataset: str) -> int | None:
        """The version with the largest share of traffic now."""
        traffic = self._deployer.traffic(dataset)
        if not traffic:
            return None
        return int(max(traffic.items(), key=lambda kv: kv[1])[0])

    def on_model_approved(self, event: ModelApproved) -> DeployOutcome:
        version = int(event.model_version)
        row = LineageRecord(
            dataset=event.dataset,
            record_id=deploy_record_id(version),
            kind=DEPLOY_KIND,
            status="claimed",
            attributes={"model_version": version, "correlation_id": event.correlation_id},
        )
        # "waiting": an earlier delivery found a rollout in progress and let go at once.
        claimed = claim(
            self._lineage,
            row,
            self._claim,
            done_statuses=DONE | {"started"},
            handover_statuses=frozenset({"waiting"}),
        )
        if claimed.done:
            return DeployOutcome(status="duplicate", model_version=version)
        spec = load_spec(event.dataset, self._specs)
        s = spec.serving
        mv = self._registry.version(event.dataset, version)
        if mv is None:
            raise DhowError(
                f"{event.dataset} v{version} is not in the model registry",
                hint="the registry and the event disagree; check register's log",
                reason="unknown_model_version",
            )
        previous = self.serving_version(event.dataset)
        if previous == version:
            previous = None
        strategy = s.strategy if previous is not None else "all_at_once"
        plan = DeploymentPlan(
            dataset=event.dataset,
            model_version=version,
            previous_version=previous,
            artifact=mv.artifact,
            artifact_sha256=mv.lineage.get(ARTIFACT_SHA256, ""),
            image=mv.image,
            strategy=strategy,
            step_percent=s.step_percent,
            interval_minutes=s.interval_minutes,
            error_rate_threshold=s.error_rate_threshold,
            p99_latency_ms=s.p99_latency_ms,
            min_requests=s.min_requests,
            capture_sampling=s.capture_sampling,
            instance_type=s.instance_type,
            instance_count=s.instance_count,
        )
        try:
            started = self._deployer.start(plan)
        except WorkInProgress:
            # Another rollout is under way: let go of the claim so the redelivery, not a
            # stale-claim timeout, decides when this one starts.
            complete(self._lineage, claimed, "waiting")
            raise
        self._bus.publish(
            DeploymentStarted(
                event_id=f"deploy-started-{event.dataset}-{version}",
                dataset=event.dataset,
                correlation_id=event.correlation_id,
                model_version=str(version),
                strategy=strategy,
                previous_version=str(previous) if previous is not None else None,
                deployment_id=started.deployment_id,
                target=started.target,
            )
        )
        complete(
            self._lineage,
            claimed,
            "started",
            deployment_id=started.deployment_id,
            target=started.target,
            previous_version=previous,
            strategy=strategy,
            plan=plan.model_dump(mode="json"),
        )
        return DeployOutcome("started", started.deployment_id, version)

    def _deploy_rows(self, dataset: str, status: str | None = None) -> list[LineageRecord]:
        """The dataset's deployments, newest first (only those in ``status`` if given)."""
        return [
            r
            for r in reversed(self._lineage.list(dataset))
            if r.kind == DEPLOY_KIND and (status is None or r.status == status)
        ]

    def _find(self, dataset: str, deployment_id: str) -> LineageRecord | None:
        return next(
            (
                r
                for r in self._deploy_rows(dataset)
                if r.attributes.get("deployment_id") == deployment_id
            ),
            None,
        )

    def on_rollout_check(self, dataset: str, deployment_id: str) -> DeployOutcome:
        """A rollout check the deployer sent itself: its end is handled as a platform's."""
        change = self._deployer.advance(dataset, deployment_id)
        if change is None:
            return DeployOutcome("ignored", deployment_id)
        return self.on_state_change(change)

    def on_state_change(self, change: DeploymentStateChange) -> DeployOutcome:
        if change.supersedes_open:
            for other in self._deploy_rows(change.dataset, "started"):
                if other.attributes.get("deployment_id") != change.deployment_id:
                    self._finish(
                        other,
                        "RolledBack",
                        f"the endpoint is back in service on {change.deployment_id}",
                    )
        row = self._find(change.dataset, change.deployment_id)
        if row is None:
            # Someone deployed by hand (the console, the CLI of the platform): not ours.
            log.info("deployment %s of %s is not Dhow's", change.deployment_id, change.dataset)
            return DeployOutcome("ignored", change.deployment_id)
        if row.status in DONE:
            return DeployOutcome("duplicate", change.deployment_id)
        return self._finish(row, change.status, change.reason)

    def _finish(self, row: LineageRecord, status_in: str, reason_in: str | None) -> DeployOutcome:
        deployment_id = str(row.attributes["deployment_id"])
        dataset = row.dataset
        version = int(row.attributes["model_version"])
        previous = row.attributes.get("previous_version")
        correlation = str(row.attributes.get("correlation_id") or deployment_id)
        now = datetime.now(UTC)
        status: Literal["completed", "rolled_back"]
        reason: str | None = None
        if status_in == "Succeeded":
            traffic = {str(version): 1.0}
            self._bus.publish(
                DeploymentCompleted(
                    event_id=f"deploy-completed-{deployment_id}",
                    dataset=dataset,
                    correlation_id=correlation,
                    model_version=str(version),
                    traffic=traffic,
                    deployment_id=deployment_id,
                )
            )
            status = "completed"
        else:
            reason = (
                self._deployer.failure_reason(dataset, deployment_id)
                or reason_in
                or "the deployment's alarms fired"
            )
            # The champion is whatever serves: a version that was rolled back is not it.
            self._registry.set_status(
                dataset, version, "Rejected", f"rolled back automatically: {reason}"
            )
            traffic = {str(previous): 1.0} if previous is not None else {}
            self._bus.publish(
                DeploymentRolledBack(
                    event_id=f"deploy-rolled-back-{deployment_id}",
                    dataset=dataset,
                    correlation_id=correlation,
                    model_version=str(version),
                    restored_version=str(previous) if previous is not None else None,
                    reason=reason,
                    deployment_id=deployment_id,
                )
            )
            status = "rolled_back"
        done = row.model_copy(
            update={
                "status": status,
                "attributes": {
                    **row.attributes,
                    "traffic": traffic,
                    "ended_at": now.isoformat(),
                    # What the event says, so `dhow deploy status` and the event agree.
                    **({"reason": reason} if reason else {}),
                },
                "updated_at": now,
            }
        )
        self._lineage.replace(done, row.revision)
        return DeployOutcome(status, deployment_id, version)

    def on_drift(self, event: DriftDetected) -> DeployOutcome:
        """A drift policy's rollback to the previous approved version, once per check
        (a redelivered event must not roll back one version further)."""
        check = event.check_id or event.event_id
        first = self._lineage.put_if_absent(
            LineageRecord(
                dataset=event.dataset,
                record_id=f"drift-rollback:{check}",
                kind="drift_action",
                status="requested",
                attributes={"check_id": check, "drifted_columns": event.drifted_columns},
            )
        )
        if not first:
            return DeployOutcome("duplicate")
        report = event.report.uri if event.report else "no report"
        why = f"drift in {', '.join(event.drifted_columns)} (check {check}; {report})"
        try:
            return self.rollback(event.dataset, None, "drift", why)
        except NothingToRollBackTo as exc:
            # Retrying cannot make an older version appear: record it and stop.
            row = self._lineage.get(event.dataset, f"drift-rollback:{check}")
            if row is not None:
                failed = row.model_copy(
                    update={
                        "status": "failed",
                        "attributes": {**row.attributes, "reason": exc.message},
                    }
                )
                self._lineage.replace(failed, row.revision)
            log.warning("drift rollback of %s not possible: %s", event.dataset, exc.message)
            return DeployOutcome("ignored")

    def rollback(
        self, dataset: str, to_version: int | None, requested_by: str, why: str
    ) -> DeployOutcome:
        """Send all traffic to ``to_version`` now. By default: during a rollout, the version
        it started from; otherwise the newest approved version other than the serving one."""
        serving = self.serving_version(dataset)
        open_rollout = next(iter(self._deploy_rows(dataset, "started")), None)
        if open_rollout is not None:
            # What is being rolled out is what is rolled back, whatever its share now.
            serving = int(open_rollout.attributes["model_version"])
            if to_version is None and open_rollout.attributes.get("previous_version"):
                to_version = int(open_rollout.attributes["previous_version"])
        if to_version is None:
            target = next(
                (
                    v
                    for v in self._registry.versions(dataset)
                    if v.status == "Approved" and v.version != serving
                ),
                None,
            )
        else:
            target = self._registry.version(dataset, to_version)
        if target is None:
            raise NothingToRollBackTo(
                f"{dataset} has no "
                + (f"version {to_version}" if to_version else "other approved version")
                + " to roll back to",
                hint=f"`dhow models {dataset}` lists the versions; pass --to VERSION",
            )
        if not target.lineage.get(ARTIFACT_SHA256):
            raise NothingToRollBackTo(
                f"{dataset} v{target.version} has no recorded artifact hash; it cannot be served",
                hint="choose another version with --to",
            )
        ref = self._deployer.rollback(dataset, target.version, why)
        now = datetime.now(UTC)
        reason = f"manual rollback by {requested_by}: {why}"
        if open_rollout is not None:  # its platform's own end event is then a duplicate
            self._lineage.replace(
                open_rollout.model_copy(
                    update={
                        "status": "rolled_back",
                        "attributes": {**open_rollout.attributes, "reason": reason},
                        "updated_at": now,
                    }
                ),
                open_rollout.revision,
            )
        if serving is not None and serving != target.version:
            self._registry.set_status(dataset, serving, "Rejected", reason)
        if target.status != "Approved":
            self._registry.set_status(dataset, target.version, "Approved", reason)
        self._lineage.put_if_absent(
            LineageRecord(
                dataset=dataset,
                record_id=f"rollback:{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}",
                kind="rollback",
                status="done",
                attributes={
                    "from_version": serving,
                    "to_version": target.version,
                    "requested_by": requested_by,
                    "why": why,
                    "deployment_id": ref,
                },
            )
        )
        self._bus.publish(
            DeploymentRolledBack(
                dataset=dataset,
                correlation_id=f"rollback-{ref}",
                model_version=str(serving) if serving is not None else "",
                restored_version=str(target.version),
                reason=reason,
                deployment_id=ref,
                requested_by=requested_by,
            )
        )
        return DeployOutcome("rolled_back", ref, target.version)

    def status(self, dataset: str) -> dict[str, Any]:
        """What serves now, and the history of deployments and rollbacks, newest first."""
        rows = [r for r in self._lineage.list(dataset) if r.kind in (DEPLOY_KIND, "rollback")]
        history = [
            {
                "kind": r.kind,
                "status": r.status,
                "at": r.created_at.isoformat(),
                **{
                    k: r.attributes.get(k)
                    for k in (
                        "model_version",
                        "previous_version",
                        "strategy",
                        "deployment_id",
                        "target",
                        "reason",
                        "from_version",
                        "to_version",
                        "requested_by",
                        "why",
                    )
                    if r.attributes.get(k) is not None
                },
            }
            for r in reversed(rows)
        ]
        return {"dataset": dataset, "traffic": self._deployer.traffic(dataset), "history": history}
