"""``Deployer`` for Azure: a progressive rollout that the deploy function drives itself.

Azure has no CodeDeploy: Flex Consumption, the plan the stack's Function App runs on,
has no deployment slots (fact azure.functions.flex_no_slots). So the model is served by
an **Azure ML managed online endpoint** per dataset, one deployment per model version,
and the endpoint's ``traffic`` splits requests between them
(azure.serving.endpoint_traffic). Azure Monitor keeps each deployment's own requests,
5xx and p99 a minute (azure.serving.endpoint_metrics), so the candidate is judged on its
own requests, as on AWS, with the same rule (``shared.canary.CanaryRule``).

``SteppedRolloutDeployer`` holds the schedule (the spec's strategy, step_percent and
interval_minutes, the same steps as CodeDeploy's configs) in one lineage row per dataset
(``serving:rollout``). ``start`` shifts the first step and sends a **rollout check** to
the deploy function's own queue, invisible until it is due (Put Message's
``visibilitytimeout``, at most 7 days: azure.storage.queue_visibility_max). Each check
(``advance``) reads the candidate's metrics since the rollout began, rolls back at once
when a minute fails the rule, steps the share when the schedule says so, and sends the
next check a period later. Its end is a ``DeploymentStateChange``, so the deploy service
emits the same DeploymentCompleted / DeploymentRolledBack as on AWS.

Three parts are swapped, nothing else: where traffic is set (``TrafficSplit``), where
the candidate's numbers come from (``CandidateMetrics``), and how a check is delayed
(``CheckTimer``). In the cloud: the endpoint, Azure Monitor, the Storage queue. On the
local platform (``dhow_local.serving``): the local router's row and its counts, and the
same Storage queue on Azurite, so `make demo CLOUD=azure` plays this very code.
"""

from __future__ import annotations

import abc
import math
import re
import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.canary import (
    PeriodCounts,
    endpoint_metrics_queries,
)
from shared.cloud_facts import value
from shared.errors import ConfigError, DeploymentInProgress, DhowError, WorkInProgress
from shared.identifiers import stage_name
from shared.ports import (
    ConfirmedDeployment,
    Deployer,
    DeploymentPlan,
    DeploymentStateChange,
    LineageRecord,
    LineageStore,
    StartedDeployment,
)
from shared.reasons import Reason
from shared.rollout_row import RolloutRow, first_schedule, load_row, save_row

# Re-exported: the deployer and its tests name them here; the shape lives with Azure's.
from shared.triggers.azure import CHECK_KEY as CHECK_KEY
from shared.triggers.azure import check_message
from shared.triggers.azure import is_rollout_check as is_rollout_check

ROLLOUT_RECORD = "serving:rollout"
# What ``start`` names a rollout: rollout-<dataset>-v<version>-<6 hex>.
_ROLLOUT_ID = re.compile(r"^rollout-(?P<dataset>.+)-v(?P<version>\d+)-[0-9a-f]{6}$")
_SUCCEEDED = "Succeeded"  # fact azure.ml.online_deployment_provisioning


def deployment_name(version: int) -> str:
    """An endpoint's deployment for one model version: 3 to 32 characters, so not ``v1``
    (fact azure.serving.endpoint_name, which deployment names follow too)."""
    return f"version-{version}"


class RolloutState(RolloutRow):
    """The rollout of one dataset, as the deploy function drives it (its row's keys are
    ``RolloutRow``'s, in field order, then ``provisioned``)."""

    # False while the candidate's deployment is still being provisioned (no traffic yet;
    # ``started_at`` is then when it was started, the schedule begins once it serves).
    provisioned: bool = True

    def weights(self) -> dict[int, int]:
        """Percent per version, as an endpoint's ``traffic`` takes them (they sum to 100)."""
        if self.candidate is None or self.stable is None or self.stable == self.candidate:
            version = self.candidate if self.stable is None else self.stable
            return {} if version is None else {version: 100}
        candidate = round(self.share * 100)
        return {v: p for v, p in ((self.stable, 100 - candidate), (self.candidate, candidate))}


