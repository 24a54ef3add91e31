"""Names of the Azure resources whose names are unique across Azure (storage accounts,
registries, vaults, ML workspaces): each service's own rule of characters and length
(shared/cloud_facts/azure*.yaml), with a digest where the stage has to be shortened."""

from __future__ import annotations

import re

from shared.cloud_facts import value
from shared.identifiers import name_digest

# Where the stage's name can be shortened, a digest of the stage and the subscription
# keeps globally unique names apart: two stages that shorten alike, or one stage in two
# subscriptions (storage account and vault names are unique across Azure).
_DIGEST_CHARS = 6


def _digest(stage: str, subscription: str) -> str:
    return name_digest(f"{subscription}/{stage}", _DIGEST_CHARS)


def _short(stage: str, room: int) -> str:
    return re.sub(r"[^a-z0-9]", "", stage)[:room]


def account_name(stage: str, role: str, subscription: str) -> str:
    """``dhow<stage><digest><role>``: the role is never cut off, so the data, host and ml
    accounts of a stage always differ (azure.storage.account_name)."""
    limit = value("azure.storage.account_name")["max"]
    room = limit - len("dhow") - _DIGEST_CHARS - len(role)
    return f"dhow{_short(stage, room)}{_digest(stage, subscription)}{role}"


def vault_name(stage: str, subscription: str) -> str:
    """``dhow<stage><digest>kv``: letters and digits only, so it starts with a letter and
    has no trailing or doubled hyphen (azure.keyvault.vault_name)."""
    limit = value("azure.keyvault.vault_name")["max"]
    room = limit - len("dhow") - _DIGEST_CHARS - len("kv")
    return f"dhow{_short(stage, room)}{_digest(stage, subscription)}kv"


def ml_workspace_name(stage: str, subscription: str) -> str:
    """``dhow-<stage>-<digest>-ml``: within the workspace's 33 characters of letters,
    digits and hyphens (azure.ml.workspace_name), the digest kept whole however long the
    stage. A destroyed workspace holds its name for 14 days (soft delete), so the same
    name in another subscription or for a stage that shortens alike must differ."""
    rule = value("azure.ml.workspace_name")
    room = rule["max"] - len("dhow--") - _DIGEST_CHARS - len("-ml")
    return f"dhow-{_short(stage, room)}-{_digest(stage, subscription)}-ml"
