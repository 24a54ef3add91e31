"""The local platform under the faults a laptop has: a port held by what an earlier
platform left running, a process that dies as it starts, a state file that is gone.
Each is driven through the `dhow local` verbs with --json, as a user or the demo runs
them, on free ports of this test's own (see tests/unit/test_local_platform.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from dhow_cli import main
from dhow_cli.app import EXIT_PLATFORM
from dhow_local import platform as pf
from dhow_local import processes

from tests.faults.ledger import Ledger
from tests.unit.test_local_platform import Dummies, move_ports, spawn_marked


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("DHOW_LOCAL_HOME", str(h))
    move_ports(monkeypatch)
    return h


@pytest.fixture
def dummies() -> Iterator[Dummies]:
    d = Dummies()
    try:
        yield d
    finally:
        d.close()


def test_up_names_the_router_an_earlier_platform_left_on_its_port(
    home: Path, tmp_path: Path, dummies: Dummies, ledger: Ledger
) -> None:
    earlier = tmp_path / "earlier"
    old = dummies.listen(
        pf.ROUTER_PORT,
        http=True,  # it answers /_router/status, as the real one does
        env={processes.MARKER_PROCESS: "router", processes.MARKER_HOME: str(earlier)},
    )
    ledger.fault("dhow local up", "router port held by an earlier platform's router")
    r = CliRunner().invoke(main, ["local", "up", "--json"])
    out = json.loads(r.output)
    ledger.answer("local up, router port held by an earlier platform", f"{out['error']['reason']}")
    assert r.exit_code == EXIT_PLATFORM
    assert out["ok"] is False
    assert out["error"]["port"] == str(pf.ROUTER_PORT)
    assert out["error"]["pid"] == str(old.pid)
    assert f"DHOW_LOCAL_HOME={earlier} dhow local down" in out["error"]["hint"]
    assert pf.PlatformState.load(home).processes == []  # nothing was started


@pytest.mark.parametrize("cloud", ["aws", "azure"])
def test_up_names_an_emulator_port_held_by_something_else(
    cloud: str, home: Path, dummies: Dummies, ledger: Ledger
) -> None:
    # Not LocalStack, not Azurite: a plain listener that never answers their API.
    port = pf.LOCALSTACK_PORT if cloud == "aws" else pf.AZURITE_PORTS["queue"]
    squatter = dummies.listen(port)
    ledger.fault("dhow local up", f"{cloud} emulator port held by another program")
    r = CliRunner().invoke(main, ["local", "up", "--cloud", cloud, "--json"])
    err = json.loads(r.output)["error"]
    ledger.answer(f"local up --cloud {cloud}, emulator port held", err["reason"])
    assert r.exit_code == EXIT_PLATFORM
    assert (err["reason"], err["port"], err["pid"]) == ("port_in_use", str(port), str(squatter.pid))
    assert err["service"] == ("LocalStack" if cloud == "aws" else "Azurite queue service")
    assert not list(home.glob("*.log"))


def test_down_without_a_state_file_stops_what_up_started(home: Path, ledger: Ledger) -> None:
    started = [spawn_marked("runner", home), spawn_marked("router", home)]
    try:
        ledger.fault("dhow local down", "state file deleted while the platform runs")
        r = CliRunner().invoke(main, ["local", "down", "--json"])
        out = json.loads(r.output)
        for proc in started:
            ledger.action(
                f"local down stops the {proc.name} without state", int(not pf.pid_alive(proc.pid))
            )
        assert r.exit_code == 0
        assert out["stopped"] == {"runner": "stopped", "router": "stopped"}
        assert not any(pf.pid_alive(p.pid) for p in started)
    finally:
        for proc in started:
            pf.stop_process(proc, grace_s=2)
