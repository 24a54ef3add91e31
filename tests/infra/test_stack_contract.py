"""Check 4 of issue 14: the stack and the runtime share one typed contract.

Every function's ``Settings`` is built from exactly the environment the mocked stack
gives it, through the same ``Settings.from_env`` the handler calls at import: a variable
the function reads and is not given, one it is given and never reads, or one that does
not arrive as the stack wrote it, fails here with the function's and variable's names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.config import StackConfig
from shared import constants as c
from shared.adapters.codedeploy import serve_function_name
from shared.identifiers import family_head
from shared.settings import Settings
from shared.stack_contract import (
    ALL,
    CONTRACT,
    StackContractError,
    environment,
    settings_for,
)
from shared.topology import build_topology
from tests.infra.harness import Program, run

ROOT = Path(__file__).resolve().parents[2]


class ReadRecorder(Mapping[str, str]):
    """The environment as ``Settings.from_env`` sees it, noting every name it looks up."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self._env, self.read = dict(env), set[str]()

    def __getitem__(self, key: str) -> str:
        self.read.add(key)
        return self._env[key]

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return self._env.get(key, default)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str):
            self.read.add(key)
        return key in self._env

    def __iter__(self) -> Iterator[str]:
        return iter(self._env)

    def __len__(self) -> int:
        return len(self._env)


def _as_env(value: object) -> str:
    """How a Settings field reads back as the variable that set it."""
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


def _logical(deployed: str, stage: str) -> str:
    topo = build_topology(stage)
    # Serve is deployed once per dataset as dhow-<stage>--serve-<dataset>.
    exact = {f.name: f.logical for f in topo.functions}
    if deployed in exact:
        return exact[deployed]
    assert deployed.startswith(serve_function_name(family_head(stage), "")), deployed
    return "serve"


def test_the_contract_names_real_variables_fields_and_functions() -> None:
    constants = {v for k, v in vars(c).items() if k.isupper() and isinstance(v, str)}
    fields = {f.name for f in dataclasses.fields(Settings)}
    assert {f.logical for f in build_topology("uae-prod").functions} == ALL
    for s in CONTRACT:
        assert s.env in constants, s
        assert s.field in fields, s
        assert s.functions <= ALL, s
    assert len({s.env for s in CONTRACT}) == len(CONTRACT)


@pytest.fixture(scope="module")
def aws_as_deployed(aws_cfg: StackConfig) -> Program:
    """The AWS stack with Pulumi.yaml's defaults, as `pulumi up` configures it (the shared
    fixture leaves the image URIs empty)."""
    project = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["config"]
    return run(
        dataclasses.replace(
            aws_cfg,
            training_image_uri=project["trainingImageUri"]["default"],
            inference_image_uri=project["inferenceImageUri"]["default"],
        )
    )


def test_every_aws_function_builds_its_settings_from_exactly_its_stack_env(
    aws_as_deployed: Program,
) -> None:
    functions = aws_as_deployed.of_type("aws:lambda/function:Function")
    assert functions
    for r in functions:
        name = r.inputs["name"]
        logical = _logical(name, "uae-prod")
        env: dict[str, str] = r.inputs["environment"]["variables"]
        wanted = {s.env for s in settings_for("aws", logical)}
        assert sorted(set(wanted) - set(env)) == [], f"{name}: the stack does not set these"
        assert sorted(set(env) - set(wanted)) == [], f"{name}: the stack sets these unread"
        seen = ReadRecorder(env)
        settings = Settings.from_env(seen)
        assert sorted(set(env) - seen.read) == [], f"{name}: Settings.from_env never reads"
        for s in settings_for("aws", logical):
            assert env[s.env] != "", f"{name}: {s.env} is set empty, which reads as unset"
            assert _as_env(getattr(settings, s.field)) == env[s.env], f"{name}: {s.env}"


def test_a_setting_no_function_reads_stops_the_program() -> None:
    offered = {s.env: "x" for s in CONTRACT if "aws" in s.clouds}
    assert set(environment("aws", "ingest", offered)) == {c.CLOUD, c.STAGE, c.AWS_ACCOUNT_ID}
    with pytest.raises(StackContractError) as info:
        environment("aws", "ingest", {**offered, "DHOW_NOT_A_SETTING": "x"})
    assert "DHOW_NOT_A_SETTING" in str(info.value)
    assert info.value.reason == "stack_contract_violated"


def test_a_setting_a_function_reads_and_the_stack_omits_stops_the_program() -> None:
    offered = {s.env: "x" for s in CONTRACT if "aws" in s.clouds and s.env != c.KMS_KEY_ID}
    with pytest.raises(StackContractError) as info:
        environment("aws", "validate", offered)
    assert c.KMS_KEY_ID in str(info.value)
    assert "validate" in str(info.value)
