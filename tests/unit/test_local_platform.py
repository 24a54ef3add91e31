"""`dhow local up|down` does not trust itself: a port another process holds is named
before anything starts, a process counts as started only when it answers on its own
port, and `down` finds what `up` started when the state file is gone.

Nothing here starts LocalStack, Azurite or the real router: the ports are free ones this
test picks, and the processes are small Python stand-ins (a socket listener, an HTTP
server answering as the router does, a server that dies binding a taken port), so these
run beside the integration suite's platform on the default ports.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dhow_local import control, processes
from dhow_local import platform as pf

# Listens on argv[1]; with argv[2] == "http", answers every GET with 200 and a JSON body,
# as the router's /_router/status does.
LISTENER = """
import http.server, socket, sys, time
port = int(sys.argv[1])
if sys.argv[2] == "http":
    class Status(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"routes": {}}'
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = http.server.HTTPServer(("127.0.0.1", port), Status)
    print("ready", flush=True)
    server.serve_forever()
s = socket.socket()
s.bind(("127.0.0.1", port))
s.listen()
print("ready", flush=True)
time.sleep(600)
"""
# What a router started on a taken port does: fail to bind, say so, exit 1.
BINDS_AND_DIES = "import socket, sys; s = socket.socket(); s.bind(('127.0.0.1', int(sys.argv[1])))"
SLEEPER = "import time; print('up', flush=True); time.sleep(600)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Dummies:
    """Processes this test starts, each in its own session; all killed at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def listen(
        self, port: int, *, http: bool = False, env: dict[str, str] | None = None
    ) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-c", LISTENER, str(port), "http" if http else "tcp"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
        return proc

    def close(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
            if proc.stdout is not None:
                proc.stdout.close()


@pytest.fixture
def dummies() -> Iterator[Dummies]:
    d = Dummies()
    try:
        yield d
    finally:
        d.close()


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A local home of its own, and every platform port moved to a free one."""
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("DHOW_LOCAL_HOME", str(h))
    move_ports(monkeypatch)
    return h


def move_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every port of the platform on a free one, away from the integration suite's."""
    ls, ddb, router = free_port(), free_port(), free_port()
    monkeypatch.setattr(pf, "LOCALSTACK_PORT", ls)
    monkeypatch.setattr(pf, "LOCALSTACK_URL", f"http://127.0.0.1:{ls}")
    monkeypatch.setattr(pf, "DYNAMODB_PORT", ddb)
    monkeypatch.setattr(pf, "DYNAMODB_URL", f"http://127.0.0.1:{ddb}")
    monkeypatch.setattr(pf, "ROUTER_PORT", router)
    monkeypatch.setattr(pf, "ROUTER_URL", f"http://127.0.0.1:{router}")
    monkeypatch.setattr(
        pf, "AZURITE_PORTS", {"blob": free_port(), "queue": free_port(), "table": free_port()}
    )


def spawn_marked(name: str, home: Path, code: str = SLEEPER) -> pf.ManagedProcess:
    """A stand-in started the way `up` starts its processes (pf.spawn: marker, session)."""
    proc = pf.spawn(name, [sys.executable, "-c", code], dict(os.environ), home)
    deadline = time.monotonic() + 10
    while not Path(proc.log).read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.05)
    return proc


@pytest.fixture
def marked(home: Path) -> Iterator[list[pf.ManagedProcess]]:
    started: list[pf.ManagedProcess] = []
    try:
        yield started
    finally:
        for proc in started:
            pf.stop_process(proc, grace_s=2)


