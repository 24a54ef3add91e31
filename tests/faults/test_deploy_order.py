"""Deploy under late, repeated, early and refused deliveries (issue 16, "Exactly once"
items 2 and 3): a late v2 never replaces v3; an approval during a rollout waits for its
end instead of being retried into the DLQ; an end event that comes before its deployment
id is recorded is not dropped; an end is confirmed with the platform; a drift rollback
that fails or crashes at any step is finished once by its redelivery.

Messages go through ``process_sqs_batch`` as Lambda hands them over, with the deploy
queue's own receive count before the DLQ (``shared.topology``); a failed message comes
back, as SQS returns it after its visibility timeout. The serving platform is
``OneDeploymentAtATime``: CodeDeploy's rule for a deployment group as the adapter
presents it (one active deployment, refused with ``DeploymentInProgress``; each end known
to GetDeployment), checked against botocore in tests/unit/test_deploy_requests.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, Literal

import pytest
from moto import mock_aws

from shared.adapters.aws import aws_client
from shared.adapters.azure_serving import SteppedRolloutDeployer
from shared.adapters.sagemaker_registry import SageMakerModelRegistry
from shared.artifacts import ARTIFACT_SHA256
from shared.batch import process_sqs_batch
from shared.constants import EVENT_SOURCE
from shared.errors import DeploymentInProgress, DhowError
from shared.events import (
    DeploymentCompleted,
    DeploymentRolledBack,
    DeploymentStarted,
    DriftDetected,
    ModelApproved,
    PipelineEvent,
)
from shared.ports import (
    ConfirmedDeployment,
    Deployer,
    DeploymentPlan,
    LineageRecord,
    StartedDeployment,
)
from shared.services.deploy import DeployService
from shared.settings import Settings
from shared.topology import build_topology
from shared.triggers import TriggerContext
from tests.faults.ledger import Ledger
from tests.helpers import MemoryBus, MemoryLineage, load_event
from tests.unit.test_azure_rollout import Clock, Minutes, Timer, Weights

PREFIX = "dhow-t-serve-"
DATASET = "customers"
DEPLOY_QUEUE = next(q for q in build_topology("t").queues if q.logical == "deploy")


class Crash(Exception):
    """The function died here (a timeout, an OOM kill): nothing after it ran."""


@dataclass
class Deployment:
    version: int
    status: Literal["InProgress", "Succeeded", "RolledBack"] = "InProgress"
    reason: str | None = None


class OneDeploymentAtATime(Deployer):
    """A deployment group as CodeDeploy runs it: one active deployment at a time (another
    CreateDeployment is refused, fact aws.codedeploy.active_deployment_error, which the
    adapter raises as ``DeploymentInProgress``); GetDeployment knows each one's end."""

    def __init__(self) -> None:
        self.serving: int | None = None
        self.deployments: dict[str, Deployment] = {}
        self.active: str | None = None
        self.refused = 0
        self.moves: list[int] = []  # each time the alias moved, to which model version
        self.on_created: Callable[[str], None] | None = None
        self.fail_rollback = 0

    def start(self, plan: DeploymentPlan) -> StartedDeployment:
        if self.active is not None:
            self.refused += 1
            raise DeploymentInProgress(f"{plan.dataset} has {self.active} active")
        deployment_id = f"d-{len(self.deployments) + 1:09d}"
        self.deployments[deployment_id] = Deployment(plan.model_version)
        self.active = deployment_id
        if self.on_created is not None:  # the platform's end can outrun our own write
            self.on_created(deployment_id)
        return StartedDeployment(deployment_id=deployment_id, target=f"{PREFIX}{DATASET}:live")

    def end(self, deployment_id: str, status: Literal["Succeeded", "RolledBack"]) -> None:
        d = self.deployments[deployment_id]
        d.status = status
        d.reason = None if status == "Succeeded" else "ALARM_ACTIVE: errors alarm fired"
        self.active = None
        if status == "Succeeded":
            self._move(d.version)

    def _move(self, version: int) -> None:
        if self.serving != version:
            self.serving = version
            self.moves.append(version)

    def traffic(self, dataset: str) -> dict[str, float]:
        return {str(self.serving): 1.0} if self.serving is not None else {}

    def rollback(self, dataset: str, to_version: int, reason: str) -> str:
        if self.fail_rollback:
            self.fail_rollback -= 1
            raise DhowError("UpdateAlias refused", reason="deployment_refused")
        if self.active is not None:
            self.end(self.active, "RolledBack")
        self._move(to_version)
        return f"rollback-{to_version}"

    def confirm(self, dataset: str, deployment_id: str) -> ConfirmedDeployment | None:
        d = self.deployments.get(deployment_id)
        if d is None:  # made in the console: not Dhow's
            return ConfirmedDeployment(
                deployment_id=deployment_id, model_version=None, status="Succeeded"
            )
        return ConfirmedDeployment(
            deployment_id=deployment_id, model_version=d.version, status=d.status, reason=d.reason
        )


