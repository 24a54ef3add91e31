"""Start, watch and stop the local platform's processes.

LocalStack runs in Docker when an engine answers, and on the host otherwise,
from its own virtualenv (``.venv-localstack``, made by ``make localstack-venv``)
so that its pins never meet the project's. Azurite runs from npm with the
machine's Node. Every process ``up`` starts is recorded with its pid in
``.local/state.json``, and carries a marker in its environment (dhow_local.processes),
so ``down`` stops those, SIGTERM first, then SIGKILL, even when the state file is gone.

A process counts as started only when it is alive and answers on its own port: a port
held by someone else (an earlier platform's router, say) is answered by that other
process, so "something answers" proves nothing. Every port is an env var, so a second
platform (or a test) can run beside the default one.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Collection, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dhow_local import processes
from shared.errors import PlatformError
from shared.reasons import Reason

LOCALSTACK_PORT = int(os.environ.get("DHOW_LOCALSTACK_PORT", "4566"))
LOCALSTACK_URL = f"http://127.0.0.1:{LOCALSTACK_PORT}"
# No dynamodb: LocalStack's DynamoDB downloads Java and DynamoDB Local from
# outside at first use, which a machine without internet cannot do. moto's
# server (pure Python, from PyPI) serves DynamoDB instead, on its own port.
LOCALSTACK_SERVICES = "s3,sqs,events,scheduler,sns,sts,iam,cloudwatch,logs"
DYNAMODB_PORT = int(os.environ.get("DHOW_DYNAMODB_PORT", "4567"))
# The local router: the serve functions' alias and CodeDeploy (dhow_local.router).
# DHOW_ROUTER_PORT moves it (the test session runs an AWS and an Azure platform at once).
ROUTER_PORT = int(os.environ.get("DHOW_ROUTER_PORT", "4570"))
ROUTER_URL = f"http://127.0.0.1:{ROUTER_PORT}"
DYNAMODB_URL = f"http://127.0.0.1:{DYNAMODB_PORT}"
AZURITE_PORTS = {
    "blob": int(os.environ.get("DHOW_AZURITE_BLOB_PORT", "10000")),
    "queue": int(os.environ.get("DHOW_AZURITE_QUEUE_PORT", "10001")),
    "table": int(os.environ.get("DHOW_AZURITE_TABLE_PORT", "10002")),
}
# Azurite's published development account; it only exists inside Azurite.
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
AZURITE_CONNECTION_STRING = (
    f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
    f"BlobEndpoint=http://127.0.0.1:{AZURITE_PORTS['blob']}/{AZURITE_ACCOUNT};"
    f"QueueEndpoint=http://127.0.0.1:{AZURITE_PORTS['queue']}/{AZURITE_ACCOUNT};"
    f"TableEndpoint=http://127.0.0.1:{AZURITE_PORTS['table']}/{AZURITE_ACCOUNT};"
)


def project_root() -> Path:
    """The checkout: where ``localstack/`` and the venvs live."""
    return Path(__file__).resolve().parents[2]


def local_home() -> Path:
    home = Path(os.environ.get("DHOW_LOCAL_HOME", project_root() / ".local"))
    home.mkdir(parents=True, exist_ok=True)
    return home


LOG_TAIL_LINES = 15


class PortInUse(PlatformError):
    """A port the local platform needs is held by a process it did not start."""

    reason = Reason.PORT_IN_USE

    def __init__(self, service: str, holder: processes.PortHolder, env_var: str) -> None:
        self.service, self.holder = service, holder
        if holder.platform_home:
            todo = (
                f"stop that platform: `DHOW_LOCAL_HOME={holder.platform_home} dhow local down`"
                f" (or `kill {holder.pid}`)"
            )
        elif holder.pid is not None:
            todo = f"stop it (`kill {holder.pid}`)"
        else:
            todo = f"find it with `lsof -i :{holder.port}` (or `ss -ltnp`) and stop it"
        super().__init__(
            f"port {holder.port}, which the {service} needs, is held by {holder.describe()}",
            hint=f"{todo}, or give the {service} another port with {env_var}",
        )

    def as_dict(self) -> dict[str, str]:
        return {
            **super().as_dict(),
            "port": str(self.holder.port),
            "service": self.service,
            "pid": "" if self.holder.pid is None else str(self.holder.pid),
            "command": self.holder.command,
        }


class ProcessNotReady(PlatformError):
    """A process ``local up`` started died, or did not answer, within its time."""

    reason = Reason.PROCESS_NOT_READY

    def __init__(self, process: str, problem: str, log: Path | None) -> None:
        self.process = process
        self.log_tail = log_tail(log)
        where = f"see {log}" if log is not None else "see the service's own logs"
        # What `up` had started before this one keeps running until `down` stops it.
        where += "; `dhow local down` stops what `up` started"
        super().__init__(
            f"the {process} {problem}",
            hint=where + (f"; last lines:\n{self.log_tail}" if self.log_tail else ""),
        )

    def as_dict(self) -> dict[str, str]:
        return {**super().as_dict(), "process": self.process, "log_tail": self.log_tail}


class StrayProcess(PlatformError):
    """A process an earlier ``up`` in this home started is running, but no state lists it."""

    reason = Reason.STRAY_PROCESS


def log_tail(log: Path | None, lines: int = LOG_TAIL_LINES) -> str:
    if log is None or not log.exists():
        return ""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


@dataclass
class ManagedProcess:
    name: str
    pid: int
    log: str
    started_at: float = field(default_factory=time.time)


@dataclass
class PlatformState:
    cloud: str = "aws"
    endpoint: str | None = None
    mode: str | None = None  # host | docker | external
    processes: list[ManagedProcess] = field(default_factory=list)

    @classmethod
    def load(cls, home: Path | None = None) -> PlatformState:
        path = (home or local_home()) / "state.json"
        if not path.exists():
            return cls()
        raw = json.loads(path.read_text())
        procs = [ManagedProcess(**p) for p in raw.pop("processes", [])]
        return cls(**raw, processes=procs)

    def save(self, home: Path | None = None) -> None:
        path = (home or local_home()) / "state.json"
        path.write_text(json.dumps(asdict(self), indent=2))


def http_answers(url: str, timeout: float = 1.0) -> bool:
    """True if anything answers HTTP at ``url``, whatever the status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):  # noqa: S310 - loopback only
            return True
    except urllib.error.HTTPError:
        return True  # Azurite answers 400 to a bare GET: it is up
    except (urllib.error.URLError, OSError):
        return False


