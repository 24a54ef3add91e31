"""Run the Pulumi program the way Pulumi's Python language host runs it, under mocks.

``pulumi up`` does not import ``infra``: the engine resolves Pulumi.yaml's ``main: infra/``
to a working directory (``infra/``) and an entry point (``.``)
(pulumi/pulumi ``pkg/engine/project.go`` ``getPwdMain``), and the language host
(``sdk/python/cmd/pulumi-language-python/main.go`` ``Run``) starts the venv's python on
its exec shim (``sdk/python/cmd/pulumi-language-python-exec``) with ``--pwd infra/ .``
and the stack's configuration as JSON in ``PULUMI_CONFIG``. The shim then, in order:
imports ``pulumi``; loads ``PULUMI_CONFIG`` with ``set_all_config``; configures the
runtime; ``chdir``s to ``--pwd``; and calls ``runpy.run_path(".", run_name="__main__")``
inside ``run_in_stack``. So ``sys.path[0]`` is the shim's own directory, then runpy puts
``infra/`` first: the project root is never on ``sys.path``, and only what the installed
distribution provides can be imported.

This script does exactly that, except that ``set_mocks`` replaces the engine's monitor,
and it writes what the program registered and exported as JSON to ``argv[1]``:
``{"sys_path": [...], "resources": [{"type", "name", "inputs"}], "outputs": {...}}``.
Exit codes are the shim's: 0, 1 for a ``RunError``, 32 for an unhandled exception.

``DHOW_LAUNCH_LAYERS_DIR`` points the AWS stack at a directory of layer zips instead of
``make layers``'s output (the only seam: tests must not need a real layer build).
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import os
import runpy
import sys
import traceback
from pathlib import Path
from typing import Any

# The shim's sys.path[0] is its own directory (Pulumi's bin dir, no Python modules). Ours
# is tests/infra/: drop it so that nothing of the repository is importable by accident.
_HERE = str(Path(__file__).resolve().parent)
sys.path[:] = [p for p in sys.path if p and str(Path(p).resolve()) != _HERE]

import pulumi  # noqa: E402 - the shim imports the SDK before anything else
import pulumi.runtime  # noqa: E402
from pulumi.runtime import settings as pulumi_settings  # noqa: E402

EXIT_RUN_ERROR = 1
EXIT_UNHANDLED = 32  # the shim's PYTHON_PROCESS_EXITED_AFTER_SHOWING_USER_ACTIONABLE_MESSAGE


def _load_mocks() -> Any:
    """The recording mocks of tests/infra/harness.py, loaded by path (``tests`` is not a
    package of the distribution, and the project root is off ``sys.path``)."""
    spec = importlib.util.spec_from_file_location("_dhow_harness", Path(_HERE) / "harness.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while decorating
    spec.loader.exec_module(module)
    return module.RecordingMocks


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def main(out_path: str, pwd: str, stack: str) -> int:
    # 1. config, as the shim loads it (PULUMI_CONFIG, PULUMI_CONFIG_SECRET_KEYS).
    pulumi.runtime.set_all_config(
        pulumi.runtime.get_config_env(), pulumi.runtime.get_config_secret_keys_env()
    )
    config = pulumi.runtime.get_config_env()
    cloud = config.get("dhow:cloud", "aws")
    region = config.get("dhow:region", "me-central-1")
    location = config.get("dhow:location", "uaenorth")
    mocks = _load_mocks()(region if cloud == "aws" else location)

    # 2. the runtime: mocks instead of the engine's monitor. set_mocks registers a root
    # stack of its own; the shim's run_in_stack creates the root, so drop that one.
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    pulumi.runtime.set_mocks(mocks, project="dhow", stack=stack, preview=False)
    pulumi_settings.set_root_resource(None)  # type: ignore[arg-type]

    seen_path: list[str] = []
    layers_dir = os.environ.get("DHOW_LAUNCH_LAYERS_DIR")
    _observe_load(seen_path, Path(layers_dir) if layers_dir else None)

    # 3. chdir and run the entry point, as the shim does.
    sys.argv = ["."]
    os.chdir(pwd)
    exported: dict[str, Any] = {}

    def run() -> None:
        runpy.run_path(".", run_name="__main__")
        root = pulumi_settings.get_root_resource()
        outputs = getattr(root, "outputs", {})
        pulumi.Output.from_input(outputs).apply(exported.update)

    code = 0
    try:
        loop.run_until_complete(pulumi.runtime.run_in_stack(run))
    except pulumi.RunError as exc:
        print(f"error: {exc}", file=sys.stderr)
        code = EXIT_RUN_ERROR
    except Exception:
        print("Program failed with an unhandled exception:", file=sys.stderr)
        traceback.print_exc()
        code = EXIT_UNHANDLED
    finally:
        loop.close()
    report = {
        "sys_path": seen_path,
        "resources": [
            {"type": r.typ, "name": r.name, "inputs": _plain(r.inputs)} for r in mocks.resources
        ],
        "outputs": _plain(exported),
    }
    Path(out_path).write_text(json.dumps(report))
    return code


def _observe_load(seen_path: list[str], layers_dir: Path | None) -> None:
    """Wrap ``infra.config.load``, which the program calls once, first thing
    (infra/__main__.py): note the ``sys.path`` the program runs with (runpy restores it
    afterwards) and, if given, set ``layers_dir``."""
    from infra import config

    load = config.load

    def observed_load() -> Any:
        # Absolute, as the program's cwd resolves them: runpy puts "." (infra/) first.
        seen_path.extend(os.path.abspath(p) for p in sys.path if p)
        cfg = load()
        return cfg if layers_dir is None else dataclasses.replace(cfg, layers_dir=layers_dir)

    config.load = observed_load  # type: ignore[assignment]


if __name__ == "__main__":
    sys.exit(main(out_path=sys.argv[1], pwd=sys.argv[2], stack=sys.argv[3]))
