"""Shared fixtures. Integration tests start the real local platform once per session."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

ITEST_STAGE = "itest"


@pytest.fixture(scope="session")
def local_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dhow-local")


@pytest.fixture(scope="session")
def aws_platform(local_home: Path) -> Iterator[dict[str, object]]:
    """LocalStack on the host + moto's DynamoDB + the topology + the runner, via `local up`."""
    from dhow_local import control
    from dhow_local import platform as pf

    saved = dict(os.environ)
    os.environ.update(
        {
            "DHOW_LOCAL_HOME": str(local_home),
            "DHOW_STAGE": ITEST_STAGE,
            # A rollout's schedule minute lasts 5 s here: canaries end within a test.
            "DHOW_LOCAL_MINUTE_SECONDS": "5",
            **control.LOCAL_CREDENTIALS,
        }
    )
    try:
        settings = control.local_settings("aws")
        result = control.up("aws", settings, progress=lambda _m: None)
        yield {"settings": settings, "up": result}
        state = pf.PlatformState.load(local_home)
        stopped = control.down()["stopped"]
        still = [p.name for p in state.processes if pf.pid_alive(p.pid)]
        assert not still, f"`local down` left {still} running ({stopped})"
    finally:
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="session")
def azurite(local_home: Path) -> Iterator[str]:
    from dhow_local import platform as pf

    proc = pf.start_azurite(local_home)
    try:
        yield pf.AZURITE_CONNECTION_STRING
    finally:
        if proc is not None:
            assert pf.stop_process(proc, closed=pf.azurite_closed) == "stopped"