def envelope(event: PipelineEvent) -> str:
    """The SQS body EventBridge delivers for a pipeline event."""
    return json.dumps(
        {
            "source": EVENT_SOURCE,
            "detail-type": event.event_type,
            "detail": json.loads(event.model_dump_json()),
        }
    )


def codedeploy_end(deployment_id: str, state: str = "SUCCESS") -> str:
    """CodeDeploy's end event as EventBridge delivers it (a real payload, re-addressed)."""
    event = load_event("codedeploy_deployment_state_change.json")
    event["detail"].update(
        deploymentId=deployment_id,
        state=state,
        deploymentGroup=f"{PREFIX}{DATASET}",
        application="dhow-t-serving",
    )
    return json.dumps(event)


@dataclass
class Message:
    body: str
    receives: int = 0


@dataclass
class DeployQueue:
    """The deploy queue: each message handed over in an SQS batch of one; a failed one
    comes back until its receive count reaches the DLQ's."""

    svc: DeployService
    pending: list[Message] = field(default_factory=list)
    done: list[Message] = field(default_factory=list)
    dead: list[Message] = field(default_factory=list)
    sent: int = 0

    def send(self, body: str) -> None:
        self.sent += 1
        self.pending.append(Message(body))

    def handle(self, body: str) -> None:
        """What functions/deploy/core.py does with a body: its route table, on this
        world's service and serve prefix."""
        from functions.deploy.core import ROUTES

        replace(ROUTES, context=TriggerContext(serve_prefix=PREFIX)).run(body, self.svc)

    def receive_one(self) -> bool:
        """One delivery of the oldest message; whether it was handled."""
        message = self.pending.pop(0)
        message.receives += 1
        record = {
            "messageId": f"m-{id(message)}",
            "body": message.body,
            "eventSource": "aws:sqs",
            "attributes": {"ApproximateReceiveCount": str(message.receives)},
        }
        failed = process_sqs_batch({"Records": [record]}, lambda m: self.handle(m.body))
        if not failed["batchItemFailures"]:
            self.done.append(message)
            return True
        if message.receives >= DEPLOY_QUEUE.max_receive_count:
            self.dead.append(message)
        else:
            self.pending.append(message)
        return False

    def drain(self) -> None:
        while self.pending:
            self.receive_one()

    @property
    def accounted(self) -> int:
        return len(self.done) + len(self.dead)


class World:
    def __init__(self, claim_seconds: int = 900) -> None:
        self.bus, self.lineage = MemoryBus(), MemoryLineage()
        self.registry = SageMakerModelRegistry(aws_client("sagemaker", Settings()), stage="t")
        self.deployer = OneDeploymentAtATime()
        self.svc = DeployService(
            self.deployer, self.registry, self.bus, self.lineage, claim_seconds=claim_seconds
        )
        self.queue = DeployQueue(self.svc)

    def register(self, status: Literal["Approved", "Rejected"] = "Approved") -> ModelApproved:
        n = len(self.registry.versions(DATASET)) + 1
        v = self.registry.register(
            DATASET,
            artifact=f"s3://dhow-t-models/models/{DATASET}/job-{n}/output/model.tar.gz",
            image="local:shared.trainer",
            metrics={"roc_auc": 0.7},
            lineage={ARTIFACT_SHA256: f"{n:02d}" * 32},
            status=status,
        )
        return ModelApproved(
            dataset=DATASET,
            correlation_id=f"c-{n}",
            model_version=str(v.version),
            job_name=f"job-{n}",
            metrics={"roc_auc": 0.7},
        )

    def events[E: PipelineEvent](self, kind: type[E]) -> list[E]:
        return [e for e in self.bus.events if isinstance(e, kind)]

    def started(self, version: int) -> int:
        return sum(1 for e in self.events(DeploymentStarted) if e.model_version == str(version))

    def deploy_row(self, version: int) -> LineageRecord:
        row = self.lineage.get(DATASET, f"deploy:v{version}")
        assert row is not None
        return row

    def live(self, approved: ModelApproved) -> str:
        """Deploy ``approved`` and let CodeDeploy finish it; its deployment id."""
        self.queue.send(envelope(approved))
        self.queue.drain()
        deployment_id = str(
            self.deploy_row(int(approved.model_version)).attributes["deployment_id"]
        )
        self.deployer.end(deployment_id, "Succeeded")
        self.queue.send(codedeploy_end(deployment_id))
        self.queue.drain()
        return deployment_id


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        yield