def test_up_names_the_port_another_process_holds_and_starts_nothing(
    home: Path, dummies: Dummies
) -> None:
    squatter = dummies.listen(pf.ROUTER_PORT)
    with pytest.raises(pf.PortInUse) as info:
        control.up("aws", control.local_settings("aws"), progress=lambda _m: None)
    err = info.value.as_dict()
    assert err["reason"] == "port_in_use"
    assert (err["port"], err["service"], err["pid"]) == (
        str(pf.ROUTER_PORT),
        "router",
        str(squatter.pid),
    )
    assert err["command"].startswith(f"{sys.executable} -c")
    assert f"kill {squatter.pid}" in err["hint"]
    assert "DHOW_ROUTER_PORT" in err["hint"]
    # Refused before anything started: no LocalStack, no log, nothing for `down` to stop.
    assert not list(home.glob("*.log"))
    assert pf.PlatformState.load(home).processes == []


def test_a_router_an_earlier_platform_left_is_named_not_taken_for_ours(
    home: Path, tmp_path: Path, dummies: Dummies
) -> None:
    # The case: the old router answers /_router/status, so "something answers"
    # made `up` report success while the router it had just started died.
    earlier = tmp_path / "earlier"
    old = dummies.listen(
        pf.ROUTER_PORT,
        http=True,
        env={processes.MARKER_PROCESS: "router", processes.MARKER_HOME: str(earlier)},
    )
    assert pf.router_answers()
    with pytest.raises(pf.PortInUse) as info:
        pf.start_router(home, dict(os.environ))
    assert info.value.holder.pid == old.pid
    assert info.value.holder.platform_process == "router"
    assert f"DHOW_LOCAL_HOME={earlier} dhow local down" in info.value.hint
    assert not (home / "router.log").exists()


def test_a_process_that_dies_on_start_is_named_with_its_log_though_its_port_answers(
    home: Path, dummies: Dummies
) -> None:
    # The port was free when checked and taken before the spawn bound it (a race
    # require_port cannot close): the answer on the port is not the new process's.
    dummies.listen(pf.ROUTER_PORT, http=True)
    proc = pf.spawn("router", [sys.executable, "-c", BINDS_AND_DIES, str(pf.ROUTER_PORT)], {}, home)
    with pytest.raises(pf.ProcessNotReady) as info:
        pf.await_ready(proc, pf.router_answers, [pf.ROUTER_PORT], 15.0, "router")
    assert info.value.process == "router"
    assert "exited with code 1 during start-up" in info.value.message
    assert "Address already in use" in info.value.log_tail


def test_a_process_that_never_answers_is_stopped_and_named(
    home: Path, marked: list[pf.ManagedProcess]
) -> None:
    proc = spawn_marked("dynamodb", home)
    marked.append(proc)
    started = time.monotonic()
    with pytest.raises(pf.ProcessNotReady) as info:
        pf.await_ready(proc, pf.moto_answers, [pf.DYNAMODB_PORT], 1.0, "DynamoDB (moto)")
    assert time.monotonic() - started < 10  # bounded: its timeout and the stop's grace
    assert "did not answer within 1s" in info.value.message
    assert not pf.pid_alive(proc.pid)  # nothing half-started is left running
    assert "up" in info.value.log_tail