class TrafficSplit(abc.ABC):
    """Where a dataset's requests are split between model versions."""

    def prepare(self, plan: DeploymentPlan) -> None:  # noqa: B027 - most need nothing
        """Start making ``plan.model_version`` servable (with no traffic yet)."""

    def provisioning(self, dataset: str, version: int) -> str:
        """The version's provisioning state (fact azure.ml.online_deployment_provisioning);
        servable at once unless the platform builds it."""
        return str(value("azure.ml.online_deployment_provisioning")["succeeded"])

    @abc.abstractmethod
    def set(self, dataset: str, weights: Mapping[int, int], state: RolloutState) -> None:
        """Send ``weights`` (percent per version, summing to 100) of the requests."""


class CandidateMetrics(abc.ABC):
    """The candidate's own requests, one period at a time.

    ``latency_s`` is how long after a period ends its numbers may still be missing (Azure
    Monitor's documented latency in the cloud; 0 for the local router's live counts)."""

    latency_s: float = 0.0

    @abc.abstractmethod
    def periods(
        self, dataset: str, state: RolloutState, until: datetime
    ) -> dict[datetime, PeriodCounts]:
        """Every reported period of the candidate since the rollout began, by its start."""

    def period_starts(self, state: RolloutState, until: datetime) -> list[datetime]:
        """The periods that cover the rollout from its start until ``until``, by start."""
        return []

    def known_at(self, t: datetime) -> datetime:
        """When every request before ``t`` is in the numbers (live counts: at once)."""
        return t + timedelta(seconds=self.latency_s)


class CheckTimer(abc.ABC):
    """Delivers a rollout check to the deploy function after a delay."""

    @abc.abstractmethod
    def after(self, seconds: int, body: str) -> None: ...


def check_delay_s(seconds: float) -> int:
    """A delay as Put Message takes it: whole seconds, at least 1, at most 7 days."""
    limit = int(value("azure.storage.queue_visibility_max")["seconds"])
    if seconds > limit:
        raise ConfigError(
            f"a rollout step of {seconds:.0f} s is longer than a queue message can wait "
            f"({limit} s)",
            hint="shorten the spec's serving.interval_minutes",
        )
    return max(1, math.ceil(seconds))


class DeploymentNotReady(DhowError):
    """The candidate's deployment did not become servable; the rollout fails."""

    reason = Reason.DEPLOYMENT_NOT_READY


