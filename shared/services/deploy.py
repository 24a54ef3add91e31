"""Deploy: an approved model reaches traffic step by step, and leaves it by itself if it
misbehaves.

- On ``ModelApproved`` it plans the rollout from the spec's ``serving`` section
  (canary, linear or all at once; the first deployment of a dataset is always
  all at once, there being nothing to compare against) and hands it to the
  deployer: CodeDeploy shifting a Lambda alias, a SageMaker endpoint's
  blue/green update, or the local router. Each watches its alarms and rolls back
  on its own. ``DeploymentStarted`` says what started. Only the registry's newest
  approved version goes out (a late v2 is ``superseded`` by v3); during another
  rollout the approval is ``waiting``, and that rollout's end starts it.
- On the platform's own end-of-deployment event (a ``DeploymentStateChange``),
  confirmed with the platform (``Deployer.confirm``), it emits
  ``DeploymentCompleted`` or ``DeploymentRolledBack``. A rolled-back version is
  marked Rejected in the registry, so the champion is again the one serving.
- ``rollback`` is the manual path (`dhow deploy rollback`), recorded with who
  asked and why; ``on_drift`` is a drift policy's rollback (once per check, and
  finished by a redelivery if a delivery fails half-way).

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

from pydantic import BaseModel, ConfigDict

from shared.artifacts import ARTIFACT_SHA256
from shared.errors import DeploymentInProgress, DhowError, WorkInProgress
from shared.events import (
    DeploymentCompleted,
    DeploymentRolledBack,
    DeploymentStarted,
    DriftDetected,
    ModelApproved,
)
from shared.lineage import DeployRecord, DriftActionRecord, LineageKind, RollbackRecord
from shared.ports import (
    Deployer,
    DeploymentPlan,
    DeploymentStateChange,
    EventBus,
    LineageRecord,
    LineageStore,
    ModelRegistry,
)
from shared.reasons import Reason
from shared.services.claims import Claim, claim, complete
from shared.specs import load_spec

log = logging.getLogger(__name__)

# "superseded": a newer approved version went (or goes) out instead; nothing to do.
DONE = {"completed", "rolled_back", "failed", "superseded"}


class NothingToRollBackTo(DhowError):
    """A rollback was asked for with no other approved version to go to."""

    reason = Reason.NOTHING_TO_ROLL_BACK_TO


class RollbackChoice(BaseModel):
    """Where a rollback goes, decided once: from the version rolled back (None if nothing
    serves), to the version restored, closing the open rollout's row if there is one."""

    model_config = ConfigDict(frozen=True)

    from_version: int | None
    to_version: int
    open_rollout: str | None = None


def deploy_record_id(version: int) -> str:
    return f"deploy:v{version}"


