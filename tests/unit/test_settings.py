"""UAE region pinning: refusals and passes."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.adapters.aws import aws_client
from shared.clouds import kit_for
from shared.errors import ConfigError, RegionNotAllowed
from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("region", ["us-east-1", "eu-west-1", "me-south-1", "il-central-1", ""])
def test_aws_region_outside_uae_is_refused_naming_the_allowed_one(region: str) -> None:
    env = {"AWS_REGION": region} if region else {"AWS_DEFAULT_REGION": "us-east-1"}
    with pytest.raises(RegionNotAllowed) as info:
        Settings.from_env(env)
    assert "me-central-1" in str(info.value)
    assert info.value.reason == "region_not_allowed"


def test_stray_default_region_is_refused_even_when_aws_region_is_right() -> None:
    with pytest.raises(RegionNotAllowed):
        Settings.from_env({"AWS_REGION": "me-central-1", "AWS_DEFAULT_REGION": "us-east-1"})


@pytest.mark.parametrize("location", ["westeurope", "eastus", "qatarcentral"])
def test_azure_location_outside_uae_is_refused(location: str) -> None:
    with pytest.raises(RegionNotAllowed) as info:
        Settings.from_env({"DHOW_CLOUD": "azure", "DHOW_AZURE_LOCATION": location})
    assert "uaenorth" in str(info.value)
    assert "uaecentral" in str(info.value)


@pytest.mark.parametrize("location", ["uaenorth", "uaecentral", "UAE North"])
def test_uae_azure_locations_pass_and_are_normalised(location: str) -> None:
    s = Settings.from_env({"DHOW_CLOUD": "azure", "DHOW_AZURE_LOCATION": location})
    assert s.azure_location in ("uaenorth", "uaecentral")


def test_me_central_1_passes_and_defaults() -> None:
    assert Settings.from_env({"AWS_REGION": "me-central-1"}).aws_region == "me-central-1"
    assert Settings.from_env({}).aws_region == "me-central-1"


def test_explicit_argument_is_still_checked() -> None:
    with pytest.raises(RegionNotAllowed):
        Settings(aws_region="us-west-2")


@pytest.mark.parametrize(
    "env",
    [
        {"DHOW_CLOUD": "gcp"},
        {"DHOW_STAGE": "Prod_1"},
        {"DHOW_MAX_UPLOAD_BYTES": "lots"},
        {"DHOW_MAX_UPLOAD_BYTES": "0"},
        {"DHOW_AWS_ACCOUNT_ID": "1234-5678"},
    ],
)
def test_malformed_settings_say_what_to_set(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    assert info.value.hint


def test_clients_are_created_in_the_pinned_region_only() -> None:
    client = aws_client("s3", Settings())
    assert client.meta.region_name == "me-central-1"


def test_handler_refuses_to_start_outside_the_uae() -> None:
    """The process stops at import, before any client exists."""
    env = {**os.environ, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1"}
    r = subprocess.run(
        [sys.executable, "-c", "import functions.ingest.aws_lambda"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert r.returncode != 0
    assert "RegionNotAllowed" in r.stderr
    assert "me-central-1" in r.stderr


def _calls_outside_factory() -> list[str]:
    found = []
    for path in [
        *ROOT.glob("shared/**/*.py"),
        *ROOT.glob("functions/**/*.py"),
        *ROOT.glob("localstack/dhow_local/*.py"),
        *ROOT.glob("localstack/dhow_cli/*.py"),
    ]:
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("client", "resource", "Session")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id in ("boto3", "session")
            ):
                found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_only_the_region_pinned_factory_creates_boto3_clients() -> None:
    assert _calls_outside_factory() == ["shared/adapters/aws.py:" + _factory_line()]


def _factory_line() -> str:
    src = (ROOT / "shared/adapters/aws.py").read_text().splitlines()
    return str(next(i for i, line in enumerate(src, 1) if "boto3.client(" in line))


def test_local_settings_keep_everything_but_the_endpoints() -> None:
    from dhow_local import platform as pf
    from dhow_local.control import local_settings

    base = Settings.from_env(
        {"DHOW_STAGE": "mine", "DHOW_SPECS_DIR": "/srv/specs", "DHOW_VALIDATE_CHUNK_ROWS": "5000"}
    )
    local = local_settings("aws", base)
    assert (local.stage, local.specs_dir, local.validate_chunk_rows) == ("mine", "/srv/specs", 5000)
    assert local.aws_endpoint_url == pf.LOCALSTACK_URL
    assert kit_for(local).training_backend == "local"
    assert Settings.from_env(local.to_env()) == local  # what the runner rebuilds


def test_the_cli_asks_sts_who_you_are_in_the_region_not_at_the_global_endpoint(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """dhow's manual actions record the caller from STS GetCallerIdentity: the request
    goes to me-central-1's regional endpoint, as every other call does, not to the
    global sts.amazonaws.com (us-east-1)."""
    from shared.adapters.aws import aws_client
    from shared.settings import Settings

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    sts = aws_client("sts", Settings())
    assert sts.meta.endpoint_url == "https://sts.me-central-1.amazonaws.com"


def test_no_setting_names_a_backend_the_kit_decides() -> None:
    """DHOW_KIT (or the cloud's own kit) picks the launcher and the deployer; the stack
    wrote DHOW_TRAINING_BACKEND / DHOW_SERVING_BACKEND that nothing read any more."""
    import dataclasses

    from shared.stack_contract import CONTRACT

    assert [f.name for f in dataclasses.fields(Settings) if f.name.endswith("_backend")] == []
    assert [s.env for s in CONTRACT if "BACKEND" in s.env] == []
    assert kit_for(Settings(cloud="azure")).training_backend == "azureml"
    assert kit_for(Settings()).training_backend == "sagemaker"