@pytest.mark.usefixtures("aws")
def test_a_late_v2_never_replaces_v3(ledger: Ledger) -> None:
    w = World()
    w.live(w.register())  # v1 serves
    v2, v3 = w.register(), w.register()
    w.live(v3)  # v3's approval came first
    ledger.fault("deploy:ModelApproved", "v2 delivered after v3 went live")
    w.queue.send(envelope(v2))
    w.queue.drain()
    ledger.action("deploy: v3 rolled out (v2 late)", w.started(3))
    ledger.delivered("deploy: approvals and end events, v2 late", w.queue.sent, w.queue.accounted)
    assert w.deployer.serving == 3
    assert w.started(2) == 0
    assert w.deploy_row(2).status == "superseded"
    assert w.started(3) == 1
    assert w.queue.dead == []


@pytest.mark.usefixtures("aws")
def test_an_approval_rejected_since_its_event_was_sent_is_not_rolled_out(ledger: Ledger) -> None:
    w = World()
    w.live(w.register())
    v2 = w.register()
    w.registry.set_status(DATASET, 2, "Rejected", "a reviewer turned it down")
    ledger.fault("deploy:ModelApproved", "delivered after its version was rejected")
    w.queue.send(envelope(v2))
    w.queue.drain()
    ledger.delivered(
        "deploy: approval of a since-rejected version", w.queue.sent, w.queue.accounted
    )
    assert w.started(2) == 0
    assert w.deployer.serving == 1
    assert w.deploy_row(2).status == "superseded"


@pytest.mark.usefixtures("aws")
def test_an_approval_during_a_rollout_waits_for_its_end_without_burning_retries(
    ledger: Ledger,
) -> None:
    """CodeDeploy refuses v3 and v4 while v2 rolls out. Neither message is retried into
    the DLQ: each is done at its first receive, and v2's end starts the newest, v4."""
    w = World()
    w.live(w.register())
    w.queue.send(envelope(w.register()))
    w.queue.drain()
    d2 = str(w.deploy_row(2).attributes["deployment_id"])
    approvals = []
    for _ in range(2):  # v3, then v4, approved while v2 rolls out
        approved = w.register()
        approvals.append(approved)
        refused = w.deployer.refused
        w.queue.send(envelope(approved))
        assert w.queue.receive_one(), "a wait is not a failure"
        if w.deployer.refused > refused:
            ledger.fault(
                "codedeploy:CreateDeployment", "refused: the group has an active deployment"
            )
    v3, v4 = approvals
    receives = {m.body: m.receives for m in w.queue.done}
    assert receives[envelope(v3)] == receives[envelope(v4)] == 1
    assert w.deployer.refused == 2
    assert (w.deploy_row(3).status, w.deploy_row(4).status) == ("waiting", "waiting")
    w.deployer.end(d2, "Succeeded")
    w.queue.send(codedeploy_end(d2))
    w.queue.drain()
    d4 = str(w.deploy_row(4).attributes["deployment_id"])
    w.deployer.end(d4, "Succeeded")
    w.queue.send(codedeploy_end(d4))
    # The approvals come back anyway (a duplicate delivery): nothing starts twice.
    w.queue.send(envelope(v3))
    w.queue.send(envelope(v4))
    w.queue.drain()
    ledger.action("deploy: v4 rolled out after waiting", w.started(4))
    ledger.action("deploy: v4 completed after waiting", len(w.events(DeploymentCompleted)) - 2)
    ledger.delivered("deploy: approvals during a rollout", w.queue.sent, w.queue.accounted)
    assert w.queue.dead == []
    assert w.started(4) == 1
    assert w.started(3) == 0
    assert w.deploy_row(3).status == "superseded"
    assert w.deployer.serving == 4
    assert [e.model_version for e in w.events(DeploymentCompleted)] == ["1", "2", "4"]


