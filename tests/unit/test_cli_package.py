"""The CLI is its own package, ``dhow_cli``, one module per verb group (issue 17): every
command a module defines reaches `dhow`, `python -m dhow_cli --help` and the `dhow`
script's entry point list them all, and no function's bundle carries the CLI."""

from __future__ import annotations

import importlib
import os
import pkgutil
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import dhow_cli
from click.testing import CliRunner
from dhow_cli import main

ROOT = Path(__file__).resolve().parents[2]


def defined_commands() -> set[click.Command]:
    """Every click command or group a module of the package defines at its top level."""
    found: set[click.Command] = set()
    for info in pkgutil.iter_modules(dhow_cli.__path__):
        module = importlib.import_module(f"dhow_cli.{info.name}")
        found |= {v for v in vars(module).values() if isinstance(v, click.Command)}
    return found - {main}


def reachable(group: click.Group) -> set[click.Command]:
    found: set[click.Command] = set()
    for command in group.commands.values():
        found.add(command)
        if isinstance(command, click.Group):
            found |= reachable(command)
    return found


def top_level(commands: set[click.Command]) -> set[click.Command]:
    """The commands no group of ``commands`` holds: what `dhow` itself must list."""
    held = {c for g in commands if isinstance(g, click.Group) for c in g.commands.values()}
    return commands - held


def listed_by_help(output: str) -> set[str]:
    return {line.split()[0] for line in output.split("Commands:")[1].splitlines() if line.strip()}


def test_every_command_a_module_defines_is_registered_on_dhow() -> None:
    """A verb group's module whose commands were never added to ``main`` fails here."""
    defined = defined_commands()
    assert defined, "no commands found: the walk is broken"
    assert defined - reachable(main) == set()
    assert {c.name for c in top_level(defined)} == set(main.commands)


def test_python_m_dhow_cli_help_lists_every_command() -> None:
    # This checkout's package, whatever the installed distribution maps.
    path = os.pathsep.join([str(ROOT), str(ROOT / "localstack"), os.environ.get("PYTHONPATH", "")])
    out = subprocess.run(
        [sys.executable, "-m", "dhow_cli", "--help"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": path},
        capture_output=True, text=True, timeout=120, check=True,
    ).stdout  # fmt: skip
    assert listed_by_help(out) == {c.name for c in top_level(defined_commands())}


def test_the_dhow_script_is_the_package_group_and_lists_every_command() -> None:
    """pyproject's ``dhow`` script (what `pip install` puts on PATH) names this group."""
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, attr = scripts["dhow"].partition(":")
    entry = getattr(importlib.import_module(module), attr)
    assert entry is main
    r = CliRunner().invoke(entry, ["--help"], prog_name="dhow")
    assert r.exit_code == 0, r.output
    assert listed_by_help(r.output) == {c.name for c in top_level(defined_commands())}


def test_no_function_bundle_carries_the_cli_or_the_local_platform() -> None:
    from layers.catalogue import code_files

    shipped = [p.relative_to(ROOT).as_posix() for p in code_files(ROOT)]
    assert any(p.startswith("shared/") for p in shipped)
    assert [
        p for p in shipped if "dhow_cli" in p or "dhow_local" in p or p == "shared/cli.py"
    ] == []
