"""Register with real trainer artifacts, the moto model registry and in-memory ports."""

from __future__ import annotations

import copy
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from moto import mock_aws

from shared.adapters.aws import aws_client
from shared.adapters.sagemaker_registry import SageMakerModelRegistry
from shared.cloud_facts import value
from shared.events import ModelApproved, ModelRejected, ObjectRef, TrainingCompleted
from shared.services.register import RegisterService
from shared.settings import Settings
from shared.specs import SpecCatalog, load_spec
from shared.triggers import parse_training_state_change
from shared.validation import validate_file
from tests.helpers import MemoryBus, MemoryLineage, MemoryStore, load_event, train_artifact

ROOT = Path(__file__).resolve().parents[2]
MODELS = "dhow-t-models"


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("artifacts")
    run = validate_file(
        ROOT / "localstack/samples/customers.csv", "csv", load_spec("customers"), out_dir=base
    )
    assert run.curated is not None
    return {
        "good": train_artifact(
            base / "good", run.curated, n_estimators=200, max_depth=1, learning_rate=0.05
        ),
        # Weak by construction: the columns that carry the signal are withheld.
        "weak": train_artifact(
            base / "weak",
            run.curated,
            n_estimators=50,
            max_depth=2,
            drop_columns="customer_id,support_calls,tenure_months,has_mobile_app,segment",
        ),
    }


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[dict[str, Any]]:
    # A low minimum, so that a rejection here is for regressing against the champion.
    spec = yaml.safe_load((ROOT / "shared/specs/customers.yaml").read_text())
    spec["training"]["gate"] = {"metric": "roc_auc", "minimum": 0.3, "max_regression": 0.02}
    (tmp_path / "customers.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        store, bus, lineage = MemoryStore(), MemoryBus(), MemoryLineage()
        registry = SageMakerModelRegistry(aws_client("sagemaker", Settings()), stage="t")
        yield {
            "store": store,
            "bus": bus,
            "lineage": lineage,
            "registry": registry,
            "svc": RegisterService(store, bus, lineage, registry, specs=SpecCatalog(tmp_path)),
            # The version train-launch labelled the job with: the edited spec's.
            "spec_version": load_spec("customers", tmp_path).spec_version,
        }


def ended(
    world: dict[str, Any],
    job: str,
    archive: Path | None,
    status: str = "Completed",
    reason: str | None = None,
) -> Any:
    event = copy.deepcopy(load_event("sagemaker_training_state_change.json"))
    d = event["detail"]
    d["TrainingJobName"] = job
    d["TrainingJobStatus"] = status
    d["HyperParameters"]["dhow_spec_version"] = world.get(
        "spec_version", load_spec("customers").spec_version
    )
    if reason:
        d["FailureReason"] = reason
    key = f"models/customers/{job}/output/model.tar.gz"
    d["ModelArtifacts"]["S3ModelArtifacts"] = f"s3://{MODELS}/{key}"
    if archive is not None:
        world["store"].put_bytes(ObjectRef(container=MODELS, key=key), archive.read_bytes())
    return parse_training_state_change(json.dumps(event))


def test_first_good_model_is_approved_with_lineage(
    world: dict[str, Any], artifacts: dict[str, Path]
) -> None:
    out = world["svc"].handle(ended(world, "job-good", artifacts["good"]))
    assert (out.status, out.model_version) == ("approved", 1)
    completed, approved = world["bus"].events
    assert isinstance(completed, TrainingCompleted)
    assert completed.status == "Completed"
    assert isinstance(approved, ModelApproved)
    assert approved.model_version == "1"
    assert approved.metrics["roc_auc"] > 0.65
    [v] = world["registry"].versions("customers")
    assert v.status == "Approved"
    assert v.lineage["sha256"] == "9f86" * 16  # from the job's dhow_* hyperparameters
    assert v.lineage["instance_type"] == "ml.g5.xlarge"
    assert v.lineage["job_name"] == "job-good"


def test_a_worse_model_is_rejected_against_the_champion_on_the_same_holdout(
    world: dict[str, Any], artifacts: dict[str, Path]
) -> None:
    world["svc"].handle(ended(world, "job-good", artifacts["good"]))
    out = world["svc"].handle(ended(world, "job-weak", artifacts["weak"]))
    assert out.status == "rejected"
    rejected = world["bus"].events[-1]
    assert isinstance(rejected, ModelRejected)
    assert rejected.champion_version == "1"
    # About 0.54 clears the 0.3 minimum: it is refused for regressing against the champion.
    assert "worse than champion v1" in rejected.reason
    versions = world["registry"].versions("customers")
    assert [(v.version, v.status) for v in versions] == [(2, "Rejected"), (1, "Approved")]
    assert world["registry"].champion("customers").version == 1
    # The champion was scored on the challenger's holdout, and that figure is kept.
    assert "champion_roc_auc_same_holdout" in versions[0].metrics


def test_an_equal_model_passes_against_the_champion(
    world: dict[str, Any], artifacts: dict[str, Path]
) -> None:
    world["svc"].handle(ended(world, "job-good", artifacts["good"]))
    out = world["svc"].handle(ended(world, "job-good-again", artifacts["good"]))
    assert out.status == "approved"
    assert out.gate is not None
    with tarfile.open(artifacts["good"]) as tar:
        f = tar.extractfile("metrics.json")
        assert f is not None
        own = json.loads(f.read())["roc_auc"]
    assert out.gate.champion_score == pytest.approx(own)


@pytest.mark.parametrize("status", ["Failed", "Stopped"])
def test_failed_and_stopped_jobs_are_reported_not_registered(
    world: dict[str, Any], status: str
) -> None:
    out = world["svc"].handle(
        ended(world, "job-x", None, status=status, reason="AlgorithmError: out of memory")
    )
    assert out.status == "failed"
    [completed] = world["bus"].events
    assert isinstance(completed, TrainingCompleted)
    assert (completed.status, completed.reason) == (status, "AlgorithmError: out of memory")
    assert world["registry"].versions("customers") == []


def test_the_same_event_twice_registers_once(
    world: dict[str, Any], artifacts: dict[str, Path]
) -> None:
    e = ended(world, "job-good", artifacts["good"])
    world["svc"].handle(e)
    assert world["svc"].handle(e).status == "duplicate"
    assert len(world["registry"].versions("customers")) == 1
    assert len(world["bus"].events) == 2


def test_the_weak_model_really_is_weaker(artifacts: dict[str, Path]) -> None:
    """Guards the rejection test: it must be rejected for being worse, not by luck."""

    def auc(p: Path) -> float:
        with tarfile.open(p) as tar:
            f = tar.extractfile("metrics.json")
            assert f is not None
            return float(json.loads(f.read())["roc_auc"])

    assert auc(artifacts["good"]) - auc(artifacts["weak"]) > 0.1


def test_below_the_minimum_is_rejected_even_without_a_champion(
    monkeypatch: pytest.MonkeyPatch, artifacts: dict[str, Path]
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        store, bus, lineage = MemoryStore(), MemoryBus(), MemoryLineage()
        registry = SageMakerModelRegistry(aws_client("sagemaker", Settings()), stage="t")
        svc = RegisterService(store, bus, lineage, registry)  # the shipped spec: minimum 0.6
        out = svc.handle(ended({"store": store}, "job-weak", artifacts["weak"]))
        assert out.status == "rejected"
        rejected = bus.events[-1]
        assert isinstance(rejected, ModelRejected)
        assert "below the minimum 0.6000" in rejected.reason
        assert registry.champion("customers") is None


def test_a_retry_after_the_registry_write_makes_no_second_version(
    world: dict[str, Any], artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The function dies once the version is in the registry, before ModelApproved; the
    redelivery (after the claim went stale) must announce that version, not make v3."""
    svc = RegisterService(
        world["store"],
        world["bus"],
        world["lineage"],
        world["registry"],
        specs=world["svc"]._specs,
        claim_seconds=0,  # the redelivery comes after the claim window
    )
    svc.handle(ended(world, "job-good", artifacts["good"]))
    real = world["registry"].register
    calls: list[int] = []

    def register_then_die(*args: Any, **kwargs: Any) -> Any:
        real(*args, **kwargs)
        if not calls:
            calls.append(1)
            raise SystemExit("the function died after the registry write")
        raise AssertionError("registered a second time")

    monkeypatch.setattr(world["registry"], "register", register_then_die)
    e = ended(world, "job-good-again", artifacts["good"])
    with pytest.raises(SystemExit):
        svc.handle(e)
    out = svc.handle(e)
    assert (out.status, out.model_version) == ("approved", 2)
    assert [v.version for v in world["registry"].versions("customers")] == [2, 1]
    approved = [x for x in world["bus"].events if isinstance(x, ModelApproved)]
    assert [(a.model_version, a.champion_version) for a in approved] == [("1", None), ("2", "1")]


def test_sagemaker_metadata_limits_are_the_service_models() -> None:
    """The limits register relies on, as botocore's SageMaker model states them."""
    import botocore.session

    limits = value("aws.sagemaker.model_package_metadata_limits")
    model = botocore.session.get_session().get_service_model("sagemaker")
    create = model.operation_model("CreateModelPackage").input_shape
    assert create is not None
    props: Any = create.members["CustomerMetadataProperties"]
    assert props.metadata["max"] == limits["max_entries"]
    assert [props.key.metadata["min"], props.key.metadata["max"]] == limits["key_length"]
    assert [props.value.metadata["min"], props.value.metadata["max"]] == limits["value_length"]
    # No metadata filter to find a job's version by: the registry's packages are described.
    listing = model.operation_model("ListModelPackages").input_shape
    assert listing is not None
    assert sorted(listing.members) == sorted(
        value("aws.sagemaker.list_model_packages_no_metadata_filter")
    )


def test_an_empty_lineage_fact_does_not_fail_the_registration(
    world: dict[str, Any], artifacts: dict[str, Path]
) -> None:
    """A job without a dhow_trainer_version hyperparameter: SageMaker refuses an empty
    metadata value (fact aws.sagemaker.model_package_metadata_limits), so it is left out."""
    event = ended(world, "job-old", artifacts["good"])
    hps = {k: v for k, v in event.hyperparameters.items() if k != "dhow_trainer_version"}
    out = world["svc"].handle(event.model_copy(update={"hyperparameters": hps}))
    assert out.status == "approved"
    [v] = world["registry"].versions("customers")
    assert "trainer_version" not in v.lineage
    assert v.lineage["job_name"] == "job-old"


def _learnt_from(event: Any, sha256s: list[str]) -> Any:
    """The job's end event, as for a job launched with learn_from: its data's fingerprint
    in the hyperparameters train-launch set."""
    from shared.services.train_launch import data_fingerprint

    hps = {**event.hyperparameters, "dhow_data_fingerprint": data_fingerprint(sha256s)}
    return event.model_copy(update={"hyperparameters": hps})


def test_a_challenger_on_exactly_the_champion_s_data_is_refused(
    world: dict[str, Any], artifacts: dict[str, Path]
) -> None:
    """The champion learnt from version 9f86… alone (a version from before learn_from,
    taken at its one sha256); a retrain on that same version, same spec and trainer,
    would be deployed for nothing: the gate refuses it, whatever it scores."""
    world["svc"].handle(ended(world, "job-good", artifacts["good"]))
    same = _learnt_from(ended(world, "job-same", artifacts["good"]), ["9f86" * 16])
    out = world["svc"].handle(same)
    assert out.status == "rejected"
    assert out.gate is not None
    assert out.gate.code == "same_data_as_champion"
    rejected = world["bus"].events[-1]
    assert isinstance(rejected, ModelRejected)
    assert rejected.reason.startswith("same_data_as_champion")
    assert "champion v1" in rejected.reason
    assert world["registry"].champion("customers").version == 1


def test_a_challenger_with_new_data_is_judged_on_its_score_and_keeps_its_data(
    world: dict[str, Any], artifacts: dict[str, Path]
) -> None:
    from shared.ports import LineageRecord
    from shared.services.train_launch import data_fingerprint

    world["svc"].handle(ended(world, "job-good", artifacts["good"]))
    shas = ["9f86" * 16, "ab" * 32]
    world["lineage"].put_if_absent(  # train-launch's row for the job
        LineageRecord(
            dataset="customers",
            record_id="train:job-more",
            kind="train",
            status="launched",
            attributes={"job_name": "job-more", "data_sha256s": shas},
        )
    )
    out = world["svc"].handle(_learnt_from(ended(world, "job-more", artifacts["good"]), shas))
    assert out.status == "approved"
    v = world["registry"].versions("customers")[0]
    assert v.lineage["data_fingerprint"] == data_fingerprint(shas)
    assert v.lineage["data_versions"] == f"{'9f86' * 3},{'ab' * 6}"