@dataclass(frozen=True)
class DeployOutcome:
    status: Literal[
        "started", "waiting", "superseded", "duplicate", "completed", "rolled_back", "ignored"
    ]
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
        return self._deploy(event.dataset, int(event.model_version), event.correlation_id)

    def _deploy(self, dataset: str, version: int, correlation_id: str) -> DeployOutcome:
        row = DeployRecord(
            dataset=dataset,
            record_id=deploy_record_id(version),
            status="claimed",
            attributes={"model_version": version, "correlation_id": correlation_id},
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
        spec = load_spec(dataset, self._specs)
        s = spec.serving
        mv = self._registry.version(dataset, version)
        if mv is None:
            raise DhowError(
                f"{dataset} v{version} is not in the model registry",
                hint="the registry and the event disagree; check register's log",
                reason=Reason.UNKNOWN_MODEL_VERSION,
            )
        # Approvals arrive in any order and may be retried for hours: what goes out is
        # the registry's newest approved version, as it stands now, never a late v2 over v3
        # nor a version rejected since its event was sent.
        champion = self._registry.champion(dataset)
        if mv.status != "Approved" or (champion is not None and champion.version > version):
            why = (
                f"v{version} is {mv.status} now"
                if mv.status != "Approved"
                else f"v{champion.version} is a newer approved version"  # type: ignore[union-attr]
            )
            log.info("%s v%s is not deployed: %s", dataset, version, why)
            complete(self._lineage, claimed, "superseded", reason=why)
            return DeployOutcome("superseded", model_version=version)
        previous = self.serving_version(dataset)
        if previous == version:
            previous = None
        strategy = s.strategy if previous is not None else "all_at_once"
        plan = DeploymentPlan(
            dataset=dataset,
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
        # Written before the platform is asked: its end event can come before the id is
        # recorded below (an all-at-once shift ends in seconds), and is then matched to
        # this row by the version the platform says it deployed (see on_state_change).
        claimed = self._note(
            claimed, previous_version=previous, strategy=strategy, plan=plan.model_dump(mode="json")
        )
        try:
            started = self._deployer.start(plan)
        except WorkInProgress as exc:
            # Another rollout is under way: let go of the claim, so that the one that ends
            # it (or a redelivery) starts this one, not a stale-claim timeout.
            complete(self._lineage, claimed, "waiting")
            if isinstance(exc, DeploymentInProgress) and self._open_rollout_is_ours(
                dataset, version
            ):
                # Its end starts the newest waiting approval (``_start_waiting``): the
                # message is done, instead of coming back until it lands in the DLQ.
                log.info("%s v%s waits for the rollout in progress", dataset, version)
                return DeployOutcome("waiting", model_version=version)
            raise
        self._bus.publish(
            DeploymentStarted(
                event_id=f"deploy-started-{dataset}-{version}",
                dataset=dataset,
                correlation_id=correlation_id,
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
        )
        return DeployOutcome("started", started.deployment_id, version)

    def _note(self, claimed: Claim, **attributes: Any) -> Claim:
        """Add facts to a claimed row, keeping the claim (its revision moves on)."""
        record = claimed.record.model_copy(
            update={"attributes": {**claimed.record.attributes, **attributes}}
        )
        if not self._lineage.replace(record, claimed.record.revision):
            raise WorkInProgress(f"{record.record_id} of {record.dataset} was taken over")
        return Claim(record.model_copy(update={"revision": record.revision + 1}), done=False)

    def _open_rollout_is_ours(self, dataset: str, waiting_version: int) -> bool:
        """Whether a rollout Dhow started is still open, read again after the waiting row
        was written. ``_finish`` closes the rollout before it looks for waiting rows, so
        one of the two sees the other: either its end starts the waiting one, or this
        check sees it closed and the message is retried. (The row is read by key, a
        consistent read, not from the listing.)"""
        for row in self._deploy_rows(dataset, "started"):
            if int(row.attributes["model_version"]) == waiting_version:
                continue
            current = self._lineage.get(dataset, row.record_id)
            if current is not None and current.status == "started":
                return True
        return False

    def _start_waiting(self, dataset: str) -> DeployOutcome | None:
        """After a rollout ends: start the newest approved version if its approval is
        waiting, and close the older waiting ones (a late v2 never follows v3)."""
        champion = self._registry.champion(dataset)
        newest = champion.version if champion is not None else None
        for row in self._deploy_rows(dataset, "waiting"):
            version = int(row.attributes["model_version"])
            if version != newest:
                current = self._lineage.get(dataset, row.record_id)
                if current is not None and current.status == "waiting":
                    done = current.model_copy(
                        update={
                            "status": "superseded",
                            "attributes": {
                                **current.attributes,
                                "reason": f"v{newest} is the newest approved version",
                            },
                            "updated_at": datetime.now(UTC),
                        }
                    )
                    self._lineage.replace(done, current.revision)
        if newest is None:
            return None
        waiting = self._lineage.get(dataset, deploy_record_id(newest))
        if waiting is None or waiting.status != "waiting":
            return None
        correlation = str(waiting.attributes.get("correlation_id") or f"deploy-{dataset}-{newest}")
        try:
            return self._deploy(dataset, newest, correlation)
        except DeploymentInProgress:
            # The platform runs one of its own now (CodeDeploy's rollback deployment): its
            # end event comes here too, and starts this one then.
            log.info("%s v%s still waits: another deployment is running", dataset, newest)
            return None

    def _deploy_rows(self, dataset: str, status: str | None = None) -> list[LineageRecord]:
        """The dataset's deployments, newest first (only those in ``status`` if given)."""
        return [
            r
            for r in reversed(self._lineage.list(dataset))
            if r.kind == LineageKind.DEPLOY and (status is None or r.status == status)
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
            # A check redelivered after the deployer saved the end but before it was
            # recorded here (the function failed in between): the deployer's own row
            # still says how it ended, and the end is not lost.
            confirmed = self._deployer.confirm(dataset, deployment_id)
            if confirmed is None or confirmed.status == "InProgress":
                return DeployOutcome("ignored", deployment_id)
            change = DeploymentStateChange(
                dataset=dataset,
                deployment_id=deployment_id,
                status=confirmed.status,
                reason=confirmed.reason,
            )
        return self.on_state_change(change)

    def on_state_change(self, change: DeploymentStateChange) -> DeployOutcome:
        # The queue's message says a deployment ended; the platform, asked now, says how
        # (an event can be late, repeated or sent by anyone allowed on the queue).
        confirmed = self._deployer.confirm(change.dataset, change.deployment_id)
        if confirmed is not None:
            if confirmed.status == "InProgress":
                raise WorkInProgress(
                    f"deployment {change.deployment_id} of {change.dataset} is reported "
                    f"{change.status} but its platform says it is still in progress",
                    hint="the message is retried; its end is read again then",
                )
            change = change.model_copy(
                update={"status": confirmed.status, "reason": confirmed.reason or change.reason}
            )
        if change.supersedes_open:
            for other in self._deploy_rows(change.dataset, "started"):
                if other.attributes.get("deployment_id") != change.deployment_id:
                    self._finish(
                        other,
                        "RolledBack",
                        f"the endpoint is back in service on {change.deployment_id}",
                    )
        row = self._find(change.dataset, change.deployment_id)
        if row is None and confirmed is not None and confirmed.model_version is not None:
            row = self._adopt(change.dataset, confirmed.model_version, change.deployment_id)
        if row is None:
            # Someone deployed by hand, or the platform's own rollback deployment: not
            # ours to finish, but its end frees the target for a waiting approval.
            log.info("deployment %s of %s is not Dhow's", change.deployment_id, change.dataset)
            self._start_waiting(change.dataset)
            return DeployOutcome("ignored", change.deployment_id)
        if row.status in DONE:
            self._start_waiting(change.dataset)  # a retry of an end whose start failed
            return DeployOutcome("duplicate", change.deployment_id)
        known = confirmed.reason if confirmed is not None else None
        out = self._finish(row, change.status, change.reason, known_reason=known)
        self._start_waiting(change.dataset)
        return out

    def _adopt(self, dataset: str, version: int, deployment_id: str) -> LineageRecord | None:
        """The row of a deployment whose end came before its id was recorded (the start
        is still writing, or crashed after the platform took it): the id is recorded
        now, and the end is not dropped. A start that writes after this loses its
        conditional write, and the row stays ended."""
        row = self._lineage.get(dataset, deploy_record_id(version))
        if row is None or row.status in DONE:
            return row
        adopted = row.model_copy(
            update={
                "status": "started",
                "attributes": {**row.attributes, "deployment_id": deployment_id},
                "updated_at": datetime.now(UTC),
            }
        )
        if not self._lineage.replace(adopted, row.revision):
            raise WorkInProgress(f"{row.record_id} of {dataset} changed under us")
        return adopted.model_copy(update={"revision": row.revision + 1})

    def _finish(
        self,
        row: LineageRecord,
        status_in: str,
        reason_in: str | None,
        *,
        known_reason: str | None = None,
    ) -> DeployOutcome:
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
                known_reason
                or self._deployer.failure_reason(dataset, deployment_id)
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
        (a redelivered event must not roll back one version further).

        The row is a claim, done only once the rollback is out: a delivery that failed or
        crashed half-way is finished by the next one, never answered "duplicate". The
        first delivery writes down where it goes before it acts, and a retry goes there:
        chosen again from the state the first attempt already changed, the "previous"
        version would be one further back."""
        check = event.check_id or event.event_id
        claimed = claim(
            self._lineage,
            DriftActionRecord(
                dataset=event.dataset,
                record_id=f"drift-rollback:{check}",
                status="claimed",
                attributes={"check_id": check, "drifted_columns": event.drifted_columns},
            ),
            self._claim,
            done_statuses={"done", "failed"},
        )
        if claimed.done:
            return DeployOutcome("duplicate")
        report = event.report.uri if event.report else "no report"
        why = f"drift in {', '.join(event.drifted_columns)} (check {check}; {report})"
        try:
            if "to_version" in claimed.record.attributes:
                choice = RollbackChoice.model_validate(claimed.record.attributes)
            else:
                choice = self._choose_rollback(event.dataset, None)
                claimed = self._note(claimed, **choice.model_dump())
            out = self._apply_rollback(event.dataset, choice, "drift", why, key=f"drift-{check}")
        except NothingToRollBackTo as exc:
            # Retrying cannot make an older version appear: record it and stop.
            complete(self._lineage, claimed, "failed", reason=exc.message)
            log.warning("drift rollback of %s not possible: %s", event.dataset, exc.message)
            return DeployOutcome("ignored")
        complete(self._lineage, claimed, "done", deployment_id=out.deployment_id)
        return out

    def rollback(
        self, dataset: str, to_version: int | None, requested_by: str, why: str
    ) -> DeployOutcome:
        """Send all traffic to ``to_version`` now. By default: during a rollout, the version
        it started from; otherwise the newest approved version other than the serving one."""
        choice = self._choose_rollback(dataset, to_version)
        key = f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
        return self._apply_rollback(dataset, choice, requested_by, why, key=key)

    def _choose_rollback(self, dataset: str, to_version: int | None) -> RollbackChoice:
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
        return RollbackChoice(
            from_version=serving,
            to_version=target.version,
            open_rollout=open_rollout.record_id if open_rollout is not None else None,
        )

    def _apply_rollback(
        self, dataset: str, choice: RollbackChoice, requested_by: str, why: str, *, key: str
    ) -> DeployOutcome:
        """Carry out ``choice``. Each step can be repeated by a retry without doing it
        twice: the traffic goes to the same version, a row or status already written is
        left alone, and the event keeps its id (``key``)."""
        target = self._registry.version(dataset, choice.to_version)
        if target is None:
            raise NothingToRollBackTo(
                f"{dataset} has no version {choice.to_version} to roll back to",
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
        open_rollout = (
            self._lineage.get(dataset, choice.open_rollout) if choice.open_rollout else None
        )
        if open_rollout is not None and open_rollout.status == "started":
            # Its platform's own end event is then a duplicate.
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
        serving = choice.from_version
        if serving is not None and serving != target.version:
            was = self._registry.version(dataset, serving)
            if was is None or was.status != "Rejected":
                self._registry.set_status(dataset, serving, "Rejected", reason)
        if target.status != "Approved":
            self._registry.set_status(dataset, target.version, "Approved", reason)
        self._lineage.put_if_absent(
            RollbackRecord(
                dataset=dataset,
                record_id=f"rollback:{key}",
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
                event_id=f"deploy-rollback-{dataset}-{key}",
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
        rows = [
            r
            for r in self._lineage.list(dataset)
            if r.kind in (LineageKind.DEPLOY, LineageKind.ROLLBACK)
        ]
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
