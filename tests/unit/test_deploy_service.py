"""Deploy with the local deployer and the local router in-process: real trained models,
the moto model registry, in-memory storage and lineage."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from dhow_local.router import Router
from dhow_local.serving import LocalRouterDeployer, RouterState, load_router_state
from fastapi.testclient import TestClient
from moto import mock_aws

from shared.adapters.aws import aws_client
from shared.adapters.sagemaker_registry import SageMakerModelRegistry
from shared.artifacts import ARTIFACT_SHA256, sha256_file
from shared.canary import rollout_schedule
from shared.events import (
    DeploymentCompleted,
    DeploymentRolledBack,
    DeploymentStarted,
    ModelApproved,
    ObjectRef,
)
from shared.services.deploy import DeployService, NothingToRollBackTo
from shared.settings import Settings
from shared.specs import load_spec
from shared.triggers import CODEDEPLOY_STATE_CHANGE, parse_deployment_state_change
from shared.validation import validate_file
from tests.helpers import (
    ROOT,
    MemoryBus,
    MemoryLineage,
    MemoryStore,
    broken_model,
    train_artifact,
)
from tests.unit.test_serving import ROW

MODELS, PREFIX = "dhow-t-models", "dhow-t-serve-"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("deploy-artifacts")
    run = validate_file(
        ROOT / "localstack/samples/customers.csv", "csv", load_spec("customers"), out_dir=base
    )
    assert run.curated is not None
    good = train_artifact(base / "good", run.curated, n_estimators=30, max_depth=2)
    broken = base / "broken.tar.gz"
    broken.write_bytes(broken_model(good.read_bytes()))
    return {"good": good, "broken": broken}


class World:
    def __init__(self, artifacts: dict[str, Path], specs: Path) -> None:
        self.artifacts = artifacts
        self.store, self.bus, self.lineage = MemoryStore(), MemoryBus(), MemoryLineage()
        self.registry = SageMakerModelRegistry(aws_client("sagemaker", Settings()), stage="t")
        self.svc = DeployService(
            LocalRouterDeployer(self.lineage), self.registry, self.bus, self.lineage,
            specs_dir=specs,
        )  # fmt: skip
        self.published: list[dict[str, Any]] = []
        self.router = Router(
            self.store,
            self.registry,
            self.lineage,
            capture_container="dhow-t-capture",
            serve_prefix=PREFIX,
            publish_state_change=self.published.append,
            specs_dir=str(specs),
            minute_seconds=1.0,
        )
        self.http = TestClient(self.router)  # no `with`: the test drives the controller

    def approve(self, kind: str) -> ModelApproved:
        n = len(self.registry.versions("customers")) + 1
        ref = ObjectRef(container=MODELS, key=f"models/customers/job-{n}/output/model.tar.gz")
        self.store.put_bytes(ref, self.artifacts[kind].read_bytes())
        v = self.registry.register(
            "customers",
            artifact=f"s3://{ref.uri}",
            image="local:shared.trainer",
            metrics={"roc_auc": 0.7},
            lineage={ARTIFACT_SHA256: sha256_file(self.artifacts[kind])},
            status="Approved",
        )
        return ModelApproved(
            dataset="customers",
            correlation_id=f"c-{n}",
            model_version=str(v.version),
            job_name=f"job-{n}",
            metrics={"roc_auc": 0.7},
        )

    def predict(self) -> Any:
        return self.http.post("/datasets/customers/predict", json=ROW)

    def deliver_platform_events(self) -> list[Any]:
        """What EventBridge would hand the deploy function for each router event."""
        outcomes = []
        for detail in self.published:
            envelope = {
                "source": "aws.codedeploy",
                "detail-type": CODEDEPLOY_STATE_CHANGE,
                "detail": detail,
            }
            change = parse_deployment_state_change(json.dumps(envelope), PREFIX)
            assert change is not None
            outcomes.append(self.svc.on_state_change(change))
        self.published.clear()
        return outcomes


@pytest.fixture
def world(
    artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[World]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    spec = yaml.safe_load((ROOT / "shared/specs/customers.yaml").read_text())
    spec["serving"].update(
        {"strategy": "canary", "step_percent": 10, "interval_minutes": 5, "min_requests": 20}
    )
    (tmp_path / "customers.yaml").write_text(yaml.safe_dump(spec))
    with mock_aws():
        yield World(artifacts, tmp_path)


def test_first_model_goes_live_at_once_and_completes(world: World) -> None:
    assert world.predict().status_code == 503  # nothing deployed yet, and it says so
    out = world.svc.on_model_approved(world.approve("good"))
    assert out.status == "started"
    [started] = world.bus.events
    assert isinstance(started, DeploymentStarted)
    assert (started.strategy, started.previous_version) == ("all_at_once", None)
    world.router.tick("customers")
    [done] = world.deliver_platform_events()
    assert done.status == "completed"
    completed = world.bus.events[-1]
    assert isinstance(completed, DeploymentCompleted)
    assert completed.traffic == {"1": 1.0}
    r = world.predict()
    assert r.status_code == 200
    assert r.json()["model_version"] == "1"
    assert world.svc.status("customers")["traffic"] == {"1": 1.0}


def test_a_broken_canary_rolls_back_by_itself_failing_only_its_share(world: World) -> None:
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    world.deliver_platform_events()
    approved = world.approve("broken")
    assert world.svc.on_model_approved(approved).status == "started"
    assert world.svc.on_model_approved(approved).status == "duplicate"  # a redelivery
    started = world.bus.events[-1]
    assert isinstance(started, DeploymentStarted)
    assert (started.strategy, started.previous_version) == ("canary", "1")
    # The router's schedule runs on the wall clock (a minute is 1 s here); its ticks are
    # held at the rollout's start, so a loaded machine taking over a second for the 200
    # requests does not step the canary to 100% before its alarm is judged.
    start = load_router_state(world.lineage, "customers")[0].started_at
    assert start is not None
    world.router.tick("customers", now=start)  # the router picks the rollout up
    answers = [world.predict() for _ in range(40)]
    world.router.tick("customers", now=start)
    # 4 failures, but only 4 of the candidate's own requests: fewer than min_requests
    # (20) say nothing, in the cloud's alarm as here.
    assert world.published == []
    answers += [world.predict() for _ in range(160)]
    failed = [a for a in answers if a.status_code != 200]
    # Exactly the canary's 10%, and every failure is the canary's.
    assert len(failed) == 20
    assert all(a.headers["x-dhow-routed-version"] == "2" for a in failed)
    assert all(a.json()["model_version"] == "1" for a in answers if a.status_code == 200)
    world.router.tick("customers", now=start)  # 20 of its 20 requests failed: the alarm fires
    [rolled] = world.deliver_platform_events()
    assert rolled.status == "rolled_back"
    event = world.bus.events[-1]
    assert isinstance(event, DeploymentRolledBack)
    assert (event.model_version, event.restored_version) == ("2", "1")
    assert event.reason.startswith(f"alarm {PREFIX}customers-errors: 20 of 20 requests failed")
    assert event.requested_by is None
    assert world.registry.champion("customers").version == 1  # type: ignore[union-attr]
    assert [world.predict().status_code for _ in range(20)] == [200] * 20
    latest = world.svc.status("customers")["history"][0]
    assert latest["status"] == "rolled_back"
    assert latest["reason"] == event.reason  # the alarm's own words, as the event says


def test_a_candidate_failing_40_percent_of_its_share_is_rolled_back(world: World) -> None:
    """Over the alias as a whole, 8 failures of 220 answers are 3.6%, under the 5%
    threshold; on the candidate's own 20 requests they are 40%."""
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    world.deliver_platform_events()
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    for _ in range(200):
        world.router.observe("customers", 1, 200, 5.0)
    for i in range(20):
        world.router.observe("customers", 2, 500 if i % 5 < 2 else 200, 5.0)
    world.router.tick("customers")
    [rolled] = world.deliver_platform_events()
    assert rolled.status == "rolled_back"
    event = world.bus.events[-1]
    assert isinstance(event, DeploymentRolledBack)
    assert "8 of 20 requests failed (40.0% > 5.0%)" in event.reason
    assert world.svc.status("customers")["traffic"] == {"1": 1.0}


