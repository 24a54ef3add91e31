"""What the machine says about the local platform's processes: who listens on a port,
and which processes a platform started, read from Linux's /proc.

``dhow local up`` asks before it starts anything whether each port it needs is free and,
if not, who holds it; ``dhow local down`` finds what an earlier ``up`` started even when
``state.json`` is gone, by the marker ``spawn`` puts in each child's environment. No
dependency: /proc/net/tcp{,6} maps a listening port to a socket inode, /proc/PID/fd maps
the inode to its process (proc(5)). Where /proc is missing (macOS) the holder is unknown
and the error says how to look it up.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
# Set by dhow_local.platform.spawn in each child's environment; read back from
# /proc/PID/environ, which keeps the environment the process was started with.
MARKER_PROCESS = "DHOW_LOCAL_PROCESS"
MARKER_HOME = "DHOW_LOCAL_HOME"
_TCP_LISTEN = "0A"  # the `st` column of /proc/net/tcp (include/net/tcp_states.h)


@dataclass(frozen=True)
class PortHolder:
    """The process listening on a port, as far as this user can see it."""

    port: int
    pid: int | None  # None: a socket of another user's (or namespace's) process
    command: str
    platform_home: str | None = None  # set when a Dhow platform started it
    platform_process: str | None = None  # its name there: runner, router, ...

    def describe(self) -> str:
        if self.pid is None:
            return "a process this user cannot see"
        started = (
            f", the {self.platform_process} of the platform in {self.platform_home}"
            if self.platform_home
            else ""
        )
        return f"pid {self.pid} ({self.command}{started})"


@dataclass(frozen=True)
class MarkedProcess:
    """A process a platform's ``spawn`` started, found by its marker."""

    name: str
    pid: int


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if a server could bind ``host:port`` now.

    SO_REUSEADDR as uvicorn, moto and Node set it, so a socket in TIME_WAIT after an
    earlier platform stopped does not count as held.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("tcp", "tcp6"):
        try:
            lines = (PROC / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            # sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if len(cols) < 10 or cols[3] != _TCP_LISTEN:
                continue
            if int(cols[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(cols[9])
    return inodes


def _pids() -> list[int]:
    try:
        return [int(p.name) for p in PROC.iterdir() if p.name.isdigit()]
    except OSError:
        return []


def _owner_of(inodes: set[str]) -> int | None:
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in _pids():
        # Another user's fds are unreadable; a process may end while we look.
        with contextlib.suppress(OSError):
            for fd in (PROC / str(pid) / "fd").iterdir():
                with contextlib.suppress(OSError):
                    if os.readlink(fd) in wanted:
                        return pid
    return None


def command_of(pid: int) -> str:
    try:
        raw = (PROC / str(pid) / "cmdline").read_bytes()
    except OSError:
        return "?"
    return " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a) or "?"


def environ_of(pid: int) -> dict[str, str]:
    try:
        raw = (PROC / str(pid) / "environ").read_bytes()
    except OSError:
        return {}
    pairs = (item.decode(errors="replace").partition("=") for item in raw.split(b"\0") if item)
    return {k: v for k, _, v in pairs}


def session_of(pid: int) -> int | None:
    """The session id (proc(5) stat field 6): ``spawn`` makes each child a session leader,
    so a port held by any process of that session is held by the child."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    # The command (field 2) is in parentheses and may contain spaces: split after it.
    fields = stat.rsplit(")", 1)[-1].split()
    return int(fields[3]) if len(fields) > 3 else None


def holder_of(port: int) -> PortHolder | None:
    """Who listens on ``port``: None when nobody does that /proc can show."""
    inodes = _listening_inodes(port)
    if not inodes:
        return None
    pid = _owner_of(inodes)
    if pid is None:
        return PortHolder(port=port, pid=None, command="?")
    env = environ_of(pid)
    return PortHolder(
        port=port,
        pid=pid,
        command=command_of(pid),
        platform_home=env.get(MARKER_HOME) if MARKER_PROCESS in env else None,
        platform_process=env.get(MARKER_PROCESS),
    )


def held_by_session(port: int, leader: int) -> bool | None:
    """Whether the listener on ``port`` belongs to the session ``leader`` started; None
    when /proc cannot tell (no /proc, or nobody it can see listens)."""
    holder = holder_of(port)
    if holder is None or holder.pid is None:
        return None
    return holder.pid == leader or session_of(holder.pid) == leader


def marked_processes(home: Path) -> list[MarkedProcess]:
    """The session leaders a platform in ``home`` started, found by their marker.

    Only session leaders: what they start runs in their session and is stopped with it.
    The runner drops the marker from its own environment as it starts, so the training
    jobs it starts in sessions of their own are not taken for it.
    """
    want = str(home.resolve())
    me = os.getpid()
    found: list[MarkedProcess] = []
    for pid in _pids():
        if pid == me or session_of(pid) != pid:
            continue
        env = environ_of(pid)
        name, where = env.get(MARKER_PROCESS), env.get(MARKER_HOME)
        if name and where and _same_path(where, want):
            found.append(MarkedProcess(name=name, pid=pid))
    return sorted(found, key=lambda m: m.pid)


def _same_path(a: str, b: str) -> bool:
    try:
        return Path(a).resolve() == Path(b)
    except OSError:
        return False