def test_up_names_a_process_that_died_after_it_started(
    home: Path, marked: list[pf.ManagedProcess]
) -> None:
    runner = spawn_marked("runner", home, "print('handler import failed: boom', flush=True)")
    deadline = time.monotonic() + 10
    while pf.pid_alive(runner.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with pytest.raises(pf.ProcessNotReady) as info:
        pf.verify_running([runner], timeout=1.0)
    assert info.value.as_dict()["process"] == "runner"
    assert "exited after start-up" in info.value.message
    assert "boom" in info.value.log_tail


def test_a_running_process_that_answers_on_its_own_port_passes(
    home: Path, marked: list[pf.ManagedProcess]
) -> None:
    code = LISTENER.replace("sys.argv[1]", str(pf.ROUTER_PORT)).replace("sys.argv[2]", "'http'")
    router = spawn_marked("router", home, code)
    marked.append(router)
    pf.verify_running([router], timeout=10.0)
    assert processes.held_by_session(pf.ROUTER_PORT, router.pid) is True


def test_down_without_its_state_file_stops_what_up_started_and_nothing_else(
    home: Path, tmp_path: Path, marked: list[pf.ManagedProcess]
) -> None:
    ours = [spawn_marked("router", home), spawn_marked("localstack", home)]
    other_home = tmp_path / "other"
    other_home.mkdir()
    theirs = spawn_marked("router", other_home)
    marked.extend([*ours, theirs])
    assert not (home / "state.json").exists()
    result = control.down()
    assert result["stopped"] == {"router": "stopped", "localstack": "stopped"}
    assert sorted(p["pid"] for p in result["found_by_marker"]) == sorted(p.pid for p in ours)
    assert not any(pf.pid_alive(p.pid) for p in ours)
    assert pf.pid_alive(theirs.pid)  # another platform's router is not this down's to stop


def test_down_with_a_state_stops_a_stray_router_but_not_an_emulator_started_alone(
    home: Path, marked: list[pf.ManagedProcess]
) -> None:
    # A test session starts Azurite on its own (pf.start_azurite) in the home its AWS
    # platform uses; that platform's `down` must not stop it.
    pf.PlatformState().save(home)
    stray = spawn_marked("router", home)
    alone = spawn_marked("azurite", home)
    marked.extend([stray, alone])
    assert control.down()["stopped"] == {"router": "stopped"}
    assert not pf.pid_alive(stray.pid)
    assert pf.pid_alive(alone.pid)


def test_up_refuses_to_start_a_second_runner_beside_a_stray_one(
    home: Path, marked: list[pf.ManagedProcess]
) -> None:
    stray = spawn_marked("runner", home)
    marked.append(stray)
    with pytest.raises(pf.StrayProcess) as info:
        control.up("aws", control.local_settings("aws"), progress=lambda _m: None)
    assert f"runner (pid {stray.pid})" in info.value.message
    assert "dhow local down" in info.value.hint


def test_the_marker_finds_session_leaders_only(home: Path, marked: list[pf.ManagedProcess]) -> None:
    # A child in its leader's session carries the marker too, and is stopped with it.
    code = (
        "import subprocess, sys, time; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']); "
        "print('up', flush=True); time.sleep(600)"
    )
    leader = spawn_marked("runner", home, code)
    marked.append(leader)
    assert processes.marked_processes(home) == [processes.MarkedProcess("runner", leader.pid)]


def test_platform_ports_follow_their_env_vars() -> None:
    env = {
        **os.environ,
        "DHOW_LOCALSTACK_PORT": "14566",
        "DHOW_DYNAMODB_PORT": "14567",
        "DHOW_ROUTER_PORT": "14570",
        "DHOW_AZURITE_BLOB_PORT": "20000",
        "DHOW_AZURITE_QUEUE_PORT": "20001",
        "DHOW_AZURITE_TABLE_PORT": "20002",
    }
    code = (
        "from dhow_local import platform as pf; "
        "print(pf.LOCALSTACK_URL, pf.DYNAMODB_URL, pf.ROUTER_URL, pf.AZURITE_CONNECTION_STRING)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout
    for url in (
        "http://127.0.0.1:14566",
        "http://127.0.0.1:14567",
        "http://127.0.0.1:14570",
        "BlobEndpoint=http://127.0.0.1:20000/",
        "QueueEndpoint=http://127.0.0.1:20001/",
        "TableEndpoint=http://127.0.0.1:20002/",
    ):
        assert url in out


def test_status_says_a_live_router_is_not_answering_when_another_holds_its_port(
    home: Path, dummies: Dummies, marked: list[pf.ManagedProcess]
) -> None:
    # Alive is not enough: the process `up` recorded must be the one on the port.
    router = spawn_marked("router", home)  # alive, listening nowhere
    marked.append(router)
    dummies.listen(pf.ROUTER_PORT, http=True)
    pf.PlatformState(cloud="azure", mode="host", processes=[router]).save(home)
    result = control.status()
    assert result["processes"][0]["alive"] is True
    assert result["processes"][0]["answering"] is False
    assert result["ready"] is False
