"""Role assignments as Pulumi resources: each grant of infra/azure/roles.py becomes one
``RoleAssignment`` named by a GUID derived from its scope, role and principal."""

from __future__ import annotations

import uuid
from typing import Any

import pulumi
import pulumi_azure_native as az

from infra.azure.roles import BLOB_CONTRIBUTOR, Grant, workspace_storage_roles


def role_id(subscription: str, role: str) -> str:
    return f"/subscriptions/{subscription}/providers/Microsoft.Authorization/roleDefinitions/{role}"


def assignment_name(scope: str, role: str, principal: str) -> str:
    """Role assignment names are GUIDs unique in the tenant: derived from the scope (which
    holds the subscription), the role and the principal, as ARM's guid() convention, the
    same grant always gets the same one and no two grants share one."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dhow/{scope}/{role}/{principal}"))


def assign(
    logical: str,
    subscription: pulumi.Input[str],
    principal: pulumi.Input[str],
    role: str,
    scope: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> az.authorization.RoleAssignment:
    return az.authorization.RoleAssignment(
        logical,
        role_assignment_name=pulumi.Output.all(scope, principal).apply(
            lambda a: assignment_name(str(a[0]), role, str(a[1]))
        ),
        principal_id=principal,
        principal_type="ServicePrincipal",
        role_definition_id=pulumi.Output.from_input(subscription).apply(lambda s: role_id(s, role)),
        scope=scope,
        opts=opts,
    )


def principal_of(identity: pulumi.Output[Any]) -> pulumi.Output[str]:
    return identity.apply(lambda i: (i or {}).get("principal_id") or "")


def ml_storage_assignments(
    kind: str,
    subscription: pulumi.Input[str],
    principal: pulumi.Input[str],
    account: pulumi.Input[str],
    opts: pulumi.ResourceOptions,
) -> list[az.authorization.RoleAssignment]:
    """``kind``'s roles on the workspace's own account, one resource per role (fact
    azure.ml.identity_storage_roles): named by the role, as two roles under one logical
    name would be a duplicate URN. The Blob Data Contributor assignment was named
    ``<kind>-ml-storage`` before, and the alias keeps an existing stack's resource (and
    the assignment in Azure) instead of deleting and recreating it."""
    out = []
    for role in workspace_storage_roles()[kind]:
        legacy = [pulumi.Alias(name=f"{kind}-ml-storage")] if role == BLOB_CONTRIBUTOR else []
        out.append(
            assign(
                f"{kind}-ml-storage-{role[:8]}",
                subscription,
                principal,
                role,
                account,
                pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(aliases=legacy)),
            )
        )
    return out


def grant_name(grant: Grant) -> str:
    return f"grant-{grant.scope_kind}-{grant.scope}-{grant.role[:8]}"
