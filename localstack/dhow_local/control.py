"""`dhow local up|down|status`: the local platform as one unit."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from dhow_local import platform as pf
from dhow_local import processes
from dhow_local.kit import LOCAL_KITS, LocalKit, recorded_kit
from shared.settings import Cloud, Settings
from shared.topology import build_topology

LOCAL_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test"}
# Only `up` starts these; an emulator may also have been started on its own (a test
# session's Azurite), in the same home, and is not `down`'s to stop while a state exists.
PLATFORM_ONLY = ("runner", "router")


def local_settings(cloud: Cloud, base: Settings | None = None) -> Settings:
    """``base`` (the environment's settings) pointed at the local emulators of ``cloud``'s
    local kit; every other setting, the stage and specs directory among them, is kept."""
    return LOCAL_KITS[cloud].emulated(base or Settings.from_env())


def runner_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **LOCAL_CREDENTIALS, **settings.to_env()}


def up(cloud: Cloud, settings: Settings, progress: Any = print) -> dict[str, Any]:
    home = pf.local_home()
    kit = LOCAL_KITS[cloud](settings)
    state = pf.PlatformState.load(home)
    state.processes = [p for p in state.processes if pf.pid_alive(p.pid)]
    if state.processes and LOCAL_KITS.get(state.cloud) is not type(kit):
        # One platform at a time: the runner and router of the other cloud would answer.
        progress(f"stopping the local {state.cloud} platform first ...")
        down()
        state = pf.PlatformState()
    preflight(kit, state, home)
    for k, v in LOCAL_CREDENTIALS.items():
        os.environ.setdefault(k, v)
    t0 = time.monotonic()
    topo = build_topology(settings.stage)
    state.cloud = cloud

    def track(proc: pf.ManagedProcess | None) -> None:
        # Saved at once, so `down` can stop it even if a later step fails.
        if proc is not None:
            state.processes.append(proc)
            state.save(home)

    made = kit.start_emulator(state, home, track, progress)
    state.save(home)  # the Azure runner reads the local home's state as it starts
    if not any(p.name == "runner" for p in state.processes):
        track(pf.start_runner(home, runner_env(settings)))
    polled = ", ".join(f.name for f in topo.functions if f.trigger_queue is not None)
    progress(kit.RUNNER_NOTE.format(queues=polled))
    if not any(p.name == "router" for p in state.processes):
        track(pf.start_router(home, runner_env(settings)))
    progress(f"router serving {pf.ROUTER_URL}/datasets/<dataset>/predict")
    state.save(home)
    # Each started alone, and each answered; all of them must still be up together (a
    # runner that crashes on its first poll, an emulator that died under the provisioning).
    pf.verify_running(state.processes)
    return {
        "cloud": cloud,
        "mode": state.mode,
        "endpoint": state.endpoint,
        "region": kit.region(),
        "seconds": round(time.monotonic() - t0, 2),
        "processes": [asdict(p) for p in state.processes],
        "resources": asdict(made),
    }


def preflight(kit: LocalKit, state: pf.PlatformState, home: Path) -> None:
    """Refuse to start beside a runner or router an earlier ``up`` here left running (two
    runners would poll the same queues), or on a port another process holds."""
    ours = {p.pid for p in state.processes}
    strays = [
        m for m in processes.marked_processes(home) if m.pid not in ours and m.name in PLATFORM_ONLY
    ]
    if strays:
        named = ", ".join(f"{m.name} (pid {m.pid})" for m in strays)
        raise pf.StrayProcess(
            f"an earlier `dhow local up` in {home} left {named} running, and no state lists it",
            hint="run `dhow local down`, which finds them by their marker, then `up` again",
        )
    pf.check_ports(kit.check_emulator_ports, ours)


def _load_state(home: Path) -> pf.PlatformState | None:
    """The state file, or None when it is gone or unreadable."""
    if not (home / "state.json").exists():
        return None
    try:
        return pf.PlatformState.load(home)
    except (ValueError, TypeError):
        return None


def down() -> dict[str, Any]:
    home = pf.local_home()
    state = _load_state(home)
    listed = state.processes if state is not None else []
    # What an earlier `up` here started but no state lists: all of it when the state file
    # is gone; the runner and router otherwise (see PLATFORM_ONLY).
    found = [
        pf.ManagedProcess(name=m.name, pid=m.pid, log=str(home / f"{m.name}.log"))
        for m in processes.marked_processes(home)
        if m.pid not in {p.pid for p in listed} and (state is None or m.name in PLATFORM_ONLY)
    ]
    # The runner and router first, so they do not log errors about a vanished LocalStack.
    ordered = sorted([*listed, *found], key=lambda p: p.name not in PLATFORM_ONLY)
    result: dict[str, str] = {}
    for p in ordered:
        key = p.name if p.name not in result else f"{p.name} (pid {p.pid})"
        result[key] = pf.stop_process(p, closed=pf.SHUTDOWN_DONE.get(p.name))
    pf.PlatformState().save(home)
    return {"stopped": result, "found_by_marker": [asdict(p) for p in found]}


def status() -> dict[str, Any]:
    state = pf.PlatformState.load()
    kit = recorded_kit(state.cloud)
    health = kit.emulator_health()
    procs = [
        {
            **asdict(p),
            "alive": (alive := pf.pid_alive(p.pid)),
            "answering": alive and pf.answering(p),
        }
        for p in state.processes
    ]
    return {
        "cloud": state.cloud,
        "mode": state.mode,
        "endpoint": state.endpoint,
        "ready": kit.ready(health, procs, state),
        "processes": procs,
        "localstack_services": {
            k: v for k, v in (health or {}).get("services", {}).items() if v != "disabled"
        },
    }
