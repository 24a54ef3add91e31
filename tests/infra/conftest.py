from __future__ import annotations

import pytest

from infra.config import StackConfig, check
from tests.infra.harness import Program, run


def stack_config(cloud: str) -> StackConfig:
    return check(
        cloud=cloud,
        stage="uae-prod",
        region="me-central-1",
        location="uaenorth",
        specs_dir="shared/specs",
        alert_emails=("oncall@example.ae",),
    )


@pytest.fixture(scope="session")
def aws_cfg() -> StackConfig:
    return stack_config("aws")


@pytest.fixture(scope="session")
def aws_program(aws_cfg: StackConfig) -> Program:
    return run(aws_cfg)


@pytest.fixture(scope="session")
def azure_cfg() -> StackConfig:
    return stack_config("azure")


@pytest.fixture(scope="session")
def azure_program(azure_cfg: StackConfig) -> Program:
    return run(azure_cfg)