def localstack_health(timeout: float = 1.0) -> dict[str, Any] | None:
    try:
        with urllib.request.urlopen(  # noqa: S310 - loopback only
            f"{LOCALSTACK_URL}/_localstack/health", timeout=timeout
        ) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data
    except (urllib.error.URLError, OSError, ValueError):
        return None


def docker_engine_answers() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        r = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],  # noqa: S607
            capture_output=True,
            timeout=5,
            check=False,
        )
    except (subprocess.TimeoutExpired, OSError):
        return False
    return r.returncode == 0 and bool(r.stdout.strip())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); ask /proc whether it is really running.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def wait_until(check: Callable[[], bool], timeout: float, what: str, log: Path | None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    tail = log_tail(log)
    raise PlatformError(
        f"{what} did not become ready within {timeout:.0f}s",
        hint=f"see {log}" + (f"; last lines:\n{tail}" if tail else ""),
    )


# Popen objects of the children this process started: kept so they are reaped
# (and not reported as leaked) when this same process stops them.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


def spawn(name: str, argv: list[str], env: dict[str, str], home: Path) -> ManagedProcess:
    log = home / f"{name}.log"
    # The marker lets `down` find it without the state file (processes.marked_processes).
    marked = {**env, processes.MARKER_PROCESS: name, processes.MARKER_HOME: str(home.resolve())}
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=marked,
            cwd=project_root(),
            start_new_session=True,  # its own process group, so stop() reaches its children
        )
    _CHILDREN[proc.pid] = proc
    return ManagedProcess(name=name, pid=proc.pid, log=str(log))


def stop_process(
    proc: ManagedProcess, grace_s: float = 10.0, closed: Callable[[], bool] | None = None
) -> str:
    """SIGTERM the process group, escalate to SIGKILL after ``grace_s``.

    ``closed`` tells when the service has finished its own shutdown although
    its process lingers (Azurite closes its servers on SIGTERM but never
    exits); the rest is then ended at once, and that counts as a clean stop.
    """
    if not pid_alive(proc.pid):
        return "not running"
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return "not running"
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        if not pid_alive(proc.pid):
            _reap(proc.pid)
            return "stopped"
        if closed is not None and closed():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            _reap(proc.pid)
            return "stopped"
        time.sleep(0.1)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        return "stopped"
    _reap(proc.pid)
    return "killed"


def _reap(pid: int) -> None:
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=5)
        return
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def require_port(port: int, service: str, env_var: str, ours: Collection[int] = ()) -> None:
    """Raise ``PortInUse`` unless ``port`` is free or held by one of ``ours`` (the pids,
    session leaders, of this platform's own processes), naming who holds it."""
    if processes.port_free(port):
        return
    holder = processes.holder_of(port) or processes.PortHolder(port=port, pid=None, command="?")
    if holder.pid is not None and (holder.pid in ours or processes.session_of(holder.pid) in ours):
        return
    raise PortInUse(service, holder, env_var)


