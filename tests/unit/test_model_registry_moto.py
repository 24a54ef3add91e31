"""The model registries through one set of tests: the SageMaker Model Registry adapter
against moto's SageMaker in me-central-1, and the lineage-table registry (Azure) on the
in-memory lineage store (on Azurite's Table storage in tests/integration)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from shared.adapters.aws import aws_client
from shared.adapters.lineage_registry import LineageModelRegistry
from shared.adapters.sagemaker_registry import SageMakerModelRegistry
from shared.errors import UnknownModelVersion
from shared.ports import ModelRegistry
from shared.settings import Settings
from tests.helpers import MemoryLineage

LINEAGE = {
    "sha256": "ab" * 32,
    "curated": "dhow-t-curated/datasets/customers/x/data.parquet",
    "spec_version": "1+186971cb",
    "trainer_version": "0.1.0",
    "job_name": "dhow-j",
    "instance_type": "ml.g5.xlarge",
    "source": "dhow-t-raw/datasets/customers/c.csv",
}


@pytest.fixture(params=["sagemaker", "lineage"])
def registry(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ModelRegistry]:
    if request.param == "lineage":
        yield LineageModelRegistry(MemoryLineage())
        return
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    with mock_aws():
        yield SageMakerModelRegistry(aws_client("sagemaker", Settings()), stage="t")


def register(reg: ModelRegistry, auc: float, status: str = "Approved") -> int:
    return reg.register(
        "customers",
        artifact=f"s3://m/{auc}/model.tar.gz",
        image="img:1",
        metrics={"roc_auc": auc, "n_holdout": 80},
        lineage=LINEAGE,
        status=status,  # type: ignore[arg-type]
        reason=None if status == "Approved" else "below the gate",
    ).version


def test_versions_keep_metrics_and_lineage(registry: ModelRegistry) -> None:
    assert registry.versions("customers") == []
    assert registry.champion("customers") is None
    assert register(registry, 0.81) == 1
    [v] = registry.versions("customers")
    assert v.metrics == {"roc_auc": 0.81, "n_holdout": 80.0}
    assert v.lineage == LINEAGE  # back to the exact bytes it learned from
    assert (v.status, v.artifact, v.image) == ("Approved", "s3://m/0.81/model.tar.gz", "img:1")


def test_champion_is_the_newest_approved(registry: ModelRegistry) -> None:
    register(registry, 0.81)
    register(registry, 0.84)
    register(registry, 0.70, status="Rejected")
    assert [v.version for v in registry.versions("customers")] == [3, 2, 1]
    champion = registry.champion("customers")
    assert champion is not None
    assert (champion.version, champion.metrics["roc_auc"]) == (2, 0.84)
    rejected = registry.versions("customers")[0]
    assert rejected.status_reason == "below the gate"


def test_rejecting_the_champion_hands_back_to_the_previous_one(
    registry: ModelRegistry,
) -> None:
    register(registry, 0.81)
    register(registry, 0.84)
    registry.set_status("customers", 2, "Rejected", "rolled back by amal: alarms")
    champion = registry.champion("customers")
    assert champion is not None
    assert champion.version == 1
    assert registry.versions("customers")[0].status_reason == "rolled back by amal: alarms"
    with pytest.raises(UnknownModelVersion):
        registry.set_status("customers", 9, "Rejected", "x")


def test_version_by_number_or_none(registry: ModelRegistry) -> None:
    first = registry.register(
        "customers",
        artifact="s3://m/1.tar.gz",
        image="i",
        metrics={},
        lineage={},
        status="Approved",
    )
    assert registry.version("customers", first.version) == first
    assert registry.version("customers", first.version + 1) is None