def test_a_slow_candidate_is_rolled_back_on_its_own_p99(world: World) -> None:
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    world.deliver_platform_events()
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    for _ in range(300):
        world.router.observe("customers", 1, 200, 5.0)  # the stable version is fast
    for ms in [100.0] * 19 + [2500.0]:
        world.router.observe("customers", 2, 200, ms)
    world.router.tick("customers")
    [rolled] = world.deliver_platform_events()
    assert rolled.status == "rolled_back"
    event = world.bus.events[-1]
    assert isinstance(event, DeploymentRolledBack)
    assert "customers-p99-latency: p99 2500 ms over 20 requests > 2000 ms" in event.reason


def test_a_good_canary_completes_on_schedule(world: World) -> None:
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    world.deliver_platform_events()
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    assert world.svc.status("customers")["traffic"] == {"1": 0.9, "2": 0.1}
    assert all(world.predict().status_code == 200 for _ in range(30))
    state = RouterState.model_validate(world.lineage.get("customers", "serving:router").attributes)  # type: ignore[union-attr]
    assert state.started_at is not None
    world.router.tick("customers", now=state.started_at + timedelta(seconds=4))
    assert world.published == []  # still inside the 5-"minute" canary
    world.router.tick("customers", now=state.started_at + timedelta(seconds=6))
    [done] = world.deliver_platform_events()
    assert done.status == "completed"
    assert world.svc.status("customers")["traffic"] == {"2": 1.0}