def _owns(proc: ManagedProcess, ports: Iterable[int]) -> bool:
    # False only when /proc shows another process on the port; unknown counts as ours,
    # since require_port found the port free just before the spawn.
    return all(processes.held_by_session(port, proc.pid) is not False for port in ports)


def await_ready(
    proc: ManagedProcess,
    answers: Callable[[], bool],
    ports: Iterable[int],
    timeout: float,
    what: str,
) -> None:
    """Wait until ``proc`` is alive and answers on its own ``ports``.

    If it exits first, or does not answer within ``timeout`` (then it is stopped, so
    nothing half-started is left behind), raise ``ProcessNotReady`` with its log's tail.
    """
    ports = list(ports)
    log = Path(proc.log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(proc.pid):
            child = _CHILDREN.pop(proc.pid, None)
            code = child.wait(timeout=5) if child is not None else None
            exited = "exited" if code is None else f"exited with code {code}"
            raise ProcessNotReady(what, f"{exited} during start-up", log)
        if answers() and _owns(proc, ports):
            return
        time.sleep(0.2)
    stop_process(proc, grace_s=5.0)
    raise ProcessNotReady(what, f"did not answer within {timeout:.0f}s (it was stopped)", log)


def moto_answers() -> bool:
    return http_answers(f"{DYNAMODB_URL}/moto-api/")


def router_answers() -> bool:
    return http_answers(f"{ROUTER_URL}/_router/status")


def answering(proc: ManagedProcess) -> bool:
    """Whether a running process of the platform answers on its own port(s); the runner
    has none, so its being alive is what can be checked (its ready file was written)."""
    probes: dict[str, tuple[Callable[[], bool], list[int]]] = {
        "localstack": (lambda: localstack_health() is not None, [LOCALSTACK_PORT]),
        "dynamodb": (moto_answers, [DYNAMODB_PORT]),
        "azurite": (azurite_up, list(AZURITE_PORTS.values())),
        "router": (router_answers, [ROUTER_PORT]),
    }
    probe, ports = probes.get(proc.name, (lambda: True, []))
    return probe() and _owns(proc, ports)


def verify_running(procs: Iterable[ManagedProcess], timeout: float = 10.0) -> None:
    """After ``up``: every process it started is still alive and answering, or the one
    that is not is named, with its log's tail (``ProcessNotReady``)."""
    pending = list(procs)
    deadline = time.monotonic() + timeout
    while True:
        for proc in pending:
            if not pid_alive(proc.pid):
                raise ProcessNotReady(proc.name, "exited after start-up", Path(proc.log))
        pending = [p for p in pending if not answering(p)]
        if not pending:
            return
        if time.monotonic() >= deadline:
            names = ", ".join(p.name for p in pending)
            raise ProcessNotReady(
                names, f"stopped answering (checked for {timeout:.0f}s)", Path(pending[0].log)
            )
        time.sleep(0.2)


def check_ports(
    emulator_ports: Callable[[Collection[int]], None], ours: Collection[int] = ()
) -> None:
    """Before ``up`` starts anything: each port it will start a process on is free, or
    held by one of ``ours``; an emulator already answering its own API on its port is
    used as it is (LocalStack in Docker, a developer's own Azurite), as ``up`` always has.
    ``emulator_ports`` checks the emulators' (``LocalKit.check_emulator_ports``)."""
    emulator_ports(ours)
    require_port(ROUTER_PORT, "router", "DHOW_ROUTER_PORT", ours)


def localstack_python() -> Path:
    explicit = os.environ.get("DHOW_LOCALSTACK_PYTHON")
    path = Path(explicit) if explicit else project_root() / ".venv-localstack" / "bin" / "python"
    if not path.exists():
        raise PlatformError(
            f"LocalStack's virtualenv is missing ({path})",
            hint="run `make localstack-venv` (needs Python 3.13), or set DHOW_LOCALSTACK_PYTHON",
        )
    return path


def start_localstack(home: Path, timeout: float = 60.0) -> ManagedProcess | None:
    """Start LocalStack unless one already answers; returns the process we started."""
    if localstack_health() is not None:
        return None
    if docker_engine_answers():
        compose = project_root() / "localstack" / "docker-compose.yml"
        subprocess.run(
            ["docker", "compose", "-f", str(compose), "up", "-d"],  # noqa: S607
            check=True,
        )
        wait_until(lambda: localstack_health() is not None, timeout, "LocalStack (docker)", None)
        return None
    require_port(LOCALSTACK_PORT, "LocalStack", "DHOW_LOCALSTACK_PORT")
    env = {
        **os.environ,
        "GATEWAY_LISTEN": f"127.0.0.1:{LOCALSTACK_PORT}",
        "SERVICES": LOCALSTACK_SERVICES,
        # Without these two it waits on outside hosts and ignores SIGTERM for 30 s+.
        "DISABLE_EVENTS": "1",
        "SKIP_SSL_CERT_DOWNLOAD": "1",
        "DNS_ADDRESS": "0",
        "LOCALSTACK_VOLUME_DIR": str(home / "localstack-volume"),
    }
    proc = spawn(
        "localstack", [str(localstack_python()), "-m", "localstack.runtime.main"], env, home
    )
    await_ready(
        proc, lambda: localstack_health() is not None, [LOCALSTACK_PORT], timeout, "LocalStack"
    )
    return proc


def start_dynamodb(home: Path, timeout: float = 30.0) -> ManagedProcess | None:
    """moto's server on its own port, answering DynamoDB (see LOCALSTACK_SERVICES)."""
    if moto_answers():
        return None
    require_port(DYNAMODB_PORT, "DynamoDB (moto)", "DHOW_DYNAMODB_PORT")
    proc = spawn(
        "dynamodb",
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(DYNAMODB_PORT)],
        dict(os.environ),
        home,
    )
    await_ready(proc, moto_answers, [DYNAMODB_PORT], timeout, "DynamoDB (moto)")
    return proc


