"""Check 1 of issue 14: the program runs as Pulumi runs it.

Each stack file in infra/stacks/ is launched the way ``pulumi up`` launches it
(tests/infra/launch.py says how, with the Pulumi sources it follows): the venv's python,
from ``infra/``, the project root off ``sys.path``, the configuration in ``PULUMI_CONFIG``
exactly as the engine hands it over (Pulumi.yaml's defaults under the stack file's
values, every value a string, structured ones JSON-encoded). A module that only imports
because pytest puts the repository on ``sys.path`` fails here, as it fails at ``pulumi up``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.code_bundle import layer_path
from shared.topology import build_topology
from tests.infra.conftest import stack_config

ROOT = Path(__file__).resolve().parents[2]
LAUNCHER = Path(__file__).resolve().parent / "launch.py"
STACKS = sorted((ROOT / "infra" / "stacks").glob("Pulumi.*.yaml"))


def pulumi_config(stack_file: Path) -> dict[str, str]:
    """PULUMI_CONFIG as the engine builds it: the project's defaults (Pulumi.yaml
    ``config:``, namespaced by the project name) overlaid by the stack's values; the
    engine serialises each value to a string, objects and arrays as JSON."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())
    merged: dict[str, Any] = {
        f"{project['name']}:{key}": spec["default"]
        for key, spec in project["config"].items()
        if "default" in spec
    }
    merged.update(yaml.safe_load(stack_file.read_text())["config"])
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in merged.items()}


def launch(stack_file: Path, tmp_path: Path) -> tuple[subprocess.CompletedProcess[str], Any]:
    stack = stack_file.name.removeprefix("Pulumi.").removesuffix(".yaml")
    config = pulumi_config(stack_file)
    layers = tmp_path / "layers"
    layers.mkdir()
    cfg = stack_config(config["dhow:cloud"])
    for fn in build_topology(config["dhow:stage"]).functions:
        if fn.package == "zip":
            # A tiny stand-in for `make layers`'s output: the program only checks it exists
            # and hands its path to Pulumi as an archive.
            target = layers / layer_path(cfg, fn.logical).name
            with zipfile.ZipFile(target, "w") as zf:
                zf.writestr("python/README", "test layer")
    # ... and for `make azure-package`'s: the Azure program checks the package exists.
    (layers / "azure-app").mkdir()
    with zipfile.ZipFile(layers / "azure-app" / "released-package.zip", "w") as zf:
        zf.writestr("function_app.py", "# test package\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    env["PULUMI_CONFIG"] = json.dumps(config)
    env["PULUMI_CONFIG_SECRET_KEYS"] = "[]"
    env["DHOW_LAUNCH_LAYERS_DIR"] = str(layers)
    report_path = tmp_path / "report.json"
    # The venv's python, as the language host runs it (Pulumi.yaml: virtualenv .venv).
    python = ROOT / ".venv" / "bin" / "python"
    proc = subprocess.run(
        [
            str(python if python.exists() else sys.executable),
            str(LAUNCHER),
            str(report_path),
            str(ROOT / "infra"),
            stack,
        ],
        cwd=ROOT / "infra",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    report = json.loads(report_path.read_text()) if report_path.exists() else None
    return proc, report


def deployed_functions(config: dict[str, str]) -> set[str]:
    """Each queue-triggered function once, the serve function once per Lambda-served spec."""
    topo = build_topology(config["dhow:stage"])
    specs = stack_config(config["dhow:cloud"]).specs
    served = {s.name for s in specs if s.serving.target == "lambda"}
    from shared.adapters.codedeploy import serve_function_name
    from shared.identifiers import family_head

    # The serve function is deployed once per dataset under the stage's prefix family
    # (dhow-<stage>--serve-<dataset>), the name CodeDeploy and the alarms are matched by.
    serve = [f for f in topo.functions if f.trigger_queue is None]
    return {f.name for f in topo.functions if f.trigger_queue} | {
        serve_function_name(family_head(config["dhow:stage"]), name)
        for _ in serve
        for name in served
    }


@pytest.fixture(scope="module", params=STACKS, ids=lambda p: p.name)
def launched(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Any:
    stack_file: Path = request.param
    proc, report = launch(stack_file, tmp_path_factory.mktemp(stack_file.stem))
    assert proc.returncode == 0, (
        f"{stack_file.name}: the program does not run as `pulumi up` runs it "
        f"(exit {proc.returncode}):\n{proc.stderr[-4000:]}"
    )
    assert report is not None
    return stack_file, report


def test_both_stacks_are_launched() -> None:
    assert [p.name for p in STACKS] == ["Pulumi.aws-uae.yaml", "Pulumi.azure-uae.yaml"]


def test_the_project_root_is_off_sys_path(launched: Any) -> None:
    _, report = launched
    paths = {str(Path(p).resolve()) for p in report["sys_path"] if p}
    assert str(ROOT) not in paths
    assert str(ROOT / "infra") in paths  # runpy puts the program's directory first


def test_the_program_registers_the_stack_of_its_cloud(launched: Any) -> None:
    stack_file, report = launched
    config = pulumi_config(stack_file)
    types = [r["type"] for r in report["resources"]]
    if config["dhow:cloud"] == "aws":
        functions = [r for r in report["resources"] if r["type"] == "aws:lambda/function:Function"]
        assert {r["inputs"]["name"] for r in functions} == deployed_functions(config)
        providers = [r for r in report["resources"] if r["type"] == "pulumi:providers:aws"]
        assert [p["inputs"]["region"] for p in providers] == [config["dhow:region"]]
    else:
        assert "azure-native:web:WebApp" in types
        groups = [
            r for r in report["resources"] if r["type"] == "azure-native:resources:ResourceGroup"
        ]
        assert {g["inputs"]["location"] for g in groups} == {config["dhow:location"]}


def test_the_program_exports_its_outputs(launched: Any) -> None:
    stack_file, report = launched
    config = pulumi_config(stack_file)
    outputs = report["outputs"]
    if config["dhow:cloud"] == "aws":
        topo = build_topology(config["dhow:stage"])
        assert outputs["region"] == "me-central-1"
        assert set(outputs["functions"]) == deployed_functions(config)
        assert outputs["event_bus"] == topo.bus_name
        assert outputs["serve_urls"]
    else:
        assert outputs["location"] == config["dhow:location"]
        assert outputs["function_app"]
        assert outputs["pipeline_topic"]


def test_the_launch_fails_as_pulumi_would_without_the_layers(tmp_path: Path) -> None:
    """The seam that points the stack at test layers is the only difference from
    `pulumi up`: without it, the program's own check stops a stack with no layers."""
    stack_file = next(p for p in STACKS if p.name == "Pulumi.aws-uae.yaml")
    env_layers = tmp_path / "empty"
    env_layers.mkdir()
    config = pulumi_config(stack_file)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        PULUMI_CONFIG=json.dumps(config),
        PULUMI_CONFIG_SECRET_KEYS="[]",
        DHOW_LAUNCH_LAYERS_DIR=str(env_layers),
    )
    proc = subprocess.run(
        [sys.executable, str(LAUNCHER), str(tmp_path / "r.json"), str(ROOT / "infra"), "aws-uae"],
        cwd=ROOT / "infra",
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "make layers" in proc.stderr