@pytest.mark.usefixtures("aws")
def test_an_end_event_that_comes_before_its_id_is_recorded_is_not_dropped(
    ledger: Ledger,
) -> None:
    """An all-at-once shift ends in seconds: CodeDeploy's SUCCESS is handled by another
    invocation while the first is still between CreateDeployment and its row write."""
    w = World()
    approved = w.register()

    def end_at_once(deployment_id: str) -> None:
        ledger.fault("deploy:end-event", "delivered before the deployment id was recorded")
        w.deployer.end(deployment_id, "Succeeded")
        w.queue.send(codedeploy_end(deployment_id))
        w.queue.receive_one()

    w.deployer.on_created = end_at_once
    w.queue.send(envelope(approved))
    w.queue.receive_one()
    w.deployer.on_created = None
    w.queue.drain()
    completed = w.events(DeploymentCompleted)
    ledger.action("deploy: v1 completed (end before id)", len(completed))
    ledger.delivered(
        "deploy: approval and its early end", w.queue.sent, len(completed) + w.started(1)
    )
    assert [e.model_version for e in completed] == ["1"]
    assert w.started(1) == 1
    row = w.deploy_row(1)
    assert row.status == "completed"
    assert row.attributes["deployment_id"] == completed[0].deployment_id


@pytest.mark.usefixtures("aws")
def test_an_end_is_what_codedeploy_says_not_what_the_message_says(ledger: Ledger) -> None:
    w = World()
    w.live(w.register())
    w.queue.send(envelope(w.register()))
    w.queue.drain()
    d2 = str(w.deploy_row(2).attributes["deployment_id"])
    ledger.fault("deploy:end-event", "SUCCESS for a deployment still in progress")
    w.queue.send(codedeploy_end(d2, "SUCCESS"))
    assert not w.queue.receive_one()  # retried, not finished on the message's word
    assert w.deploy_row(2).status == "started"
    w.deployer.end(d2, "RolledBack")  # then its alarm fires
    ledger.fault("deploy:end-event", "SUCCESS for a deployment CodeDeploy rolled back")
    w.queue.drain()
    rolled = w.events(DeploymentRolledBack)
    ledger.action("deploy: v2 rolled back (end confirmed)", len(rolled))
    ledger.delivered(
        "deploy: end events checked with GetDeployment", w.queue.sent, w.queue.accounted
    )
    assert len(w.events(DeploymentCompleted)) == 1  # v1's only
    assert [(e.model_version, e.restored_version) for e in rolled] == [("2", "1")]
    assert w.deploy_row(2).status == "rolled_back"
    assert w.registry.champion(DATASET).version == 1  # type: ignore[union-attr]


# -- deploy.on_drift: a crash or a refusal at every step ---------------------------------

BOUNDARIES = [
    "deployer.rollback refused",
    "after deployer.rollback",
    "after registry.set_status",
    "after lineage.put_if_absent",
    "bus.publish refused",
    "after bus.publish",
]


class CrashingLineage(MemoryLineage):
    crash_on_put: str | None = None

    def put_if_absent(self, record: LineageRecord) -> bool:
        wrote = super().put_if_absent(record)
        if self.crash_on_put is not None and record.record_id.startswith(self.crash_on_put):
            self.crash_on_put = None
            raise Crash("after lineage.put_if_absent")
        return wrote


