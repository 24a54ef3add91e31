from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.adapters.aws_calls import CALL_LOG_ENV
from shared.adapters.azure_calls import CALL_LOG_ENV as AZURE_CALL_LOG_ENV

# Runs after every other integration test: it judges the calls they made.
# The checks of what the functions called run after every test that makes calls.
MEASURED_LAST = ("test_aws_iam_measured.py", "test_azure_rbac_measured.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration/" in str(item.path):
            item.add_marker(pytest.mark.integration)
    items.sort(key=lambda item: item.path.name in MEASURED_LAST)


@pytest.fixture(scope="session", autouse=True)
def aws_call_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every AWS call the functions make during the session, one JSON line each
    (shared/adapters/aws_calls.py). Set before the platform starts, so that the runner,
    which inherits the environment, records its functions' calls here."""
    path = tmp_path_factory.getbasetemp() / "aws-calls.jsonl"
    path.touch()
    before = os.environ.get(CALL_LOG_ENV)
    os.environ[CALL_LOG_ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(CALL_LOG_ENV, None)
    else:
        os.environ[CALL_LOG_ENV] = before


@pytest.fixture(scope="session", autouse=True)
def azure_call_log(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Every Azure Storage call the functions make during the session, one JSON line each
    (shared/adapters/azure_calls.py), set before the platform starts as the AWS log is."""
    path = tmp_path_factory.getbasetemp() / "azure-calls.jsonl"
    path.touch()
    before = os.environ.get(AZURE_CALL_LOG_ENV)
    os.environ[AZURE_CALL_LOG_ENV] = str(path)
    yield path
    if before is None:
        os.environ.pop(AZURE_CALL_LOG_ENV, None)
    else:
        os.environ[AZURE_CALL_LOG_ENV] = before