def azurite_binary() -> Path:
    path = project_root() / "localstack" / "node_modules" / ".bin" / "azurite"
    if not path.exists():
        raise PlatformError(
            "Azurite is not installed", hint="run `make node-deps` (npm install in localstack/)"
        )
    return path


def azurite_up() -> bool:
    return all(http_answers(f"http://127.0.0.1:{port}/") for port in AZURITE_PORTS.values())


def azurite_closed() -> bool:
    return not any(
        http_answers(f"http://127.0.0.1:{port}/", timeout=0.3) for port in AZURITE_PORTS.values()
    )


# How to tell, per managed process, that it shut down cleanly before exiting.
SHUTDOWN_DONE: dict[str, Callable[[], bool]] = {"azurite": azurite_closed}


def start_azurite(home: Path, timeout: float = 30.0) -> ManagedProcess | None:
    if azurite_up():
        return None
    for service, port in AZURITE_PORTS.items():
        require_port(port, f"Azurite {service} service", f"DHOW_AZURITE_{service.upper()}_PORT")
    # In memory, as LocalStack keeps its state: each `up` after a `down` starts empty,
    # so the blob watcher forgets what it announced too.
    (home / "blob-watcher.json").unlink(missing_ok=True)
    proc = spawn(
        "azurite",
        [
            str(azurite_binary()),
            "--silent",
            "--skipApiVersionCheck",
            "--loose",
            "--inMemoryPersistence",
            "--blobHost",
            "127.0.0.1",
            "--queueHost",
            "127.0.0.1",
            "--tableHost",
            "127.0.0.1",
            "--blobPort",
            str(AZURITE_PORTS["blob"]),
            "--queuePort",
            str(AZURITE_PORTS["queue"]),
            "--tablePort",
            str(AZURITE_PORTS["table"]),
        ],
        dict(os.environ),
        home,
    )
    await_ready(proc, azurite_up, AZURITE_PORTS.values(), timeout, "Azurite")
    return proc


def start_runner(home: Path, env: dict[str, str], timeout: float = 60.0) -> ManagedProcess:
    """Start the runner and wait until it has imported every handler and polls."""
    ready = home / "runner.ready"
    ready.unlink(missing_ok=True)
    proc = spawn(
        "runner",
        [sys.executable, "-m", "dhow_local", "runner"],
        {**env, "DHOW_RUNNER_READY_FILE": str(ready)},
        home,
    )
    await_ready(proc, ready.exists, [], timeout, "runner")
    return proc


def start_router(home: Path, env: dict[str, str], timeout: float = 60.0) -> ManagedProcess:
    """Start the local router and wait until it, not another process on its port, answers."""
    require_port(ROUTER_PORT, "router", "DHOW_ROUTER_PORT")
    proc = spawn(
        "router",
        [sys.executable, "-m", "dhow_local", "router"],
        # The port this process checked, whatever the caller's environment says.
        {**env, "DHOW_ROUTER_PORT": str(ROUTER_PORT)},
        home,
    )
    await_ready(proc, router_answers, [ROUTER_PORT], timeout, "router")
    return proc
