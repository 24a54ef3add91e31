"""Azure names the stack generates: within Azure's rules for short and long stages,
distinct where Azure needs them distinct (globally, or in the tenant), and reusable
after a destroy."""

from __future__ import annotations

import dataclasses
import re
import uuid

import pytest

from infra.azure.names import account_name, ml_workspace_name, vault_name
from infra.config import StackConfig
from shared.cloud_facts import value
from tests.infra.harness import SUBSCRIPTION, Program, run

OTHER_SUBSCRIPTION = "99999999-9999-9999-9999-999999999999"
# The shortest and longest stages settings accept (STAGE_RE), and ones that shorten alike.
STAGES = (
    "ab",
    "uae-prod",
    "a-b",
    "abcdefghijklmnopqrstu",
    "abcdefghijklmnopqrstv",
    "a-b-c-d-e-f-g-h-i-j-k",
)
ROLES = ("data", "host", "ml")


@pytest.mark.parametrize("stage", STAGES)
def test_storage_account_names_keep_azures_rule(stage: str) -> None:
    rule = value("azure.storage.account_name")
    for role in ROLES:
        name = account_name(stage, role, SUBSCRIPTION)
        assert re.fullmatch(rule["pattern"], name), name
        assert rule["min"] <= len(name) <= rule["max"], name
        assert name.endswith(role), name


def test_storage_account_names_never_collide() -> None:
    """Globally unique names: the three accounts of a stage, stages that shorten alike,
    and one stage in two subscriptions all get their own."""
    names = [
        account_name(s, r, sub)
        for s in STAGES
        for r in ROLES
        for sub in (SUBSCRIPTION, OTHER_SUBSCRIPTION)
    ]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize("stage", STAGES)
def test_vault_names_keep_azures_rule(stage: str) -> None:
    rule = value("azure.keyvault.vault_name")
    name = vault_name(stage, SUBSCRIPTION)
    assert re.fullmatch(rule["pattern"], name), name
    assert rule["min"] <= len(name) <= rule["max"], name
    assert "--" not in name
    assert name[-1].isalnum()


def test_vault_names_never_collide() -> None:
    names = [vault_name(s, sub) for s in STAGES for sub in (SUBSCRIPTION, OTHER_SUBSCRIPTION)]
    assert len(set(names)) == len(names)


def test_the_vault_can_be_recreated_after_the_shortest_retention(azure_program: Program) -> None:
    """A destroyed vault holds its name while soft-deleted: the stack asks for the
    shortest retention Azure allows, so a destroy and recreate waits days, not 90."""
    (vault,) = azure_program.of_type("azure-native:keyvault:Vault")
    props = vault.inputs["properties"]
    rule = value("azure.keyvault.soft_delete_retention")
    assert props["softDeleteRetentionInDays"] == rule["min_days"]
    assert props["enablePurgeProtection"] is True
    assert vault.inputs["vaultName"] == vault_name("uae-prod", SUBSCRIPTION)


def _assignment_names(program: Program) -> list[str]:
    return [
        r.inputs["roleAssignmentName"]
        for r in program.of_type("azure-native:authorization:RoleAssignment")
    ]


def test_role_assignment_names_are_unique_guids_in_the_tenant(
    azure_program: Program, azure_cfg: StackConfig
) -> None:
    """The same stage in two subscriptions of one tenant: no assignment name is shared
    (the name is unique tenant-wide), and each is a GUID."""
    assert value("azure.authorization.role_assignment_name")["format"] == "guid"
    here = _assignment_names(azure_program)
    there = _assignment_names(run(azure_cfg, subscription=OTHER_SUBSCRIPTION))
    for name in here:
        assert str(uuid.UUID(name)) == name
    assert len(set(here)) == len(here)
    assert not set(here) & set(there)


def test_a_long_stage_builds_a_stack_with_three_accounts(azure_cfg: StackConfig) -> None:
    program = run(dataclasses.replace(azure_cfg, stage="abcdefghijklmnopqrstu"))
    accounts = {
        a.inputs["accountName"] for a in program.of_type("azure-native:storage:StorageAccount")
    }
    assert len(accounts) == 3


@pytest.mark.parametrize("stage", STAGES)
def test_workspace_names_keep_azures_rule(stage: str) -> None:
    rule = value("azure.ml.workspace_name")
    name = ml_workspace_name(stage, SUBSCRIPTION)
    assert re.fullmatch(rule["pattern"], name), name
    assert rule["min"] <= len(name) <= rule["max"], name
    assert "--" not in name


def test_the_workspace_name_is_not_one_a_soft_deleted_workspace_can_hold(
    azure_program: Program, azure_cfg: StackConfig
) -> None:
    """A deleted workspace keeps its name for 14 days (azure.ml.workspace_name): the
    stage's name alone would be taken by any same-named stage's workspace deleted in
    that time; the subscription and stage digest keeps them apart."""
    assert value("azure.ml.workspace_name")["soft_delete_days"] == 14
    (workspace,) = azure_program.of_type("azure-native:machinelearningservices:Workspace")
    name = workspace.inputs["workspaceName"]
    assert name == ml_workspace_name(azure_cfg.stage, SUBSCRIPTION)
    other = run(azure_cfg, subscription=OTHER_SUBSCRIPTION)
    (there,) = other.of_type("azure-native:machinelearningservices:Workspace")
    assert there.inputs["workspaceName"] != name
    names = {
        ml_workspace_name(s, sub) for s in STAGES for sub in (SUBSCRIPTION, OTHER_SUBSCRIPTION)
    }
    assert len(names) == 2 * len(STAGES)