@pytest.mark.usefixtures("aws")
@pytest.mark.parametrize("boundary", BOUNDARIES)
def test_a_drift_rollback_interrupted_at_any_step_is_done_once_on_redelivery(
    boundary: str, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The redelivery comes after the claim's window (0 here): it takes the claim over.
    w = World(claim_seconds=0)
    w.lineage = CrashingLineage()
    w.svc = DeployService(w.deployer, w.registry, w.bus, w.lineage, claim_seconds=0)
    w.queue = DeployQueue(w.svc)
    w.live(w.register())
    w.live(w.register())  # v2 serves, v1 is the previous approved version

    def after(where: str, original: Callable[..., Any]) -> Callable[..., Any]:
        armed = [True]

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            out = original(*args, **kwargs)
            if armed[0]:
                armed[0] = False
                raise Crash(where)
            return out

        return wrapped

    if boundary == "deployer.rollback refused":
        w.deployer.fail_rollback = 1
    elif boundary == "after deployer.rollback":
        monkeypatch.setattr(w.deployer, "rollback", after(boundary, w.deployer.rollback))
    elif boundary == "after registry.set_status":
        monkeypatch.setattr(w.registry, "set_status", after(boundary, w.registry.set_status))
    elif boundary == "after lineage.put_if_absent":
        w.lineage.crash_on_put = "rollback:"
    elif boundary == "bus.publish refused":
        w.bus.fail_times = 1
    else:
        monkeypatch.setattr(w.bus, "publish", after(boundary, w.bus.publish))
    drift = DriftDetected(
        dataset=DATASET,
        correlation_id="drift-customers-c9",
        model_version="2",
        drifted_columns=["age"],
        drift_share=0.6,
        action="rollback",
        check_id="c9",
    )
    ledger.fault(f"deploy.on_drift:{boundary}", "crash" if "after" in boundary else "refused call")
    w.queue.send(envelope(drift))
    w.queue.send(envelope(drift))  # and EventBridge delivers it twice
    w.queue.drain()
    rollbacks = [r for r in w.lineage.list(DATASET) if r.kind == "rollback"]
    events = w.events(DeploymentRolledBack)
    ledger.action(
        f"deploy.on_drift ({boundary}): traffic moved back to v1", w.deployer.moves.count(1) - 1
    )
    ledger.action(f"deploy.on_drift ({boundary}): rollback recorded", len(rollbacks))
    ledger.action(
        f"deploy.on_drift ({boundary}): DeploymentRolledBack, distinct event ids",
        len({e.event_id for e in events}),
    )
    ledger.delivered(f"deploy.on_drift ({boundary})", w.queue.sent, w.queue.accounted)
    assert w.queue.dead == []
    assert w.deployer.serving == 1
    assert w.deployer.moves == [1, 2, 1]  # one move back, never one version further
    assert len(rollbacks) == 1
    assert rollbacks[0].attributes["to_version"] == 1
    assert len({e.event_id for e in events}) == 1
    # Only a crash after the event went out sends it again, with the same id.
    assert len(events) == (2 if boundary == "after bus.publish" else 1)
    versions = {v.version: v.status for v in w.registry.versions(DATASET)}
    assert versions == {1: "Approved", 2: "Rejected"}
    row = w.lineage.get(DATASET, "drift-rollback:c9")
    assert row is not None
    assert row.status == "done"


@pytest.mark.usefixtures("aws")
def test_an_azure_rollout_s_end_is_not_lost_when_recording_it_fails(ledger: Ledger) -> None:
    """The Azure deployer saves a rollout's end in its own row when a check finds it; if
    deploy then fails (the bus refuses DeploymentCompleted), the check comes back and
    the deployer's row, now ended, says nothing more: the end must be read from it."""
    w = World()
    weights, minutes, timer, clock = Weights(), Minutes(), Timer(), Clock()
    deployer = SteppedRolloutDeployer(
        w.lineage, weights, minutes, timer, alarm_prefix=PREFIX, clock=clock
    )
    w.svc = DeployService(deployer, w.registry, w.bus, w.lineage)
    w.queue = DeployQueue(w.svc)
    w.queue.send(envelope(w.register()))
    w.queue.drain()
    [(_, check)] = timer.sent
    clock.now += timedelta(seconds=1)
    ledger.fault("bus:PutEvents", "refused once, after the rollout check saved its end")
    w.bus.fail_times = 1
    w.queue.send(check)
    w.queue.drain()
    completed = w.events(DeploymentCompleted)
    ledger.action("deploy (Azure): v1 completed after a failed recording", len(completed))
    ledger.delivered(
        "deploy (Azure): approval and its rollout check", w.queue.sent, w.queue.accounted
    )
    assert w.queue.dead == []
    assert [e.model_version for e in completed] == ["1"]
    assert w.deploy_row(1).status == "completed"