class SteppedRolloutDeployer(Deployer):
    """See the module docstring. ``minute_s`` is a schedule minute (60 in the cloud;
    ``DHOW_LOCAL_MINUTE_SECONDS`` locally); ``check_every_minutes`` how often the
    candidate is judged between steps (each metrics period)."""

    def __init__(
        self,
        lineage: LineageStore,
        traffic: TrafficSplit,
        metrics: CandidateMetrics,
        timer: CheckTimer,
        *,
        alarm_prefix: str,
        minute_s: float = 60.0,
        check_every_minutes: float = 1.0,
        late_metrics_wait_s: float | None = None,
        provision_poll_s: float = 60.0,
        provision_limit_s: float = 90 * 60.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._lineage = lineage
        self._traffic = traffic
        self._metrics = metrics
        self._timer = timer
        self._prefix = alarm_prefix
        self._minute = minute_s
        self._every = check_every_minutes
        # How long past the documented latency a missing minute is waited for before the
        # step is refused (bounded: a rollout never hangs on numbers that do not come).
        self._late_wait = (
            5 * metrics.latency_s if late_metrics_wait_s is None else late_metrics_wait_s
        )
        # A first deployment builds its image (commonly 10-20+ minutes): its state is
        # read every ``provision_poll_s`` by the rollout checks, never waited for in the
        # deploy function (15 minutes at most). Our bound, not Azure's: a deployment not
        # Succeeded after ``provision_limit_s`` fails the rollout.
        self._provision_poll = provision_poll_s
        self._provision_limit = provision_limit_s
        self._now = clock

    # -- the row ------------------------------------------------------------------

    def _load(self, dataset: str) -> tuple[RolloutState, LineageRecord]:
        return load_row(self._lineage, dataset, ROLLOUT_RECORD, RolloutState)

    def _save(self, row: LineageRecord, state: RolloutState) -> bool:
        return save_row(self._lineage, row, state, self._now)

    # -- Deployer -----------------------------------------------------------------

    def start(self, plan: DeploymentPlan) -> StartedDeployment:
        deployment_id = f"rollout-{plan.dataset}-v{plan.model_version}-{uuid.uuid4().hex[:6]}"
        state, row = self._load(plan.dataset)
        if state.status == "InProgress":
            raise DeploymentInProgress(
                f"{plan.dataset} has rollout {state.deployment_id} in progress",
                hint="nothing to do: its end starts the newest approved version",
            )
        stable = state.stable if state.stable is not None else plan.previous_version
        schedule = first_schedule(plan, stable, redeploy_at_once=True)
        # Refused before anything moves: a step longer than a message can wait.
        check_delay_s(max(at for at, _ in schedule) * self._minute)
        self._traffic.prepare(plan)
        ready = self._traffic.provisioning(plan.dataset, plan.model_version) == _SUCCEEDED
        new = RolloutState.begun(
            plan,
            deployment_id=deployment_id,
            stable=stable,
            schedule=schedule,
            share=schedule[0][1] if ready else 0.0,
            started_at=self._now(),
            provisioned=ready,
        )
        if not self._save(row, new):
            raise WorkInProgress(f"the rollout row of {plan.dataset} changed under us")
        if not ready:
            # Traffic moves once a check finds the deployment Succeeded.
            self._timer.after(
                check_delay_s(self._provision_poll), check_message(plan.dataset, deployment_id)
            )
            return StartedDeployment(deployment_id=deployment_id, target=f"rollout/{plan.dataset}")
        self._traffic.set(plan.dataset, new.weights(), new)
        # Even an all-at-once rollout ends through a check, so it ends as every other.
        self._timer.after(
            check_delay_s(self._next_check_s(new)), check_message(plan.dataset, deployment_id)
        )
        return StartedDeployment(deployment_id=deployment_id, target=f"rollout/{plan.dataset}")

    def traffic(self, dataset: str) -> dict[str, float]:
        state, _ = self._load(dataset)
        return {str(v): p / 100 for v, p in state.weights().items() if p > 0}

    def confirm(self, dataset: str, deployment_id: str) -> ConfirmedDeployment | None:
        """The rollout row's word on ``deployment_id``: a check redelivered after its end
        was saved here, but before deploy recorded it, finds the end again."""
        state, _ = self._load(dataset)
        m = _ROLLOUT_ID.match(deployment_id)
        if state.deployment_id != deployment_id or m is None or m["dataset"] != dataset:
            return None
        version = int(m["version"])
        if state.status == "InProgress":
            return ConfirmedDeployment(
                deployment_id=deployment_id, model_version=version, status="InProgress"
            )
        if state.status in ("Succeeded", "RolledBack"):
            return ConfirmedDeployment(
                deployment_id=deployment_id,
                model_version=version,
                status="Succeeded" if state.status == "Succeeded" else "RolledBack",
                reason=state.reason,
            )
        return None

    def failure_reason(self, dataset: str, deployment_id: str) -> str | None:
        state, _ = self._load(dataset)
        return state.reason if state.deployment_id == deployment_id else None

    def rollback(self, dataset: str, to_version: int, reason: str) -> str:
        ref = f"rollback-{dataset}-v{to_version}-{uuid.uuid4().hex[:6]}"
        _state, row = self._load(dataset)
        new = RolloutState.manual(ref, to_version, reason, self._now())
        if not self._save(row, new):
            raise WorkInProgress(f"the rollout row of {dataset} changed under us")
        self._traffic.set(dataset, {to_version: 100}, new)
        return ref

    # -- the checks ---------------------------------------------------------------

    def _elapsed_min(self, state: RolloutState) -> float:
        assert state.started_at is not None
        return (self._now() - state.started_at).total_seconds() / self._minute

    def _next_check_s(self, state: RolloutState) -> float:
        """Each metrics period, and at a step's end once its last minute can be known."""
        assert state.started_at is not None
        elapsed = self._elapsed_min(state)
        upcoming = [at for at, _ in state.schedule if at > elapsed]
        if not upcoming:
            return 0.0
        boundary = state.started_at + timedelta(seconds=min(upcoming) * self._minute)
        due = (self._metrics.known_at(boundary) - self._now()).total_seconds()
        return min(self._every * self._minute, due)

    def _unknown_minutes(
        self, state: RolloutState, periods: Mapping[datetime, PeriodCounts], until: datetime
    ) -> list[datetime]:
        """The periods before ``until`` with no numbers although the candidate has traffic:
        not yet known, never passed. Live counts (latency 0) have no late numbers."""
        if self._metrics.latency_s <= 0 or not any(p.requests for p in periods.values()):
            return []
        return [t for t in self._metrics.period_starts(state, until) if t not in periods]

    def advance(self, dataset: str, deployment_id: str) -> DeploymentStateChange | None:
        """One rollout check: judge, step, finish or roll back; None while it goes on
        (or when the check is stale: another rollout, or a manual rollback, took over)."""
        state, row = self._load(dataset)
        if state.deployment_id != deployment_id or state.status != "InProgress":
            return None
        if not state.provisioned:
            return self._provisioning(row, state)
        periods = self._metrics.periods(dataset, state, self._now())
        verdict = next(
            (v for v in map(state.rule().verdict, periods.values()) if v is not None), None
        )
        if verdict is not None:
            # "errors: ..." / "p99-latency: ...": named like the AWS alarms.
            return self._roll_back(row, state, f"alarm {self._prefix}{dataset}-{verdict}")
        elapsed = self._elapsed_min(state)
        share = state.share_due(elapsed)
        if share != state.share:
            # Past a step only on every minute of it: the last one must have landed (the
            # metrics' latency after the step's end), and none of them may be missing.
            assert state.started_at is not None
            at = max(at for at, _ in state.schedule if at <= elapsed)
            step_end = state.started_at + timedelta(seconds=at * self._minute)
            known = self._metrics.known_at(step_end)
            wait_s = (known - self._now()).total_seconds()
            missing = [] if wait_s > 0 else self._unknown_minutes(state, periods, step_end)
            if missing and wait_s + self._late_wait <= 0:
                reason = (
                    f"metrics {self._prefix}{dataset}: the candidate's minute(s) "
                    + ", ".join(t.strftime("%H:%M") for t in missing)
                    + f" not reported {self._metrics.latency_s + self._late_wait:.0f} s "
                    "after the step ended; not promoted without them"
                )
                return self._roll_back(row, state, reason)
            if wait_s > 0 or missing:
                self._timer.after(
                    check_delay_s(wait_s if wait_s > 0 else self._every * self._minute),
                    check_message(dataset, deployment_id),
                )
                return None
        if share >= 1.0:
            new = state.succeeded()
            if not self._save(row, new):
                raise WorkInProgress(f"the rollout row of {dataset} changed under us")
            self._traffic.set(dataset, new.weights(), new)
            return DeploymentStateChange(
                dataset=dataset, deployment_id=deployment_id, status="Succeeded"
            )
        if share != state.share:
            new = state.model_copy(update={"share": share})
            if not self._save(row, new):
                raise WorkInProgress(f"the rollout row of {dataset} changed under us")
            self._traffic.set(dataset, new.weights(), new)
            state = new
        self._timer.after(
            check_delay_s(self._next_check_s(state) or self._every * self._minute),
            check_message(dataset, deployment_id),
        )
        return None

    def _provisioning(
        self, row: LineageRecord, state: RolloutState
    ) -> DeploymentStateChange | None:
        """A check while the candidate's deployment is provisioned: its first step starts
        once it is Succeeded; Failed, Canceled or still not ready at the bound fails it."""
        assert state.deployment_id is not None
        assert state.candidate is not None
        assert state.started_at is not None
        dataset = row.dataset
        phase = self._traffic.provisioning(dataset, state.candidate)
        waited = (self._now() - state.started_at).total_seconds()
        if phase == _SUCCEEDED:
            new = state.model_copy(
                update={
                    "provisioned": True,
                    "started_at": self._now(),
                    "share": state.schedule[0][1],
                }
            )
            if not self._save(row, new):
                raise WorkInProgress(f"the rollout row of {dataset} changed under us")
            self._traffic.set(dataset, new.weights(), new)
            self._timer.after(
                check_delay_s(self._next_check_s(new) or self._every * self._minute),
                check_message(dataset, state.deployment_id),
            )
            return None
        failed = phase in value("azure.ml.online_deployment_provisioning")["failed"]
        if failed or waited >= self._provision_limit:
            error = DeploymentNotReady(
                f"deployment {deployment_name(state.candidate)} of {dataset} is {phase} "
                f"after {waited / 60:.0f} min",
                hint="read its logs (az ml online-deployment get-logs); the stable version "
                "keeps all traffic",
            )
            return self._roll_back(row, state, f"{error.reason}: {error}")
        self._timer.after(
            check_delay_s(min(self._provision_poll, self._provision_limit - waited)),
            check_message(dataset, state.deployment_id),
        )
        return None

    def _roll_back(
        self, row: LineageRecord, state: RolloutState, reason: str
    ) -> DeploymentStateChange:
        assert state.deployment_id is not None
        dataset = row.dataset
        new = state.rolled_back(reason)
        if not self._save(row, new):
            raise WorkInProgress(f"the rollout row of {dataset} changed under us")
        self._traffic.set(dataset, new.weights(), new)
        return DeploymentStateChange(
            dataset=dataset, deployment_id=state.deployment_id, status="RolledBack", reason=reason
        )


# -- the cloud: an Azure ML online endpoint, Azure Monitor, the Storage queue -----------


def endpoint_name(stage: str, dataset: str) -> str:
    """The dataset's online endpoint (unique in the region; 3-32 of [a-zA-Z0-9-], starting
    with a letter: fact azure.serving.endpoint_name)."""
    rule = value("azure.serving.endpoint_name")
    return stage_name(stage, dataset).replace("_", "-")[: int(rule["max_length"])].rstrip("-")


class OnlineEndpointTraffic(TrafficSplit):
    """The dataset's managed online endpoint: one deployment per version, and the
    endpoint's ``traffic`` (``MLClient.online_endpoints`` / ``online_deployments``)."""

    def __init__(
        self,
        ml_client: Any,
        *,
        stage: str,
        environment: str,
        instance_type: str,
        code_dir: str,
        scoring_script: str,
        environment_variables: Mapping[str, str],
    ) -> None:
        self._ml = ml_client
        self._stage = stage
        self._environment = environment
        self._instance_type = instance_type
        self._code = code_dir
        self._script = scoring_script
        self._env = dict(environment_variables)

    def deployment_entity(self, plan: DeploymentPlan) -> Any:
        from azure.ai.ml.entities import CodeConfiguration, ManagedOnlineDeployment

        return ManagedOnlineDeployment(
            name=deployment_name(plan.model_version),
            endpoint_name=endpoint_name(self._stage, plan.dataset),
            # The scoring script fetches and verifies the version as the serve function
            # does: the model travels as its registry row, not as an uploaded asset.
            code_configuration=CodeConfiguration(code=self._code, scoring_script=self._script),
            environment=self._environment,
            instance_type=self._instance_type,
            instance_count=plan.instance_count,
            environment_variables={
                **self._env,
                "DHOW_SERVE_DATASET": plan.dataset,
                "DHOW_SERVE_MODEL_VERSION": str(plan.model_version),
            },
            app_insights_enabled=True,
        )

    def prepare(self, plan: DeploymentPlan) -> None:
        # Created with no traffic; the endpoint's traffic is set separately (below). Only
        # started: a first deployment builds its image for longer than the deploy
        # function may run, and a redelivered PUT on a deployment in progress is a 409.
        # The rollout checks read its state (provisioning).
        self._ml.online_deployments.begin_create_or_update(self.deployment_entity(plan))

    def provisioning(self, dataset: str, version: int) -> str:
        deployment = self._ml.online_deployments.get(
            name=deployment_name(version), endpoint_name=endpoint_name(self._stage, dataset)
        )
        # azure-ai-ml gives its DeploymentProvisioningState (a str Enum) read from ARM's
        # answer, whose str() is the member's name: the state is its value.
        state = deployment.provisioning_state
        return str(getattr(state, "value", state))

    def endpoint_entity(self, dataset: str, weights: Mapping[int, int]) -> Any:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        endpoint = self._ml.online_endpoints.get(endpoint_name(self._stage, dataset))
        assert isinstance(endpoint, ManagedOnlineEndpoint)
        endpoint.traffic = {deployment_name(v): int(p) for v, p in weights.items()}
        return endpoint

    def set(self, dataset: str, weights: Mapping[int, int], state: RolloutState) -> None:
        if sum(weights.values()) not in (0, 100):
            raise ValueError(f"an endpoint's traffic sums to 100, not {dict(weights)}")
        self._ml.online_endpoints.begin_create_or_update(
            self.endpoint_entity(dataset, weights)
        ).result()


METRICS_API_VERSION = "2018-01-01"


class AzureMonitorEndpointMetrics(CandidateMetrics):
    """The candidate deployment's minutes from Azure Monitor's Metrics - List on the
    endpoint's resource id. ``get`` sends an authenticated GET to ARM and returns JSON
    (an azure-core pipeline with the managed identity's token in the function app)."""

    def __init__(
        self,
        endpoint_resource_id: Callable[[str], str],
        get: Callable[[str, Mapping[str, str]], Mapping[str, Any]],
    ) -> None:
        self._resource = endpoint_resource_id
        self._get = get
        # A minute's point can be missing for this long after the minute ends.
        self.latency_s = float(value("azure.monitor.platform_metrics_latency")["seconds"])

    def period_starts(self, state: RolloutState, until: datetime) -> list[datetime]:
        assert state.started_at is not None
        t = state.started_at.replace(second=0, microsecond=0)
        starts = []
        while t < until:
            starts.append(t)
            t += timedelta(minutes=1)
        return starts

    def known_at(self, t: datetime) -> datetime:
        # PT1M points are clock minutes: the minute holding t ends first, then lands.
        end = t.replace(second=0, microsecond=0)
        if end < t:
            end += timedelta(minutes=1)
        return end + timedelta(seconds=self.latency_s)

    def requests(
        self, dataset: str, state: RolloutState, until: datetime
    ) -> list[tuple[str, dict[str, str]]]:
        """The GETs of one check: one per metric, as Metrics - List refuses a filter on a
        dimension one of the query's metrics lacks (``endpoint_metrics_queries``)."""
        assert state.started_at is not None
        assert state.candidate is not None
        # Whole minutes: Azure Monitor's PT1M periods are clock minutes.
        start = state.started_at.replace(second=0, microsecond=0)
        end = until.replace(second=0, microsecond=0) + timedelta(minutes=1)
        path = f"{self._resource(dataset)}/providers/Microsoft.Insights/metrics"
        queries = endpoint_metrics_queries(
            deployment_name(state.candidate),
            start.strftime("%Y-%m-%dT%H:%M:%SZ"),
            end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        )
        return [(path, {"api-version": METRICS_API_VERSION, **q}) for q in queries]

    def periods(
        self, dataset: str, state: RolloutState, until: datetime
    ) -> dict[datetime, PeriodCounts]:
        from shared.canary import endpoint_minutes

        # The answers' metrics side by side, as one query naming both would give them.
        answers = [self._get(path, params) for path, params in self.requests(dataset, state, until)]
        minutes = endpoint_minutes({"value": [m for a in answers for m in a.get("value", [])]})
        return {_utc(stamp): counts for stamp, counts in minutes.items()}


class QueueCheckTimer(CheckTimer):
    """The deploy function's own Storage queue (a ``QueueClient`` that writes base64, as
    the Functions host reads): the check is sent invisible for its delay."""

    def __init__(self, queue: Any) -> None:
        self._queue = queue

    def after(self, seconds: int, body: str) -> None:
        self._queue.send_message(body, visibility_timeout=check_delay_s(seconds))


def _utc(stamp: str) -> datetime:
    """An Azure Monitor ``timeStamp`` (ISO 8601, ``Z``) as an aware datetime."""
    t = datetime.fromisoformat(stamp)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
