"""The Azure ML workspace's container registry under Pulumi's mocks: the registry Azure ML
builds the validate, train and serve environments' images in, created by the stack (not
lazily by whoever asks first) without its admin user, and the identities' roles on it."""

from __future__ import annotations

from infra.azure.names import account_name
from infra.policy.rules import violations
from shared.cloud_facts import value
from tests.infra.harness import SUBSCRIPTION, Program

REGISTRY = "azure-native:containerregistry:Registry"
ASSIGNMENT = "azure-native:authorization:RoleAssignment"


def test_workspace_names_its_own_registry_without_admin_user(azure_program: Program) -> None:
    rule = value("azure.ml.workspace_registry")
    (registry,) = azure_program.of_type(REGISTRY)
    assert registry.inputs["location"] == "uaenorth"
    assert registry.inputs["registryName"] == account_name("uae-prod", "acr", SUBSCRIPTION)
    assert registry.inputs["sku"] == {"name": rule["sku"]} == {"name": "Standard"}
    assert registry.inputs["adminUserEnabled"] is rule["admin_user_enabled"] is False
    assert registry.inputs["anonymousPullEnabled"] is False
    (workspace,) = azure_program.of_type("azure-native:machinelearningservices:Workspace")
    assert workspace.inputs["containerRegistry"] == (
        f"/subscriptions/{SUBSCRIPTION}/resourceGroups/rg/providers/{REGISTRY}/"
        f"{registry.inputs['registryName']}"
    )
    # The clusters' automatic AcrPull needs the registry to exist before them.
    order = [r.typ for r in azure_program.resources]
    first_compute = order.index("azure-native:machinelearningservices:Compute")
    assert order.index(REGISTRY) < order.index(workspace.typ) < first_compute


def test_identities_roles_on_the_registry(azure_program: Program) -> None:
    roles = value("azure.ml.registry_identity_roles")
    ids = roles["role_ids"]
    (registry,) = azure_program.of_type(REGISTRY)
    name = registry.inputs["registryName"]
    on_registry = [
        a for a in azure_program.of_type(ASSIGNMENT) if a.inputs["scope"].endswith(f"/{name}")
    ]
    held = {(a.inputs["principalId"], a.inputs["roleDefinitionId"][-36:]) for a in on_registry}
    # The workspace's identity builds and pushes; nobody else is granted here: the
    # clusters' and endpoints' AcrPull is Azure ML's automatic assignment, which a second
    # identical one would collide with.
    assert held == {("workspace-principal", ids[roles["workspace"]])}
    assert ids[roles["workspace"]] == ids["AcrPush"]
    assert roles["cluster"] == roles["online_endpoint"] == "automatic"
    for a in on_registry:
        assert a.inputs["principalType"] == "ServicePrincipal"
    # Contributor, as Microsoft lists it for the workspace, is what the pack refuses.
    assert roles["workspace_documented"] == "Contributor"
    assert not [
        v
        for r in azure_program.policy_view()
        if r.typ in (REGISTRY, ASSIGNMENT)
        for v in violations([r])
    ]
