"""The infra program's structure: one ``*Args`` dataclass per component, a registry of
cloud stacks instead of a cloud branch, and no import from layers/ back into infra/."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import pkgutil
from pathlib import Path

import pulumi
import pytest

import infra
from infra.registry import STACKS, stack_for

ROOT = Path(__file__).resolve().parents[2]


def _components() -> list[type[pulumi.ComponentResource]]:
    found = []
    for info in pkgutil.walk_packages(infra.__path__, "infra."):
        if info.name in ("infra.__main__", "infra.policy.__main__"):
            continue  # the program itself and the pack's entry point run on import
        module = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, pulumi.ComponentResource) and obj.__module__ == info.name:
                found.append(obj)
    return found


def test_every_component_takes_one_args_dataclass() -> None:
    """``Component(name, args, opts)`` as Pulumi's examples have it (``VpcArgs`` with
    ``Vpc``): what a component needs is one typed value, not ten positional arguments."""
    components = _components()
    # Both clouds' components are found (seven AWS, seven Azure).
    assert {c.__module__.split(".")[1] for c in components} == {"aws", "azure"}
    assert len(components) >= 14
    for component in components:
        signature = inspect.signature(component.__init__)
        params = list(signature.parameters.values())
        assert [p.name for p in params] == ["self", "name", "args", "opts"], component
        hints = inspect.get_annotations(component.__init__, eval_str=True)
        args_type = hints["args"]
        assert dataclasses.is_dataclass(args_type), component
        assert args_type.__name__ == f"{component.__name__}Args", component
        assert params[3].default is None  # opts stays optional, as in Pulumi's own


def _cloud_branches(path: Path) -> list[int]:
    """Lines that compare something's ``cloud`` (``cfg.cloud == "aws"``) or test it."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Compare):
            names = [node.left, *node.comparators]
            if any(isinstance(n, ast.Attribute) and n.attr == "cloud" for n in names):
                lines.append(node.lineno)
    return lines


@pytest.mark.parametrize("module", ["infra/__main__.py", "infra/mocked.py"])
def test_the_program_does_not_branch_on_the_cloud(module: str) -> None:
    """``__main__`` (and the mocked run the tests and the compliance report use) take the
    cloud's stack from the registry: a new cloud is a package and a line in STACKS."""
    assert _cloud_branches(ROOT / module) == []
    assert "stack_for" in (ROOT / module).read_text()


def test_the_registry_holds_each_cloud_s_stack() -> None:
    for cloud in STACKS:
        stack = stack_for(cloud)
        assert stack.__name__ == f"infra.{cloud}.stack"  # type: ignore[attr-defined]
        assert callable(stack.build)
        assert callable(stack.preflight)
    from infra.config import StackConfigError

    with pytest.raises(StackConfigError, match="aws, azure"):
        stack_for("gcp")


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


def test_layers_never_import_infra() -> None:
    """layers/ owns what goes into a package (``layers.catalogue.code_files``); the
    Pulumi program reads it from there. layers/build.py once imported infra's bundle,
    and infra imported layers/: a cycle that made each need the other to load."""
    for path in sorted((ROOT / "layers").glob("*.py")):
        assert not {m for m in _imports(path) if m == "infra" or m.startswith("infra.")}, path
    from infra import code_bundle
    from layers import catalogue

    assert code_bundle.code_files is catalogue.code_files


def _stage_prefixes_built(path: Path) -> list[int]:
    """Lines of f-strings that spell a stage's prefix themselves: ``f"dhow-{...stage...}"``."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.JoinedStr):
            continue
        for before, value in zip(node.values, node.values[1:], strict=False):
            if (
                isinstance(before, ast.Constant)
                and str(before.value).endswith("dhow-")
                and isinstance(value, ast.FormattedValue)
                and "stage" in ast.unparse(value.value)
            ):
                lines.append(node.lineno)
    return lines


def test_stage_names_are_built_in_one_place() -> None:
    """``dhow-<stage>-...`` comes from shared.identifiers (stage_prefix, stage_name), which
    the topology and StackConfig.name use: a ninth spelling would drift from the rest.
    The functions, the services, the local platform and the CLI name the stack's
    resources too (an endpoint, the local workspace, a role a schedule assumes)."""
    dirs = ("infra", "shared", "functions", "localstack/dhow_local", "localstack/dhow_cli")
    paths = sorted(p for d in dirs for p in (ROOT / d).rglob("*.py"))
    # Azure's globally unique names shorten the stage under each service's own rule;
    # identifiers is the one place that builds the rest.
    paths.remove(ROOT / "infra" / "azure" / "names.py")
    paths.remove(ROOT / "shared" / "identifiers.py")
    built = {str(p.relative_to(ROOT)): _stage_prefixes_built(p) for p in paths}
    assert {p: lines for p, lines in built.items() if lines} == {}
    from infra.config import check
    from shared.identifiers import stage_name
    from shared.topology import build_topology

    cfg = check(stage="acme", specs_dir="shared/specs")
    assert cfg.name("async-failures") == stage_name("acme", "async-failures")
    assert build_topology("acme").bucket("raw").name == stage_name("acme", "raw")


def test_the_validation_jobs_grant_is_the_layouts_prefix() -> None:
    """The one key prefix a managed validation job may write (shared.layout) is what IAM
    grants: a second spelling in infra/aws/iam.py could drift from where the job writes."""
    from infra.aws import iam
    from shared.layout import VALIDATION_JOBS_PREFIX
    from shared.topology import build_topology

    assert VALIDATION_JOBS_PREFIX not in (ROOT / "infra" / "aws" / "iam.py").read_text()
    scope = iam.AwsScope("me-central-1", "123456789012", "acme")
    policy = iam.sagemaker_role_policy(build_topology("acme"), scope, key_arn="arn:k")
    (grant,) = [s for s in policy["Statement"] if s["Sid"] == "WriteValidationResults"]
    assert grant["Resource"] == [f"arn:aws:s3:::dhow-acme-staging/{VALIDATION_JOBS_PREFIX}*"]
