"""The composition root picks the managed job runner the stack configured, and only that."""

from __future__ import annotations

import pytest

from shared.adapters.aws import SageMakerValidationJobs
from shared.errors import ConfigError
from shared.settings import Settings
from shared.wiring import build_validation_jobs


def test_no_job_runner_without_stack_settings() -> None:
    assert build_validation_jobs(Settings()) is None
    assert build_validation_jobs(Settings(cloud="azure")) is None


def test_sagemaker_runner_when_the_stack_sets_image_and_role() -> None:
    settings = Settings.from_env(
        {
            "DHOW_PROCESSING_IMAGE_URI": "123.dkr.ecr.me-central-1.amazonaws.com/p:1",
            "DHOW_SAGEMAKER_ROLE_ARN": "arn:aws:iam::123:role/p",
            "DHOW_PRIVATE_SUBNETS": "subnet-a, subnet-b",
        }
    )
    jobs = build_validation_jobs(settings)
    assert isinstance(jobs, SageMakerValidationJobs)
    assert settings.private_subnets == ("subnet-a", "subnet-b")


def test_half_configured_azureml_workspace_is_refused() -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env({"DHOW_AZUREML_WORKSPACE": "ws"})
    assert "DHOW_AZUREML_SUBSCRIPTION_ID" in info.value.hint


def test_each_training_backend_needs_its_stack_settings() -> None:
    from dhow_local.training import LocalTrainingLauncher

    from shared.topology import build_topology
    from shared.wiring import Ports, build_training_launcher
    from tests.helpers import MemoryBus, MemoryLineage, MemoryStore

    ports = Ports(store=MemoryStore(), bus=MemoryBus(), lineage=MemoryLineage())
    topo = build_topology("local")
    local = build_training_launcher(Settings(kit="local-aws"), ports, topo)
    assert isinstance(local, LocalTrainingLauncher)
    for cloud in (Settings(cloud="aws"), Settings(cloud="azure")):
        with pytest.raises(ConfigError) as info:
            build_training_launcher(cloud, ports, topo)
        assert "dhow local up" in info.value.hint