def test_manual_rollback_is_recorded_with_who_and_why(world: World) -> None:
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    world.deliver_platform_events()
    with pytest.raises(NothingToRollBackTo):
        world.svc.rollback("customers", None, "amal", "nothing else exists")
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers", now=None)
    out = world.svc.rollback("customers", None, "amal", "customer complaints")
    assert out.model_version == 1
    event = world.bus.events[-1]
    assert isinstance(event, DeploymentRolledBack)
    assert event.requested_by == "amal"
    assert "customer complaints" in event.reason
    assert world.svc.status("customers")["traffic"] == {"1": 1.0}
    world.router.tick("customers")
    assert world.predict().json()["model_version"] == "1"
    [row] = [r for r in world.lineage.list("customers") if r.kind == "rollback"]
    assert row.attributes["requested_by"] == "amal"
    assert row.attributes["to_version"] == 1
    assert world.registry.versions("customers")[0].status == "Rejected"


def test_rollout_schedules_follow_codedeploy_configs() -> None:
    assert rollout_schedule("canary", 10, 5) == [(0.0, 0.1), (5.0, 1.0)]
    linear = rollout_schedule("linear", 25, 2)
    assert linear == [(0.0, 0.25), (2.0, 0.5), (4.0, 0.75), (6.0, 1.0)]
    assert rollout_schedule("all_at_once", 10, 5) == [(0.0, 1.0)]


def test_an_approval_during_a_rollout_waits_and_starts_when_it_ends(world: World) -> None:
    from shared.errors import WorkInProgress

    world.svc.on_model_approved(world.approve("good"))  # v1 rolling out, not yet ticked
    second = world.approve("good")
    with pytest.raises(WorkInProgress):
        world.svc.on_model_approved(second)
    assert world.lineage.get("customers", "deploy:v2").status == "waiting"  # type: ignore[union-attr]
    world.router.tick("customers")
    world.deliver_platform_events()
    # The end of v1's rollout starts the waiting v2 at once, not its redelivery.
    started = world.bus.events[-1]
    assert isinstance(started, DeploymentStarted)
    assert started.model_version == "2"
    assert world.svc.on_model_approved(second).status == "duplicate"


def test_a_drift_rollback_goes_back_one_version_once_per_check(world: World) -> None:
    from shared.events import DriftDetected

    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    world.deliver_platform_events()
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers", now=None)
    drift = DriftDetected(
        dataset="customers",
        correlation_id="drift-customers-c9",
        model_version="2",
        drifted_columns=["age", "emirate"],
        drift_share=0.6,
        action="rollback",
        check_id="c9",
    )
    out = world.svc.on_drift(drift)
    assert out.model_version == 1
    rolled = world.bus.events[-1]
    assert isinstance(rolled, DeploymentRolledBack)
    assert rolled.requested_by == "drift"
    assert "drift in age, emirate (check c9" in rolled.reason
    # Delivered again: it must not go back one version further.
    assert world.svc.on_drift(drift).status == "duplicate"
    assert world.svc.status("customers")["traffic"] == {"1": 1.0}
    # Nothing older to go to: recorded, not retried forever.
    again = drift.model_copy(update={"check_id": "c10"})
    assert world.svc.on_drift(again).status == "ignored"
    row = world.lineage.get("customers", "drift-rollback:c10")
    assert row is not None
    assert row.status == "failed"


def test_a_cold_candidate_s_model_load_is_not_its_p99(
    world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The router judges the latency the app measures, as the cloud's alarm does: the
    candidate's first request loads its model, and that load is not the candidate's p99
    (at the min_requests floor the nearest-rank p99 is the slowest request)."""
    import time

    budget_ms = yaml.safe_load((tmp_path / "customers.yaml").read_text())["serving"][
        "p99_latency_ms"
    ]
    from shared.serving import load_model_version as load

    def slow_load(store: Any, registry: Any, dataset: str, version: int | None) -> Any:
        if version == 2:
            time.sleep(1.5 * budget_ms / 1000)  # the candidate's cold start: over budget
        return load(store, registry, dataset, version)

    # Where the serve app looks its loader up.
    monkeypatch.setattr("shared.serve_app.load_model_version", slow_load)
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    world.deliver_platform_events()
    world.svc.on_model_approved(world.approve("good"))
    world.router.tick("customers")
    state = RouterState.model_validate(world.lineage.get("customers", "serving:router").attributes)  # type: ignore[union-attr]
    assert state.started_at is not None
    answers = [world.predict() for _ in range(200)]
    assert all(a.status_code == 200 for a in answers)
    assert sum(a.headers["x-dhow-routed-version"] == "2" for a in answers) == 20
    # Judged inside the 5-"minute" canary, however long the requests took here.
    world.router.tick("customers", now=state.started_at + timedelta(seconds=1))
    assert world.published == []  # 20 healthy answers: no alarm, no rollback
    assert world.svc.status("customers")["traffic"] == {"1": 0.9, "2": 0.1}
