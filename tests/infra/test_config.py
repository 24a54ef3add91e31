"""A misconfigured stack is refused before anything is created, with the fix to run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from infra.config import StackConfig, StackConfigError, check


def _check(**overrides: str) -> StackConfig:
    args = {
        "cloud": "aws",
        "stage": "uae-prod",
        "region": "me-central-1",
        "location": "uaenorth",
        "specs_dir": "shared/specs",
        **overrides,
    }
    return check(**args)


def test_the_example_values_pass() -> None:
    cfg = _check(location="UAE Central")
    assert cfg.region == "me-central-1"
    assert cfg.location == "uaecentral"
    assert [s.name for s in cfg.specs] == ["customers"]


@pytest.mark.parametrize(
    ("overrides", "says"),
    [
        ({"region": "eu-west-1"}, "pulumi config set dhow:region me-central-1"),
        ({"region": "me-south-1"}, "only in me-central-1"),  # Bahrain is not the UAE
        ({"location": "westeurope"}, "pulumi config set dhow:location uaenorth"),
        ({"cloud": "gcp"}, "aws or azure"),
        ({"stage": "Prod_1"}, "a-z 0-9"),
        ({"arch": "ppc64"}, "x86_64 or arm64"),
    ],
)
def test_refused_with_the_fix(overrides: dict[str, str], says: str) -> None:
    with pytest.raises(StackConfigError, match=says.replace(".", r"\.")):
        _check(**overrides)


def test_a_stack_without_specs_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StackConfigError, match="no dataset specs"):
        _check(specs_dir=str(tmp_path))


@pytest.fixture
def pulumi_config() -> Iterator[ModuleType]:
    from pulumi.runtime import config

    saved = config.CONFIG.get()
    yield config
    config.CONFIG.set(saved)


def test_load_reads_the_stack_config(pulumi_config: ModuleType) -> None:
    from infra.config import load

    pulumi_config.set_all_config(
        {
            "dhow:stage": "acme-prod",
            "dhow:location": "uaecentral",
            "dhow:alertEmails": '["oncall@acme.ae"]',
            "dhow:logRetentionDays": "30",
        }
    )
    cfg = load()
    assert (cfg.cloud, cfg.stage, cfg.region, cfg.location) == (
        "aws",
        "acme-prod",
        "me-central-1",
        "uaecentral",
    )
    assert cfg.alert_emails == ("oncall@acme.ae",)
    assert cfg.log_retention_days == 30
    pulumi_config.set_all_config({"dhow:stage": "acme-prod", "dhow:region": "us-east-1"})
    with pytest.raises(StackConfigError, match="dhow:region me-central-1"):
        load()
