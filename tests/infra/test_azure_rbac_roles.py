"""The role assignments of the Azure program, read against the documented built-in roles
(shared/cloud_facts/azure-rbac.yaml): every data role the stack assigns is a real
built-in role, and the documented matching this check relies on behaves as documented.
The calls themselves are judged in tests/integration/test_azure_rbac_measured.py."""

from __future__ import annotations

from infra.azure import roles
from infra.config import StackConfig
from shared.cloud_facts import value
from tests.infra.harness import Program
from tests.infra.rbac_check import Need, assignments, granted_by, role_grants

_DATA_KINDS = {"container", "queue", "table", "topic", "account"}


def test_every_data_role_the_stack_assigns_is_a_documented_built_in_role(
    azure_program: Program, azure_cfg: StackConfig
) -> None:
    """A role definition id that is not the built-in role's is refused by Azure at
    `pulumi up` (RoleDefinitionDoesNotExist): Storage Table Data Contributor's id once
    ended in ...be3a instead of ...aaa3."""
    documented = value("azure.rbac.builtin_role_data_actions")
    held = assignments(azure_program, azure_cfg.topology)
    assert held
    unknown = sorted(
        {(a.role, a.kind) for a in held if a.kind in _DATA_KINDS}
        - {(r, k) for r in documented for k in _DATA_KINDS}
    )
    assert unknown == [], f"data roles assigned that no built-in role has: {unknown}"
    assert documented[roles.TABLE_CONTRIBUTOR]["name"] == "Storage Table Data Contributor"


def test_the_documented_matching_grants_what_each_role_lists_and_nothing_else() -> None:
    blob = "Microsoft.Storage/storageAccounts/blobServices/containers/blobs"
    queue = "Microsoft.Storage/storageAccounts/queueServices/queues/messages"
    assert role_grants(roles.BLOB_OWNER, f"{blob}/tags/write")  # "blobs/*"
    assert role_grants(roles.BLOB_READER, f"{blob}/read")
    assert not role_grants(roles.BLOB_READER, f"{blob}/write")
    assert role_grants(roles.QUEUE_SENDER, f"{queue}/add/action")
    assert not role_grants(roles.QUEUE_SENDER, f"{queue}/write")
    assert not role_grants("00000000-0000-0000-0000-000000000000", f"{blob}/read")


def test_a_call_is_let_through_only_on_its_own_resource(
    azure_program: Program, azure_cfg: StackConfig
) -> None:
    ops = value("azure.rbac.storage_operation_actions")["operations"]
    held = [
        a for a in assignments(azure_program, azure_cfg.topology) if a.principal == "app-principal"
    ]
    put = tuple(tuple(x) for x in ops["Put Blob"])
    get = tuple(tuple(x) for x in ops["Get Blob"])
    # The app writes curated files, reads raw uploads, and never writes raw.
    assert granted_by(Need(put, "container", "curated"), held)
    assert granted_by(Need(get, "container", "raw"), held)
    assert not granted_by(Need(put, "container", "raw"), held)
    # Get Messages: the trigger's Message Processor on its own queue, not on another's.
    receive = tuple(tuple(x) for x in ops["Get Messages"])
    assert granted_by(Need(receive, "queue", "ingest"), held)
    assert not granted_by(Need(receive, "queue", "ingest-poison"), held)
    upsert = tuple(tuple(x) for x in ops["Insert Or Replace Entity"])
    assert granted_by(Need(upsert, "table", "lineage"), held)
