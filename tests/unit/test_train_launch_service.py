"""Train-launch with a recording launcher: what goes into the job, and what comes out."""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.adapters.sagemaker_training import GpuQuotaUnavailable
from shared.events import DatasetValidated, ObjectRef, TrainingCompleted, TrainingLaunched
from shared.ports import LaunchedTraining, TrainingJobRequest, TrainingLauncher
from shared.services.train_launch import TrainLaunchService
from tests.helpers import MemoryBus, MemoryLineage

ROOT = Path(__file__).resolve().parents[2]
EVENT = DatasetValidated(
    dataset="customers",
    correlation_id="u-1",
    sha256="ab" * 32,
    rows=400,
    spec_version="1+x",
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
    TrainLaunchService(
        launcher, MemoryBus(), MemoryLineage(), backend="sagemaker", specs_dir=tmp_path
    ).handle(EVENT, instance_type="ml.p4d.24xlarge")
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
