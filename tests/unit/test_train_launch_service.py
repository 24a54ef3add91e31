"""Train-launch with a recording launcher: what goes into the job, and what comes out."""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.adapters.sagemaker_training import GpuQuotaUnavailable
from shared.events import DatasetValidated, ObjectRef, TrainingCompleted, TrainingLaunched
from shared.ports import LaunchedTraining, TrainingJobRequest, TrainingLauncher
from shared.services.train_launch import TrainLaunchService
from shared.specs import SpecCatalog, load_spec
from tests.helpers import MemoryBus, MemoryLineage

ROOT = Path(__file__).resolve().parents[2]
EVENT = DatasetValidated(
    dataset="customers",
    correlation_id="u-1",
    sha256="ab" * 32,
    rows=400,
    # The version validate announced: the shipped spec's.
    spec_version=load_spec("customers").spec_version,
    curated=ObjectRef(container="c", key="datasets/customers/x/data.parquet"),
)


class Recording(TrainingLauncher):
    def __init__(self, fail: Exception | None = None) -> None:
        self.requests: list[TrainingJobRequest] = []
        self.fail = fail

    def launch(self, request: TrainingJobRequest) -> LaunchedTraining:
        if self.fail:
            raise self.fail
        created = request.run_tag not in {r.run_tag for r in self.requests}
        self.requests.append(request)
        return LaunchedTraining(
            job_name=f"job-{request.run_tag or 'auto'}",
            instance_type="ml.g5.xlarge",
            created=created,
        )


def test_the_request_carries_the_spec_and_the_lineage_facts() -> None:
    launcher, bus = Recording(), MemoryBus()
    TrainLaunchService(launcher, bus, MemoryLineage(), backend="sagemaker").handle(EVENT)
    [req] = launcher.requests
    assert (req.target, req.task) == ("churned", "classification")
    assert req.instance_types == ("ml.g5.xlarge", "ml.g4dn.xlarge")
    assert req.hyperparameters["drop_columns"] == "customer_id"  # the spec's unique column
    assert req.hyperparameters["dhow_sha256"] == "ab" * 32
    assert req.hyperparameters["n_estimators"] == "200"
    [launched] = bus.events
    assert isinstance(launched, TrainingLaunched)
    assert launched.instance_type == "ml.g5.xlarge"


def test_a_duplicate_launch_announces_nothing() -> None:
    launcher, bus = Recording(), MemoryBus()
    svc = TrainLaunchService(launcher, bus, MemoryLineage(), backend="local")
    svc.handle(EVENT)
    assert svc.handle(EVENT).status == "duplicate"
    assert len(bus.events) == 1


def test_spec_entrypoint_and_image_reach_the_request(tmp_path: Path) -> None:
    spec = yaml.safe_load((ROOT / "shared/specs/customers.yaml").read_text())
    spec["training"] |= {"entrypoint": "acme.trainer", "image": "acme:1"}
    (tmp_path / "customers.yaml").write_text(yaml.safe_dump(spec))
    launcher = Recording()
    # Validated under the edited spec: the event names its version.
    event = EVENT.model_copy(update={"spec_version": load_spec("customers", tmp_path).spec_version})
    TrainLaunchService(
        launcher, MemoryBus(), MemoryLineage(), backend="sagemaker", specs=SpecCatalog(tmp_path)
    ).handle(event, instance_type="ml.p4d.24xlarge")
    [req] = launcher.requests
    assert (req.entrypoint, req.image, req.instance_types) == (
        "acme.trainer",
        "acme:1",
        ("ml.p4d.24xlarge",),
    )


def test_no_gpu_quota_is_answered_with_the_quota_to_raise() -> None:
    error = GpuQuotaUnavailable(
        "no training capacity for customers: ml.g5.xlarge: quota "
        "'ml.g5.xlarge for training job usage' (L-1) is 0",
        hint="raise one of these quotas in Service Quotas (me-central-1)",
    )
    bus = MemoryBus()
    out = TrainLaunchService(
        Recording(fail=error), bus, MemoryLineage(), backend="sagemaker"
    ).handle(EVENT)
    assert out.status == "no_capacity"
    [failed] = bus.events
    assert isinstance(failed, TrainingCompleted)
    assert failed.status == "Failed"
    assert failed.reason is not None
    assert "'ml.g5.xlarge for training job usage' (L-1)" in failed.reason


def _validated_row(lineage: MemoryLineage, sha: str, at: str) -> None:
    from datetime import datetime

    from shared.ports import LineageRecord

    when = datetime.fromisoformat(at)
    lineage.put_if_absent(
        LineageRecord(
            dataset="customers",
            record_id=f"validate:{sha}",
            kind="validate",
            status="validated",
            attributes={
                "sha256": sha,
                "spec_version": EVENT.spec_version,
                "curated": f"s3://c/datasets/customers/{sha}/data.parquet",
                "rows": 400,
            },
            created_at=when,
            updated_at=when,
        )
    )


def test_a_drift_retrain_trains_the_newest_validated_version_once() -> None:
    from shared.events import DriftDetected

    launcher, bus, lineage = Recording(), MemoryBus(), MemoryLineage()
    _validated_row(lineage, "aa" * 32, "2026-11-20T10:00:00+00:00")
    _validated_row(lineage, "bb" * 32, "2026-11-22T10:00:00+00:00")
    svc = TrainLaunchService(launcher, bus, lineage, backend="local")
    drift = DriftDetected(
        dataset="customers",
        correlation_id="drift-customers-c1",
        model_version="1",
        drifted_columns=["age"],
        drift_share=0.6,
        action="retrain",
        check_id="c1",
    )
    assert svc.on_drift(drift).status == "launched"
    assert svc.on_drift(drift).status == "duplicate"  # redelivered: one job per check
    req = launcher.requests[0]
    assert req.sha256 == "bb" * 32
    assert req.run_tag == "drift-c1"
    [row] = [r for r in lineage.list("customers") if r.kind == "train"]
    assert row.attributes["requested_by"] == "drift"
    assert row.attributes["correlation_id"] == "drift-customers-c1"


def test_a_drift_retrain_without_validated_data_says_what_to_do() -> None:
    import pytest

    from shared.errors import DhowError
    from shared.events import DriftDetected

    svc = TrainLaunchService(Recording(), MemoryBus(), MemoryLineage(), backend="local")
    drift = DriftDetected(
        dataset="customers", correlation_id="c", model_version="1",
        drifted_columns=["age"], drift_share=0.6, action="retrain", check_id="c2",
    )  # fmt: skip
    with pytest.raises(DhowError, match="no validated version") as err:
        svc.on_drift(drift)
    assert "dhow upload" in (err.value.hint or "")
