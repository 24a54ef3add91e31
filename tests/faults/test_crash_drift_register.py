"""Crashes at every step boundary of the drift check and of register, then the same
message delivered again: each must end with its action done exactly once.

A crash is the function dying, not an exception it could catch (a timeout, an OOM kill):
``Crash`` is a ``BaseException``, so no ``except Exception`` in the code swallows it. A
port is wrapped to die once, before or just after one of its calls (after: the call
reached the cloud, the function never learnt so). The redelivery is the same message,
later, as SQS hands it out again after its visibility timeout.

What is counted is what the pipeline's consumers act on. Both services' action events
carry ids derived from the work (the drift check id; the model version), and their
consumers claim by them: train-launch names the retrain job after the check id, deploy
claims ``drift-rollback:<check id>`` and its rollout per model version. So the action
is the set of distinct action events; a crash in the instant after an event went out
and before its row was written sends the same event again (no event bus deduplicates),
which the tests also check is the same event, not a second action.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from moto import mock_aws

from shared.adapters.aws import aws_client
from shared.adapters.sagemaker_registry import SageMakerModelRegistry
from shared.events import DriftChecked, DriftDetected, ModelApproved, TrainingCompleted
from shared.ports import LineageRecord
from shared.services.drift import POLICY_RECORD, drift_record_id
from shared.services.register import RegisterService
from shared.settings import Settings
from shared.specs import SpecCatalog, load_spec
from shared.validation import validate_file
from tests.faults.ledger import Ledger
from tests.helpers import ROOT, MemoryBus, MemoryLineage, MemoryStore, train_artifact
from tests.unit.test_drift_service import T0, World
from tests.unit.test_register_service import ended

VERDICTS = {"no_drift", "drift", "insufficient_data"}  # a drift check's row once it is done


class Crash(BaseException):
    """The function died here (an injected crash)."""


def crash_once(
    monkeypatch: pytest.MonkeyPatch,
    obj: object,
    method: str,
    when: Callable[..., bool],
    *,
    after: bool,
) -> list[str]:
    """Make ``obj.method`` kill the function once, on the first call ``when`` accepts:
    before the call, or just after it returned. Returns the log of crashes it caused."""
    real = getattr(obj, method)
    crashed: list[str] = []

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if not crashed and when(*args, **kwargs):
            crashed.append(f"{'after' if after else 'before'} {method}")
            if after:
                real(*args, **kwargs)
            raise Crash(crashed[-1])
        return real(*args, **kwargs)

    monkeypatch.setattr(obj, method, wrapped)
    return crashed


def always(*_: Any, **__: Any) -> bool:
    return True


def record_is(predicate: Callable[[LineageRecord], bool]) -> Callable[..., bool]:
    return lambda record, *_, **__: predicate(record)


def event_is(kind: type[Any]) -> Callable[..., bool]:
    return lambda event, *_, **__: isinstance(event, kind)


# -- drift -------------------------------------------------------------------------------

# Each boundary: the port, its method, which call, and whether the crash comes after it.
DRIFT_BOUNDARIES: dict[str, tuple[str, str, Callable[..., bool], bool]] = {
    # The verdict is computed; the check dies as it reads the cooldown.
    "after-compute": (
        "lineage",
        "get",
        lambda dataset, record_id, *_, **__: record_id == POLICY_RECORD,
        False,
    ),
    # The cooldown is taken (the conditional write went through), nothing else.
    "after-cooldown": (
        "lineage",
        "put_if_absent",
        record_is(lambda r: r.record_id == POLICY_RECORD),
        True,
    ),
    # Report and summary are written.
    "after-report": (
        "store",
        "put_bytes",
        lambda ref, *_, **__: ref.key.endswith("/summary.json"),
        True,
    ),
    "after-metrics": ("metrics", "put", always, True),
    "after-alert": ("alerts", "send", always, True),
    "after-checked-event": ("bus", "publish", event_is(DriftChecked), True),
    "after-action-event": ("bus", "publish", event_is(DriftDetected), True),
    # The row has its verdict; the message was never deleted (the ack was lost).
    "after-record": (
        "lineage",
        "replace",
        record_is(lambda r: r.record_id.startswith("drift:") and r.status in VERDICTS),
        True,
    ),
}


@pytest.fixture(scope="module")
def drift_reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    sample = ROOT / "localstack/samples/customers.csv"
    run = validate_file(sample, "csv", load_spec("customers"), out_dir=tmp_path_factory.mktemp("r"))
    assert run.reference is not None
    return run.reference


def drift_world(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, reference: Path, policy: str
) -> World:
    spec = yaml.safe_load((ROOT / "shared/specs/customers.yaml").read_text())
    spec["drift"] |= {"policy": policy, "cooldown_hours": 6, "min_rows": 200}
    (tmp_path / "customers.yaml").write_text(yaml.safe_dump(spec))
    # evidently's page is tested in tests/unit/test_drift_service.py; here only where it is
    # written counts, and a real page costs ~20 s a check on a shared machine.
    monkeypatch.setattr(
        "shared.drift_report.render_html", lambda *a, **k: b"<html>drift report</html>"
    )
    return World(tmp_path, reference)


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        yield


@pytest.mark.parametrize("policy", ["retrain", "rollback"])
@pytest.mark.parametrize("boundary", list(DRIFT_BOUNDARIES))
def test_a_drift_check_crashed_at_any_step_acts_exactly_once_on_redelivery(
    boundary: str,
    policy: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    drift_reference: Path,
    aws: None,
    ledger: Ledger,
) -> None:
    world = drift_world(monkeypatch, tmp_path, drift_reference, policy)
    world.capture(world.shifted, T0 - timedelta(hours=1))
    scheduled = T0  # the schedule's time for this run, the same in every delivery
    port, method, when, after = DRIFT_BOUNDARIES[boundary]
    target = {
        "lineage": world.lineage,
        "store": world.store,
        "metrics": world.svc._metrics,
        "alerts": world.svc._alerts,
        "bus": world.bus,
    }[port]
    crashed = crash_once(monkeypatch, target, method, when, after=after)

    with pytest.raises(Crash):
        world.svc.check("customers", scheduled_at=scheduled)
    ledger.fault(f"drift:{boundary}", f"crash {crashed[0]} ({policy} policy)")
    # SQS hands the message out again after the drift queue's visibility timeout.
    world.now = T0 + timedelta(minutes=90)
    out = world.svc.check("customers", scheduled_at=scheduled)

    acted = [e for e in world.events(DriftDetected) if e.action == policy]
    ids = {e.event_id for e in acted}
    row = world.lineage.get("customers", drift_record_id(out.check_id))
    ledger.action(f"drift {policy} requested, crash {boundary}", len(ids))
    ledger.delivered(
        f"drift check request, crash {boundary}",
        sent=1,
        accounted=int(row is not None and row.status in VERDICTS),
    )
    assert len(ids) == 1, [e.action for e in world.events(DriftDetected)]
    assert out.action == policy
    assert row is not None
    assert (row.status, row.attributes["action"]) == ("drift", policy)
    # The same event again only where the crash came after it went out.
    assert len(acted) == (2 if boundary == "after-action-event" else 1)
    # One check, one alert, except where the crash came right after SNS took it.
    assert len(world.alerts()) == (2 if boundary == "after-alert" else 1)
    policy_row = world.lineage.get("customers", POLICY_RECORD)
    assert policy_row is not None
    assert policy_row.attributes["check_id"] == out.check_id


def test_a_finished_check_redelivered_is_answered_not_redone(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, drift_reference: Path, aws: None
) -> None:
    world = drift_world(monkeypatch, tmp_path, drift_reference, "retrain")
    world.capture(world.shifted, T0 - timedelta(hours=1))
    first = world.svc.check("customers", scheduled_at=T0)
    world.now = T0 + timedelta(minutes=90)
    again = world.svc.check("customers", scheduled_at=T0)
    assert again.repeated
    assert not first.repeated
    assert (again.check_id, again.action, again.verdict) == (
        first.check_id,
        "retrain",
        first.verdict,
    )
    assert len(world.events(DriftDetected)) == 1
    assert len(world.alerts()) == 1


# -- register ----------------------------------------------------------------------------

REGISTER_BOUNDARIES: dict[str, tuple[str, str, Callable[..., bool], bool]] = {
    "after-claim": ("bus", "publish", event_is(TrainingCompleted), False),
    "after-completed-event": ("bus", "publish", event_is(TrainingCompleted), True),
    "after-gate": ("registry", "register", always, False),
    "after-registry-write": ("registry", "register", always, True),
    "after-approved-event": ("bus", "publish", event_is(ModelApproved), True),
    # The claim row says approved; the message was never deleted (the ack was lost).
    "after-complete": (
        "lineage",
        "replace",
        record_is(lambda r: r.status == "approved"),
        True,
    ),
}


@pytest.fixture(scope="module")
def good_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("model")
    run = validate_file(
        ROOT / "localstack/samples/customers.csv", "csv", load_spec("customers"), out_dir=base
    )
    assert run.curated is not None
    return train_artifact(
        base / "good", run.curated, n_estimators=200, max_depth=1, learning_rate=0.05
    )


@pytest.mark.parametrize("boundary", list(REGISTER_BOUNDARIES))
def test_register_crashed_at_any_step_makes_one_version_and_one_approval(
    boundary: str,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    good_model: Path,
    aws: None,
    ledger: Ledger,
) -> None:
    spec = yaml.safe_load((ROOT / "shared/specs/customers.yaml").read_text())
    spec["training"]["gate"] = {"metric": "roc_auc", "minimum": 0.3, "max_regression": 0.02}
    (tmp_path / "customers.yaml").write_text(yaml.safe_dump(spec))
    store, bus, lineage = MemoryStore(), MemoryBus(), MemoryLineage()
    registry = SageMakerModelRegistry(aws_client("sagemaker", Settings()), stage="t")
    # claim_seconds=0: the redelivery comes after the claim window (how long that window
    # is against the queue's real schedule is tests/faults/test_claims_and_crashes.py's).
    svc = RegisterService(
        store, bus, lineage, registry, specs=SpecCatalog(tmp_path), claim_seconds=0
    )
    # The jobs were labelled with the edited spec's version (see test_register_service).
    world = {"store": store, "spec_version": load_spec("customers", tmp_path).spec_version}
    # A champion first, so a retry that gated again would judge the model against itself.
    assert svc.handle(ended(world, "job-champion", good_model)).status == "approved"
    bus.events.clear()

    port, method, when, after = REGISTER_BOUNDARIES[boundary]
    target = {"bus": bus, "registry": registry, "lineage": lineage}[port]
    crashed = crash_once(monkeypatch, target, method, when, after=after)
    message = ended(world, "job-challenger", good_model)
    with pytest.raises(Crash):
        svc.handle(message)
    ledger.fault(f"register:{boundary}", f"crash {crashed[0]}")
    out = svc.handle(message)  # the same message, delivered again

    mine = [v for v in registry.versions("customers") if v.lineage["job_name"] == "job-challenger"]
    approved = [e for e in bus.events if isinstance(e, ModelApproved)]
    completed = [e for e in bus.events if isinstance(e, TrainingCompleted)]
    row = lineage.get("customers", "register:job-challenger")
    ledger.action(f"model version registered, crash {boundary}", len(mine))
    ledger.action(
        f"ModelApproved for the version, crash {boundary}", len({e.event_id for e in approved})
    )
    ledger.delivered(
        f"training job ended, crash {boundary}",
        sent=1,
        accounted=int(row is not None and row.status in {"approved", "rejected", "failed"}),
    )
    assert [v.version for v in mine] == [2]
    assert len({e.event_id for e in approved}) == 1
    assert {e.model_version for e in approved} == {"2"}
    assert {e.champion_version for e in approved} == {"1"}
    assert len(approved) == (2 if boundary == "after-approved-event" else 1)
    assert len(completed) == (2 if boundary == "after-completed-event" else 1)
    assert out.status == ("duplicate" if boundary == "after-complete" else "approved")
    assert row is not None
    assert (row.status, row.attributes.get("model_version")) == ("approved", 2)
